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
- backward: one ``all_gather`` of (sum dy, sum dy*(x - mean)) per channel, summed in rank order; the
  input's gradient uses the sums over all ranks, ``weight.grad``/``bias.grad`` this rank's
  contribution (DDP's all-reduce averages them with every other parameter's), as PyTorch's
  SyncBatchNorm. No collective when the input needs no gradient.
- Each message starts with a small descriptor (a failure flag and message, num_features, eps,
  momentum, affine, bias, track_running_stats): a rank whose input fails its checks, or whose module
  differs, makes the call raise on every rank instead of leaving the others waiting. The first
  training forward of a module (per process group) gathers the descriptor alone first, so that ranks
  with different channel counts -- different message sizes -- raise too.

Outside training (``eval()``), without an initialized process group, or with a group of one process,
the module is darknet_bn's plain BatchNorm (:mod:`darknet_bn.torch.modules`): no communication.

A rank that dies or stops calling: the others block in the collective. A rank that exits or crashes
closes its gloo connections, and the others' collective raises (a RuntimeError from gloo) at once; a
rank that is alive but does not call (a deadlock in user code, or a rank in ``eval()`` while the others
train) leaves the others waiting until the process group's timeout (``init_process_group(timeout=...)``,
30 minutes by default), when their collective raises.

Limits: float32 CPU tensors only in training with more than one process (other dtypes raise a
TypeError on every rank); under ``torch.compile`` the synchronized forward runs eagerly (a graph
break); double backward (``create_graph=True``) through it raises.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import _backend
from ._passes import _kernel_input, _ones_ptr, _scratch_ptr, _zeros_ptr
from .modules import _DarknetBN

__all__ = ["SyncBatchNorm"]

_F64 = torch.float64
_F32 = torch.float32
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter

# The descriptor at the head of every message, per rank (float64 values):
# [status (0 ok, 1 TypeError, 2 ValueError), num_features, eps, momentum (-1: None), affine, bias,
#  track_running_stats, 0, 16 doubles = 128 bytes of UTF-8 message]
_HDR = 24
_MSG = 128
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


def _header(buf: Tensor, desc: tuple, err: BaseException | None) -> None:
    d = _DESC.get(desc)
    if d is None:
        if len(_DESC) > 256:
            _DESC.clear()
        d = _DESC[desc] = torch.tensor(desc, dtype=_F64)
    buf[1:7] = d
    if err is not None:
        buf[0] = 1.0 if isinstance(err, TypeError) else 2.0
        msg = str(err).encode("utf-8", "replace")[:_MSG].ljust(_MSG, b"\0")
        buf[8:_HDR] = torch.frombuffer(bytearray(msg), dtype=torch.uint8).view(_F64)


def _message(row: Tensor) -> str:
    return bytes(row[8:_HDR].contiguous().view(torch.uint8).tolist()).rstrip(b"\0").decode("utf-8", "replace")


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
    if mine is not None and torch.equal(rows[:, :7], mine[:7].expand(world, 7)):
        return
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
    x, weight, bias, running_mean, running_var, momentum: float, eps: float, pg, world: int, desc: tuple, c_checked: int
):
    """(out, xin, b, s, stats [mean; biased var] float32, global count): the synchronized training forward."""
    c = c_checked
    err = _check_input(x, weight, bias, running_mean, running_var, int(desc[0]), c_checked)
    buf = torch.zeros(_HDR + 3 * c, dtype=_F64)
    _header(buf, desc, err)
    xin, b, s = None, 0, 1
    if err is None:
        if x.numel():
            xin, b, s = _kernel_input(x)
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
    stats = torch.empty(2 * c, dtype=_F32)
    ps = stats.data_ptr()
    if running_mean is None:  # no running statistics: scratch ones, momentum 0
        prm = _scratch_ptr(c) + 8 * c
        prv, momentum = prm + 4 * c, 0.0
    else:
        prm, prv = running_mean.data_ptr(), running_var.data_ptr()
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
        torch.autograd.graph.increment_version((running_mean, running_var))
    return out, xin, b, s, stats, count


class _SyncBatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, meta):
        momentum, eps, pg, world, desc, c = meta
        out, xin, b, s, stats, count = _sync_forward(
            x, weight, bias, running_mean, running_var, momentum, eps, pg, world, desc, c
        )
        ctx.meta = (pg, world, desc, c, b, s, eps, count)
        ctx.stats = stats
        ctx.save_for_backward(xin, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        pg, world, desc, c, b, s, eps, count = ctx.meta
        xin, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        stats = ctx.stats
        ps = stats.data_ptr()
        pw = _ones_ptr(c) if weight is None else weight.data_ptr()
        gw = torch.zeros(c, dtype=_F32)
        gb = torch.zeros(c, dtype=_F32)
        scratch = _scratch_ptr(c)
        n = b * s
        gi = torch.empty_like(xin)
        if n:
            gi.copy_(grad)  # the C pass works in place, in xin's layout
        lsum = torch.zeros(_HDR + 2 * c, dtype=_F64)
        pl = lsum.data_ptr() + 8 * _HDR
        if n:
            _backend.backward_sums(xin.data_ptr(), gi.data_ptr(), ps, pl, b, c, s)
        if need[0]:
            err = None
            if torch.is_grad_enabled():
                err = RuntimeError("SyncBatchNorm: double backward (create_graph=True) is not supported")
            _header(lsum, desc, None if err is None else ValueError(str(err)))
            rows = _gather(lsum, pg, world)
            if err is not None:
                raise err
            _check(rows, None, "backward", lsum)
            gsum = rows[0, _HDR:].clone()
            for r in range(1, world):
                gsum += rows[r, _HDR:]
            pgs = gsum.data_ptr()
        else:  # no input gradient: no collective, this rank's weight and bias gradients
            pgs = pl
        if n:
            _backend.backward_apply(
                xin.data_ptr(),
                gi.data_ptr(),
                pw,
                ps,
                ps + 4 * c,
                pl,
                pgs,
                count,
                gw.data_ptr(),
                gb.data_ptr(),
                scratch,
                b,
                c,
                s,
                eps,
            )
        return (gi if need[0] else None, gw if need[1] else None, gb if need[2] else None, None, None, None)


_apply = _SyncBatchNormFn.apply


@torch.compiler.disable
def _sync_batch_norm(x, weight, bias, running_mean, running_var, momentum, eps, pg, world, desc, c):
    if torch.is_grad_enabled() and (
        (isinstance(x, _Tensor) and x.requires_grad)
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    ):
        return _apply(x, weight, bias, running_mean, running_var, (momentum, eps, pg, world, desc, c))
    return _sync_forward(x, weight, bias, running_mean, running_var, momentum, eps, pg, world, desc, c)[0]


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
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

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

    def _checked_channels(self, pg: Any, world: int, desc: tuple) -> int:
        """The channel count all ranks agreed on for pg (a descriptor-only collective the first time)."""
        done = self.__dict__.get("_dbn_sync_checked")
        if done is not None and done[0] is pg:
            return done[1]
        buf = torch.zeros(_HDR, dtype=_F64)
        _header(buf, desc, None)
        _check(_gather(buf, pg, world), None, "forward")
        self.__dict__["_dbn_sync_checked"] = (pg, int(desc[0]))
        return int(desc[0])

    def forward(self, input: Tensor) -> Tensor:
        pg, world = _group(self.process_group) if self.training else (None, 1)
        if world == 1:  # plain BN: darknet_bn's module (PyTorch's checks and fallbacks)
            return _DarknetBN.forward(self, input)
        desc = self._descriptor()
        c = self._checked_channels(pg, world, desc)
        momentum = self.momentum
        factor = 0.0 if momentum is None else momentum
        nbt = self.num_batches_tracked
        if self.track_running_stats and nbt is not None:
            nbt.add_(1)
            if momentum is None:
                factor = 1.0 / float(nbt)
        rm, rv = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return _sync_batch_norm(
            input, self.weight, self.bias, rm, rv, float(factor), float(self.eps), pg, world, desc, c
        )

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
