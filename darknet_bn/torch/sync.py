"""``SyncBatchNorm``: batch normalization synchronized over ``torch.distributed``, on CPU tensors.

PyTorch's ``torch.nn.SyncBatchNorm`` only runs on GPUs (its forward raises on CPU tensors, and
``DistributedDataParallel`` refuses it in a CPU model). :class:`SyncBatchNorm` has its constructor and
:meth:`~SyncBatchNorm.convert_sync_batchnorm`, and runs on CPU tensors over any initialized process
group (gloo; MPI where torch was built with it) -- inside ``DistributedDataParallel`` too. It is a
``torch.nn.modules.batchnorm._BatchNorm`` (code that looks for BN finds it) but not a
``torch.nn.SyncBatchNorm`` (which DDP rejects on CPU).

What crosses the process group, per training step (float64, rank order, so every rank gets the same
bits):

- forward: one ``all_gather`` of this rank's (count, mean, M2 = sum of squared deviations) per channel
  (``dbn_forward_moments``, C, double), merged locally in rank order with Chan's formula
  (``dbn_merge_moments``); the normalization and the running statistics (unbiased variance of the whole
  batch, PyTorch's momentum) use the merged values (``dbn_forward_apply``). Slices may differ in size;
  a slice may be empty.
- backward: one ``all_gather`` of (sum dy, sum dy*(x - mean)) per channel (padded to the forward's
  message size), summed in rank order; the input's gradient uses the sums over all ranks,
  ``weight.grad``/``bias.grad`` this rank's contribution (DDP's all-reduce averages them with every
  other parameter's), as PyTorch's SyncBatchNorm. When the input needs no gradient: no collective and
  no pass writing an input gradient, ``weight.grad``/``bias.grad`` straight from this rank's sums.
  Whether the input needs a gradient travels in the forward's message: all ranks must agree (the
  backward's collective is made on every rank or on none), else the forward raises on every rank.
- Each message starts with a small header (a failure flag and message, num_features, eps, momentum,
  affine, bias, track_running_stats, the input-needs-gradient flag, the phase -- forward or backward
  -- and the module's call number): a rank whose input fails its checks, whose module differs, or
  whose collectives are out of step with the others' (a backward met by a forward, another call),
  makes the call raise on every rank instead of leaving the others waiting or reading a message as
  another. The first training forward of a module (per process group) gathers the header alone
  first, so that ranks with different channel counts -- different message sizes -- raise too.

Outside training (``eval()``), without an initialized process group, or with a group of one process,
the module is darknet_bn's plain BatchNorm (:mod:`darknet_bn.torch.modules`): no communication.

A rank that dies or stops calling: the others block in the collective. A rank that exits or crashes
closes its gloo connections, and the others' collective raises (a RuntimeError from gloo) at once; a
rank that is alive but does not call (a deadlock in user code, or a rank in ``eval()`` while the others
train) leaves the others waiting until the process group's timeout (``init_process_group(timeout=...)``,
30 minutes by default), when their collective raises.

Limits: float32 CPU tensors only in training with more than one process (other dtypes raise a
TypeError on every rank; an input, weight, bias or running statistic whose data is not 4-byte
aligned, e.g. from ``torch.frombuffer(..., offset=1)``, is copied to an aligned tensor first, and
running statistics are copied back); under ``torch.compile`` the synchronized forward runs eagerly (a graph
break); double backward (``create_graph=True``) through it raises.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import _backend
from ._passes import _kernel_input, _ones_ptr, _scratch_ptr, _zeros_ptr, aligned_copy
from .modules import _DarknetBN

__all__ = ["SyncBatchNorm", "SyncBatchNormAct"]

_F64 = torch.float64
_F32 = torch.float32
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter

# The header at the head of every message, per rank (float64 values):
# [status (0 ok, 1 TypeError, 2 ValueError), num_features, eps, momentum (-1: None), affine, bias,
#  track_running_stats, input needs a gradient (0/1), phase (_PHASES), the module's call number,
#  16 doubles = 128 bytes of UTF-8 message]
_HDR = 26
_KEY = 10  # the head every rank's message must have equal (status .. call number)
_MSG = 128
_PHASES = ("first check", "forward", "backward")
_CHECK, _FORWARD, _BACKWARD = 0.0, 1.0, 2.0
_NO_CHANNELS = "SyncBatchNorm number of input channels should be non-zero"
_DESC_NAMES = ("num_features", "eps", "momentum", "affine", "bias", "track_running_stats")


def _group(pg: Any):
    """(group, world size) to synchronize over, or (None, 1) when there is nothing to synchronize."""
    if not (dist.is_available() and dist.is_initialized()):
        return None, 1
    if pg is None:
        pg = dist.group.WORLD
    world = dist.get_world_size(pg)
    return (pg, world) if world > 1 else (None, 1)


_DESC: dict = {}


def _header(buf: Tensor, desc: tuple, err: BaseException | None, tag: tuple) -> None:
    """Write the header into buf[:_HDR]; tag = (input needs a gradient, phase, call number)."""
    key = desc + tag
    d = _DESC.get(key)
    if d is None:
        if len(_DESC) > 256:
            _DESC.clear()
        d = _DESC[key] = torch.tensor(key, dtype=_F64)
    buf[1:_KEY] = d
    if err is not None:
        buf[0] = 1.0 if isinstance(err, TypeError) else 2.0
        msg = str(err).encode("utf-8", "replace")[:_MSG].ljust(_MSG, b"\0")
        buf[_KEY:_HDR] = torch.frombuffer(bytearray(msg), dtype=torch.uint8).view(_F64)


def _message(row: Tensor) -> str:
    return bytes(row[_KEY:_HDR].contiguous().view(torch.uint8).tolist()).rstrip(b"\0").decode("utf-8", "replace")


def _where(row: Tensor) -> str:
    p = int(row[8])
    phase = _PHASES[p] if 0 <= p < len(_PHASES) else f"phase {p}"
    return f"the {phase} of its call {int(row[9])}"


# all_gather_single (torch >= 2.13; all_gather_into_tensor, its older name, now warns)
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _gather(buf: Tensor, pg: Any, world: int) -> Tensor:
    """[world, len(buf)] float64: every rank's buffer, rows in group rank order."""
    out = torch.empty(world * buf.numel(), dtype=_F64)
    _all_gather(out, buf, group=pg)
    return out.view(world, -1)


def _check(rows: Tensor, err: BaseException | None, what: str, mine: Tensor | None = None) -> None:
    """Raise on every rank if any rank failed or holds a different module (mine: this rank's header,
    for the fast path: every row's head equal to it)."""
    if err is not None:
        raise err
    world = rows.shape[0]
    if mine is not None and torch.equal(rows[:, :_KEY], mine[:_KEY].expand(world, _KEY)):
        return
    step = (rows[:, 8:10] != rows[0, 8:10]).any(dim=1)
    if bool(step.any()):  # checked first: the rest of an out-of-step message means something else
        r = int(torch.nonzero(step)[0, 0])
        raise RuntimeError(
            f"SyncBatchNorm {what}: the processes' collectives are out of step: process {r} of {world} is in "
            f"{_where(rows[r])} of this module, process 0 in {_where(rows[0])} (every process must run the "
            "same synchronized forwards and backwards of each module, in the same order)"
        )
    status = rows[:, 0]
    if bool((status != 0).any()):
        r = int(torch.nonzero(status)[0, 0])
        cls = TypeError if status[r] == 1 else ValueError
        raise cls(f"SyncBatchNorm {what}: process {r} of {world} failed: {_message(rows[r])}")
    ref = rows[0, 1:7]
    diff = (rows[:, 1:7] != ref).any(dim=1)
    if bool(diff.any()):
        r = int(torch.nonzero(diff)[0, 0])

        def show(v):
            return dict(
                zip(
                    _DESC_NAMES,
                    [
                        None if (n == "momentum" and x == -1) else x  # noqa: E731
                        for n, x in zip(_DESC_NAMES, v.tolist())
                    ],
                )
            )

        raise ValueError(
            f"SyncBatchNorm {what}: the processes hold different modules: process {r} of {world} "
            f"has {show(rows[r, 1:7])}, process 0 has {show(ref)}"
        )
    need = rows[:, 7]
    if bool((need != need[0]).any()):
        yes = [r for r in range(world) if need[r] != 0]
        no = [r for r in range(world) if need[r] == 0]
        raise ValueError(
            f"SyncBatchNorm {what}: the input requires a gradient on processes {yes} of {world} but not on "
            f"{no}: every process must agree (the backward is a collective that every process or none makes)"
        )


def _chan_ok(t: Tensor | None, c: int) -> bool:
    return t is None or (
        isinstance(t, _Tensor) and t.dtype is _F32 and t.is_cpu and t.numel() == c and t.is_contiguous()
    )


def _check_input(x: Any, weight, bias, running_mean, running_var, c: int, c_checked: int) -> BaseException | None:
    """This rank's reason to fail, as an exception (not raised), or None."""
    if c != c_checked:
        return ValueError(f"num_features changed to {c} after the first synchronized forward ({c_checked})")
    if not isinstance(x, _Tensor):
        return TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        return ValueError(f"expected at least 2D input (got {x.dim()}D input)")
    if x.dtype is not _F32 or not x.is_cpu:
        return TypeError(
            f"input: SyncBatchNorm on darknet_bn runs float32 CPU tensors, got {x.dtype} on {x.device.type}"
        )
    if x.shape[1] != c:
        return ValueError(f"input: expected {c} channels (dim 1), got shape {tuple(x.shape)}")
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if not _chan_ok(t, c):
            return TypeError(f"{name}: expected a contiguous float32 CPU tensor of {c} values")
    return None


def _moments_rows(rows: Tensor, c: int) -> Tensor:
    """The merge of every rank's moments in rank order (3*c doubles; identical on every rank)."""
    g = rows[0, _HDR:].clone()
    pg_ = g.data_ptr()
    for r in range(1, rows.shape[0]):
        _backend.merge_moments(pg_, rows[r, _HDR:].data_ptr(), c)
    return g


def _sync_forward(
    x,
    weight,
    bias,
    running_mean,
    running_var,
    momentum: float,
    eps: float,
    pg,
    world: int,
    desc: tuple,
    c_checked: int,
    tag: tuple,
):
    """(out, xin, weight, b, s, stats [mean; biased var] float32, global count): the synchronized training
    forward (weight: the one the kernels read, aligned). tag: (input needs a gradient, phase, call number)."""
    c = c_checked
    err = _check_input(x, weight, bias, running_mean, running_var, int(desc[0]), c_checked)
    buf = torch.zeros(_HDR + 3 * c, dtype=_F64)
    _header(buf, desc, err, tag)
    xin, b, s = None, 0, 1
    if err is None:
        if x.numel():
            xin, b, s = _kernel_input(x)
            xin = aligned_copy(xin)
            _backend.forward_moments(xin.data_ptr(), buf.data_ptr() + 8 * _HDR, b, c, s)
        else:
            xin = x
    rows = _gather(buf, pg, world)
    _check(rows, err, "forward", buf)
    g = _moments_rows(rows, c)
    count = float(g[0])
    if count < 2:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got {int(count)} values per "
            f"channel over the {world} processes (input size {list(x.shape)} on this one)"
        )
    weight, bias = aligned_copy(weight), aligned_copy(bias)
    stats = torch.empty(2 * c, dtype=_F32)
    ps = stats.data_ptr()
    rm = rv = None
    if running_mean is None:  # no running statistics: scratch ones, momentum 0
        prm = _scratch_ptr(c) + 8 * c
        prv, momentum = prm + 4 * c, 0.0
    else:
        rm, rv = aligned_copy(running_mean), aligned_copy(running_var)
        prm, prv = rm.data_ptr(), rv.data_ptr()
    pw = _ones_ptr(c) if weight is None else weight.data_ptr()
    pb = _zeros_ptr(c) if bias is None else bias.data_ptr()
    if b * s:
        assert xin is not None  # set with the moments above whenever the slice holds values
        out = torch.empty_like(xin)
        _backend.forward_apply(
            xin.data_ptr(), out.data_ptr(), pw, pb, ps, ps + 4 * c, prm, prv, g.data_ptr(), b, c, s, momentum, eps
        )
    else:  # an empty slice: the statistics and running statistics still, from one dummy value per channel
        out = torch.empty_like(x)
        dummy = torch.zeros(2 * c, dtype=_F32)
        pd = dummy.data_ptr()
        _backend.forward_apply(pd, pd + 4 * c, pw, pb, ps, ps + 4 * c, prm, prv, g.data_ptr(), 1, c, 1, momentum, eps)
    if running_mean is not None:
        if rm is not running_mean:  # misaligned running statistics: updated in an aligned copy
            running_mean.copy_(rm)
        if rv is not running_var:
            running_var.copy_(rv)
        torch.autograd.graph.increment_version((running_mean, running_var))
    return out, xin, weight, b, s, stats, count


class _SyncBatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, meta):
        momentum, eps, pg, world, desc, c, tag = meta
        out, xin, w, b, s, stats, count = _sync_forward(
            x, weight, bias, running_mean, running_var, momentum, eps, pg, world, desc, c, tag
        )
        ctx.meta = (pg, world, desc, c, b, s, eps, count, tag)
        ctx.stats = stats
        ctx.save_for_backward(xin, w)
        return out

    @staticmethod
    def backward(ctx, grad):
        pg, world, desc, c, b, s, eps, count, tag = ctx.meta
        xin, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_x = bool(tag[0])  # agreed by every rank in the forward: all make the collective below, or none
        stats = ctx.stats
        ps = stats.data_ptr()
        n = b * s
        if n and (grad.stride() != xin.stride() or grad.dtype is not _F32 or grad.data_ptr() % 4):
            gi = torch.empty_like(xin).copy_(grad)  # the C passes read (and write, in place) xin's layout
        elif need_x:
            gi = torch.empty_like(xin).copy_(grad) if n else torch.empty_like(xin)
        else:
            gi = grad  # read only
        msg = torch.zeros(_HDR + 3 * c, dtype=_F64)  # the forward's size: a message out of step is read, not an abort
        pl = msg.data_ptr() + 8 * _HDR
        if n:
            _backend.backward_sums(xin.data_ptr(), gi.data_ptr(), ps, pl, b, c, s)
        if not need_x:  # no input gradient: weight.grad = sum dy*(x - mean) / sqrt(var + eps), bias.grad = sum dy
            sums = msg[_HDR : _HDR + 2 * c].view(c, 2)
            gw = (sums[:, 1] / torch.sqrt(stats[c:].double() + eps)).float() if need[1] else None
            gb = sums[:, 0].float() if need[2] else None
            return None, gw, gb, None, None, None
        err = None
        if torch.is_grad_enabled():
            err = RuntimeError("SyncBatchNorm: double backward (create_graph=True) is not supported")
        _header(msg, desc, None if err is None else ValueError(str(err)), (tag[0], _BACKWARD, tag[2]))
        rows = _gather(msg, pg, world)
        if err is not None:
            raise err
        _check(rows, None, "backward", msg)
        gsum = rows[0, _HDR : _HDR + 2 * c].clone()
        for r in range(1, world):
            gsum += rows[r, _HDR : _HDR + 2 * c]
        gw = torch.zeros(c, dtype=_F32)
        gb = torch.zeros(c, dtype=_F32)
        if n:
            _backend.backward_apply(
                xin.data_ptr(),
                gi.data_ptr(),
                _ones_ptr(c) if weight is None else weight.data_ptr(),
                ps,
                ps + 4 * c,
                pl,
                gsum.data_ptr(),
                count,
                gw.data_ptr(),
                gb.data_ptr(),
                _scratch_ptr(c),
                b,
                c,
                s,
                eps,
            )
        return gi, gw if need[1] else None, gb if need[2] else None, None, None, None


_apply = _SyncBatchNormFn.apply


@torch.compiler.disable
def _sync_module_forward(mod: SyncBatchNorm, x: Any, pg: Any, world: int) -> Tensor:
    """The synchronized training forward of mod (eager: a graph break under torch.compile)."""
    call = mod.__dict__.get("_dbn_sync_calls", 0) + 1  # every rank counts every synchronized forward
    mod.__dict__["_dbn_sync_calls"] = call
    desc = mod._descriptor()
    c = mod._checked_channels(pg, world, desc, call)
    if c == 0:  # agreed by every rank: all raise here
        raise ValueError(_NO_CHANNELS)
    momentum = mod.momentum
    factor = 0.0 if momentum is None else momentum
    nbt = mod.num_batches_tracked
    if mod.track_running_stats and nbt is not None:
        nbt.add_(1)
        if momentum is None:
            factor = 1.0 / float(nbt)
    rm, rv = (mod.running_mean, mod.running_var) if mod.track_running_stats else (None, None)
    weight, bias = mod.weight, mod.bias
    grad = torch.is_grad_enabled()
    need_x = grad and isinstance(x, _Tensor) and x.requires_grad
    meta = (float(factor), float(mod.eps), pg, world, desc, c, (float(need_x), _FORWARD, float(call)))
    if need_x or (
        grad and ((weight is not None and weight.requires_grad) or (bias is not None and bias.requires_grad))
    ):
        return _apply(x, weight, bias, rm, rv, meta)
    return _sync_forward(x, weight, bias, rm, rv, *meta)[0]


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""``torch.nn.SyncBatchNorm`` for CPU tensors, on darknet_bn's kernels.

    Same constructor, parameters, buffers and ``state_dict`` as ``torch.nn.SyncBatchNorm``; input
    ``(N, C, *)`` (contiguous, or channels_last / channels_last_3d: no copy, the output keeps the
    layout). In training, with an initialized process group of more than one process, the batch
    statistics are those of the union of every rank's input (see the module docstring); otherwise it
    is darknet_bn's plain BatchNorm. A collective call in training: every rank of ``process_group``
    (default: the whole world) must call it, in the same order as its other collectives.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any | None = None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype, bias=bias
        )
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _check_non_zero_input_channels(self, input: Tensor) -> None:
        if input.size(1) == 0:
            raise ValueError(_NO_CHANNELS)

    def _descriptor(self) -> tuple:
        m = self.momentum
        return (
            float(self.num_features),
            float(self.eps),
            -1.0 if m is None else float(m),
            float(self.weight is not None),
            float(self.bias is not None),
            float(self.track_running_stats),
        )

    def _checked_channels(self, pg: Any, world: int, desc: tuple, call: int) -> int:
        """The channel count all ranks agreed on for pg (a header-only collective the first time)."""
        done = self.__dict__.get("_dbn_sync_checked")
        if done is not None and done[0] is pg:
            return done[1]
        buf = torch.zeros(_HDR, dtype=_F64)
        _header(buf, desc, None, (0.0, _CHECK, float(call)))
        _check(_gather(buf, pg, world), None, "forward")
        self.__dict__["_dbn_sync_checked"] = (pg, int(desc[0]))
        return int(desc[0])

    def forward(self, input: Tensor) -> Tensor:
        pg, world = _group(self.process_group) if self.training else (None, 1)
        if world == 1:  # plain BN: darknet_bn's module (PyTorch's checks and fallbacks)
            if isinstance(input, _Tensor) and input.dim() >= 2:
                self._check_non_zero_input_channels(input)
            return _DarknetBN.forward(self, input)
        return _sync_module_forward(self, input, pg, world)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any | None = None) -> nn.Module:
        """Replace every BatchNorm in ``module`` -- any ``torch.nn.modules.batchnorm._BatchNorm``:
        ``torch.nn.BatchNorm1d``/``2d``/``3d``, ``torch.nn.SyncBatchNorm``, darknet_bn's modules, this
        class -- by a :class:`SyncBatchNorm` over ``process_group`` (None: the whole world), as
        ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does: the new modules hold the same
        ``Parameter`` and buffer tensors (no copy; an optimizer built before keeps working), the
        training flag and ``qconfig``. Containers are changed in place and returned; when ``module``
        is a BatchNorm, the new module is returned."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        out = module
        from .norm_act import BatchNormAct2d

        if isinstance(module, BatchNormAct2d) and not issubclass(cls, SyncBatchNormAct):
            # its act and drop children must still run after the synchronized BN (as timm's
            # convert_sync_batchnorm makes a SyncBatchNormAct)
            return SyncBatchNormAct.convert_sync_batchnorm(module, process_group)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
                raise ValueError(
                    "convert_sync_batchnorm: a lazy BatchNorm must be initialized (run one forward) "
                    "before it is converted"
                )
            out = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
                bias=module.bias is not None,
            )
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out


class SyncBatchNormAct(SyncBatchNorm):
    """What :meth:`SyncBatchNorm.convert_sync_batchnorm` makes of a
    :class:`~darknet_bn.torch.BatchNormAct2d` (as timm's ``SyncBatchNormAct``): the synchronized BN,
    then the module's ``drop`` and ``act`` children (the activation is not fused here)."""

    def forward(self, input: Tensor) -> Tensor:
        x = super().forward(input)
        mods = self._modules
        drop, act = mods.get("drop"), mods.get("act")
        if drop is not None:
            x = drop(x)
        if act is not None:
            x = act(x)
        return x
