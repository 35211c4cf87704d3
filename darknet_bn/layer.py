"""Darknet's batch-normalization layer: ``make_batchnorm_layer`` and ``Layer``.

A ``Layer`` mirrors Darknet's ``layer`` struct for a ``[batchnorm]`` section and its
``forward_batchnorm_layer`` / ``backward_batchnorm_layer`` / ``update_batchnorm_layer``. It owns its
buffers (allocated once, at creation); each pass is one call into C (``csrc/fused.c``) that runs with
pointers prepared at creation.

Shapes: tensors are float32 NCHW, ``(batch, c, h, w)``; per-channel arrays are float32 ``(c,)``.
Darknet's ``delta`` is the *negative* gradient of the loss, and updates are added
(``scales += learning_rate/batch * scale_updates``); this layer keeps that convention in every flavor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._capi import (
    _ACTS,
    ACTIVATIONS,
    EXEC,
    F32,
    INT64_MAX,
    as_int,
    c_act,
    c_flavor,
    check_buffer,
    explain_buffer,
    ffi,
    lib,
)
from .flavors import Flavor, get_flavor

__all__ = ["Layer", "make_batchnorm_layer", "ACTIVATIONS"]

_NULL = ffi.NULL
_NO_X = object()  # Layer._x_fast when there is no clean last input (never an argument a caller can pass)
# The passes, taking their per-layer arguments as one struct (csrc/darknet_bn.h: dbn_*_call), and the
# struct fields the layer's argument tuples fill, in the order of those tuples.
_forward_train = lib.dbn_forward_train_with
_forward_infer = lib.dbn_forward_infer_with
_backward = lib.dbn_backward_with
_TRAIN_FIELDS = (
    "out", "scales", "biases", "mean", "variance", "rolling_mean", "rolling_variance", "batch", "c", "spatial",
    "flavor", "renorm",
)  # fmt: skip
_INFER_FIELDS = ("out", "scales", "biases", "rolling_mean", "rolling_variance", "batch", "c", "spatial", "flavor")
_BWD_FIELDS = (
    "scales", "biases", "mean", "variance", "r", "d", "scale_updates", "bias_updates", "mean_delta",
    "variance_delta", "batch", "c", "spatial", "flavor", "train",
)  # fmt: skip


def _aligned_zeros(n: int, align: int = 64) -> np.ndarray:
    """A zeroed float32 array of n elements whose data starts on an `align`-byte boundary."""
    extra = align // 4
    raw = np.zeros(n + extra, dtype=np.float32)
    offset = (-raw.ctypes.data % align) // 4
    return raw[offset : offset + n]


def _positive(name: str, v: Any) -> int:
    v = as_int(name, v)
    if v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {v}")
    return v


def _number(name: str, v: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    return v


_PER_CHANNEL = (
    "scales",
    "biases",
    "scale_updates",
    "bias_updates",
    "mean",
    "variance",
    "rolling_mean",
    "rolling_variance",
    "mean_delta",
    "variance_delta",
    "r",
    "d",
)


class Layer:
    """A batch-normalization layer with Darknet's fields and passes.

    Fields (numpy views over the layer's own buffers; write into them, e.g. ``layer.scales[:] = s``):

    - ``output``, ``delta``: float32 ``(batch, c, h, w)``. Before :meth:`backward`, fill ``delta``
      with the output's delta; after it, ``delta`` holds the input's delta (as Darknet's ``l.delta``).
    - ``x``: the input of the last forward, ``(batch, c, h, w)``. **Not a copy**: it is a view of the
      array passed to :meth:`forward` (PyTorch saves its input the same way), so that array must not be
      changed before :meth:`backward`. (It is a copy only when the input was ``output`` itself in a
      training forward, or was byte-swapped, misaligned or not C-contiguous: see :meth:`forward`.)
    - ``x_norm``: the normalized input of the last forward, ``(batch, c, h, w)``, computed from ``x``
      and the statistics that forward used when first read after it (no cost when never read).
    - ``scales`` (init 1), ``biases`` (0), ``scale_updates``, ``bias_updates``, ``mean``, ``variance``,
      ``rolling_mean`` (0), ``rolling_variance`` (the flavor's: 0 for Darknet, 1 for torch),
      ``mean_delta``, ``variance_delta``: float32 ``(c,)``.
    - ints ``batch, w, h, c, out_w, out_h, out_c, inputs, outputs`` (``inputs = outputs = c*h*w``).
    - ``flavor``: the :class:`~darknet_bn.flavors.Flavor`.

    - ``r``, ``d``: float32 ``(c,)``, batch renormalization's corrections of the last training forward
      (1 and 0 without renorm); ``renorm``, ``rmax``, ``dmax`` (see :func:`make_batchnorm_layer`).

    ``mean`` and ``variance`` are the batch statistics of the last training forward (``variance`` is
    the one that normalized: unbiased for the Darknet flavors, biased for torch).
    """

    __slots__ = (
        "_batch",
        "_w",
        "_h",
        "_c",
        "_n",
        "_count",
        "_shape",
        "_flavor",
        "_cflavor",
        "_output",
        "_delta",
        "_params",
        "_x",
        "_p_x",
        "_train",
        "_x_norm",
        "_x_norm_valid",
        "_x_copy",
        "_x_bufs",
        "_x_lost",
        "_x_clean",
        "_x_fast",
        "_trainable",
        "_c_bwd_now",
        "_p_output",
        "_p_delta",
        "_p",
        "_rows",
        "_what",
        "_view_shape",
        "_view",
        "_c_train",
        "_c_infer",
        "_c_bwd",
        "_renorm",
        "_act",
        "__weakref__",
    )

    def __init__(
        self,
        batch: int,
        w: int,
        h: int,
        c: int,
        flavor: str | Flavor = "pjreddie",
        *,
        renorm: bool = False,
        rmax: float = 3.0,
        dmax: float = 5.0,
    ) -> None:
        batch, w, h, c = (_positive("batch", batch), _positive("w", w), _positive("h", h), _positive("c", c))
        n = batch * c * h * w
        if n > INT64_MAX // 4:
            raise ValueError(f"batch*c*h*w = {n} elements is too large to allocate")
        self._batch, self._w, self._h, self._c = batch, w, h, c
        self._n = n
        self._count = batch * h * w  # N: values per channel
        self._shape = (batch, c, h, w)
        self._flavor = get_flavor(flavor)
        self._cflavor = c_flavor(self._flavor)

        self._output = _aligned_zeros(n).reshape(self._shape)
        self._delta = _aligned_zeros(n).reshape(self._shape)
        self._params = np.zeros((len(_PER_CHANNEL), c), dtype=np.float32)
        self._params[_PER_CHANNEL.index("scales")] = 1.0
        self._params[_PER_CHANNEL.index("rolling_variance")] = self._flavor.init_rolling_variance
        self._params[_PER_CHANNEL.index("r")] = 1.0
        self._p_output = ffi.from_buffer("float[]", self._output)
        self._p_delta = ffi.from_buffer("float[]", self._delta)
        self._rows = tuple(self._params)  # the per-channel fields: one view each, made once
        self._p = {name: ffi.from_buffer("float[]", row) for name, row in zip(_PER_CHANNEL, self._rows)}

        self._x: np.ndarray | None = None  # the last forward's input (a reference) ...
        self._p_x = None  # ... and its cffi pointer
        self._train = True  # the mode of the last forward
        self._x_lost = False  # the last forward: inference in place on output (x is gone)
        self._x_clean = False  # x was checked to share no memory with this layer's buffers
        self._x_fast: Any = _NO_X  # x when _x_clean (the forward's inlined test, one identity check), else _NO_X
        self._trainable = self._count >= 2  # a training forward needs two values per channel
        self._x_norm: np.ndarray | None = None
        self._x_norm_valid = False
        self._x_copy: np.ndarray | None = None  # what x shows before the first forward (zeros)
        self._x_bufs: list = [None, None]  # where a forward's input is copied when it must be
        self._what = f"batch*inputs = {batch}*{c * h * w}"
        self._view_shape: tuple = self._shape  # the last shape forward returned ...
        self._view: np.ndarray = self._output  # ... and the output viewed in it

        # Batch renormalization: the C struct (rmax, dmax, where r and d go), or NULL for plain BN.
        if not isinstance(renorm, (bool, np.bool_)):
            raise TypeError(f"renorm: expected a bool, got {type(renorm).__name__}")
        self._renorm = ffi.new("dbn_renorm *", {"r": self._p["r"], "d": self._p["d"]}) if renorm else ffi.NULL
        if renorm:
            self.rmax, self.dmax = rmax, dmax

        # The arguments of each C call but the per-call arrays, made once as C structs: a call is one C call.
        # (The pointers stay alive in self._p, self._p_output, self._cflavor and self._renorm.)
        p, s = self._p, h * w
        a_train = (
            self._p_output,
            p["scales"],
            p["biases"],
            p["mean"],
            p["variance"],
            p["rolling_mean"],
            p["rolling_variance"],
            batch,
            c,
            s,
            self._cflavor,
            self._renorm,
        )
        a_infer = (
            self._p_output,
            p["scales"],
            p["biases"],
            p["rolling_mean"],
            p["rolling_variance"],
            batch,
            c,
            s,
            self._cflavor,
        )
        tail = (p["scale_updates"], p["bias_updates"], p["mean_delta"], p["variance_delta"], batch, c, s, self._cflavor)
        rd = (p["r"], p["d"]) if renorm else (ffi.NULL, ffi.NULL)
        sb = (p["scales"], p["biases"])
        a_bwd = {
            True: sb + (p["mean"], p["variance"]) + rd + tail + (1,),
            False: sb + (p["rolling_mean"], p["rolling_variance"], ffi.NULL, ffi.NULL) + tail + (0,),
        }
        # The same arguments as C structs (dbn_*_call), which the passes take by pointer: cffi converts
        # 3-5 arguments per call instead of 15-20 (about half a microsecond a call).
        ex = {"exec": EXEC}
        self._c_train = ffi.new("dbn_train_call *", {**dict(zip(_TRAIN_FIELDS, a_train)), **ex})
        self._c_infer = ffi.new("dbn_infer_call *", {**dict(zip(_INFER_FIELDS, a_infer)), **ex})
        self._c_bwd = {k: ffi.new("dbn_backward_call *", {**dict(zip(_BWD_FIELDS, v)), **ex}) for k, v in a_bwd.items()}
        self._c_bwd_now = self._c_bwd[True]  # the backward's struct for the last forward's mode (_c_bwd[_train])
        self._act = ffi.NULL  # the last forward's activation (dbn_act *; NULL: linear)

    # ---------------------------------------------------------------------------------------------
    # Passes

    def forward(
        self, input: np.ndarray, train: bool = True, activation: str | None = None, *, alpha: float | None = None
    ) -> np.ndarray:
        """Darknet's ``forward_batchnorm_layer``, followed by an activation in the same pass.

        Args:
            input: float32, ``batch*inputs`` values in NCHW order (any shape; its logical C order).
                Never modified. A native-byte-order, aligned (address % 4 == 0), C-contiguous array --
                read-only or not -- is used in place: kept by reference as ``x`` for the backward, no
                copy. A float32 array that is byte-swapped (``'>f4'``), misaligned or not C-contiguous
                (Fortran order, strided) is **copied once** into a buffer of this layer, which is then
                ``x``. Other dtypes raise TypeError (no silent conversion).
            train: training mode (batch statistics; updates ``mean``, ``variance`` and the rolling
                statistics) or inference mode (rolling statistics; changes nothing but ``output``).
            activation: the activation applied in the same pass, in training and inference
                (``"leaky"``, ``"relu"``, ``"mish"``, ... -- see :data:`ACTIVATIONS`; ``None``/``"linear"``:
                none). ``output`` then holds the activated values, and the next :meth:`backward` takes
                ``delta`` as the activated output's delta. In training, the activation's pre-activation
                is BN's output from the stored ``mean``, ``variance`` (and ``r``, ``d``) as float32 (the
                backward recomputes it with the same bits; without an activation the forward also keeps
                the double-precision mean's residual). For in place, pass ``layer.output`` as input (in
                inference that overwrites the input: :meth:`backward` and ``x_norm`` then raise).
            alpha: ``"leaky"`` only: the negative slope (default Darknet's 0.1; rounded to float32).

        Returns:
            ``output`` (the layer's own buffer, overwritten by the next forward), viewed in the shape
            of ``input``.

        Raises:
            TypeError, ValueError: a bad input, an unknown activation (ValueError) or a bad alpha;
            ValueError in training mode when batch*h*w = 1 (the batch variance is undefined). Nothing
            is changed when it raises.
        """
        if alpha is None:
            try:
                act = _ACTS[activation]  # None, "linear" and every name without alpha: made once (_capi)
            except (KeyError, TypeError):
                act = c_act(activation, alpha)  # raises what is wrong with it
        else:
            act = c_act(activation, alpha)
        if (
            input is self._x_fast  # self._x, and _x_clean
            and input.dtype is F32
            and input.flags.c_contiguous
            and ((train is True and self._trainable) or train is False)
        ):
            # The common call, inlined: the last forward's input again (see _take_input), still float32
            # in C order (its memory cannot have moved while its pointer holds a buffer export, so with
            # the same dtype and layout its size and alignment are those checked when it came first).
            if train:
                _forward_train(self._p_x, self._c_train, act)
            else:
                _forward_infer(self._p_x, self._c_infer, act)
            self._act = act
            if train is not self._train:
                self._train = train
                self._c_bwd_now = self._c_bwd[train]
            self._x_norm_valid = False
            shape = input.shape
            if shape != self._view_shape:
                self._view_shape, self._view = shape, self._output.reshape(shape)
            return self._view
        input, p_in, train, lost = self._take_input(input, train, self._count)
        if train:
            _forward_train(p_in, self._c_train, act)
        else:
            _forward_infer(p_in, self._c_infer, act)
        self._act = act
        return self._forward_done(input, p_in, train, lost)

    def _take_input(self, input: Any, train: Any, count: int, keep_x: bool = False):
        """Check a forward's input (and the count of values per channel a training forward needs);
        returns (the input as x, its pointer, train as a bool, whether it is an inference in place on
        output: x is then overwritten by the pass).

        A native, aligned, C-contiguous float32 array is used in place (it is only read). It is copied
        once into a buffer of this layer when it is float32 but byte-swapped, misaligned or not
        C-contiguous (C may not read it as a ``float *``), and when it is this layer's own output buffer
        in a training forward (the output overwrites it, the backward needs it). keep_x: the copy must
        leave the last forward's x intact (for a caller that may still raise after this returns)."""
        n = self._n
        fast = (
            isinstance(input, np.ndarray)
            and input.dtype == F32
            and input.size == n
            and (fl := input.flags).c_contiguous
            and fl.aligned
        )
        if not fast:  # float32 in any byte order and layout can be copied; anything else raises
            f32 = isinstance(input, np.ndarray) and input.dtype.kind == "f" and input.dtype.itemsize == 4
            if not f32 or input.size != n:
                explain_buffer("input", input.view(F32) if f32 else input, n, self._what, False)
        train = bool(train)
        if train and count < 2:
            raise ValueError(
                "train: a training forward needs batch*h*w >= 2 values per channel "
                f"(the batch variance is undefined), this layer has {count}"
            )
        if not fast:
            return self._copy_input(input, input, keep_x) + (train, False)
        if input is self._x and self._x_clean:
            # The last forward's input again (a network's layers pass the same buffers every step): its
            # memory cannot have moved (its cffi pointer holds a buffer export, so numpy refuses to
            # resize it) and its dtype, size and layout were checked above, so the overlap checks
            # below would find what they found then.
            return input, self._p_x, train, False
        p_in = ffi.from_buffer("float[]", input)
        # An array that owns its memory cannot share it with this layer's buffers; a view might.
        if input.base is not None:
            if np.may_share_memory(input, self._delta):
                raise ValueError(
                    "input: shares memory with this layer's delta buffer, which the backward "
                    "overwrites while it reads the input"
                )
            if np.may_share_memory(input, self._output):
                if not (p_in == self._p_output):
                    raise ValueError("input: partially overlaps this layer's output buffer")
                if train:  # the output overwrites its input: keep x for the backward
                    return self._copy_input(self._output, input, keep_x) + (train, False)
                return input, p_in, train, True  # inference in place: no copy, x is overwritten
        return input, p_in, train, False

    def _copy_input(self, src: np.ndarray, like: np.ndarray, keep_x: bool):
        """Copy src (n float32 values, any byte order or layout) into one of this layer's aligned buffers
        that shares no memory with src (nor, with keep_x, with the last forward's x); returns the copy
        in like's shape and its pointer."""
        buf = None
        for i, b in enumerate(self._x_bufs):
            if b is None:
                b = self._x_bufs[i] = _aligned_zeros(self._n).reshape(self._shape)
            holds_x = keep_x and self._x is not None and np.may_share_memory(b, self._x)
            if not (holds_x or np.may_share_memory(b, src)):
                buf = b
                break
        if buf is None:  # src is a view of one buffer, x lives in the other: a third, not kept
            buf = _aligned_zeros(self._n).reshape(self._shape)
        view = buf.reshape(like.shape)
        np.copyto(view, src.reshape(like.shape))
        return view, ffi.from_buffer("float[]", buf)

    def _forward_done(self, input: np.ndarray, p_in: Any, train: bool, lost: bool = False) -> np.ndarray:
        """Remember the forward's input and mode; return the output viewed in the input's shape."""
        self._x, self._p_x = input, p_in
        self._train = train
        self._c_bwd_now = self._c_bwd[train]
        self._x_lost = lost
        self._x_clean = not lost  # an input that got here shares no memory with delta or output
        self._x_fast = _NO_X if lost else input
        self._x_norm_valid = False
        shape = input.shape
        if shape != self._view_shape:
            self._view_shape, self._view = shape, self._output.reshape(shape)
        return self._view

    def backward(self, net_delta: np.ndarray | None = None) -> np.ndarray:
        """Darknet's ``gradient_array`` (the last forward's activation, if any) and
        ``backward_batchnorm_layer``, in the same passes, from ``delta`` (filled by the caller with the
        delta of the forward's output -- the activated output) and the last forward.

        The activation's derivative is applied inside the backward's passes, at the pre-activation
        recomputed from ``x`` and the statistics (no extra buffer), with Darknet's derivative
        definitions (docs/backward.md: which are taken from the activation's output, which from its
        input, and where Darknet's is wrong and this is not).

        After a training forward: the flavor's training backward. After an inference forward: the
        exact gradient of the inference forward (the rolling statistics are constants, so
        ``mean_delta`` and ``variance_delta`` are 0). Both add into ``scale_updates`` and
        ``bias_updates`` (``bias_updates`` in every flavor, even where AlexeyAB's CPU code does not).

        Args:
            net_delta: float32 (native byte order), C-contiguous, aligned, writable, ``batch*inputs``
                values: receives the input's delta (Darknet's copy into ``net.delta``); an array that is
                not so raises ValueError/TypeError (it is written: never silently copied). ``None``: a
                new array is allocated. Passing ``layer.delta`` itself computes in place with no second
                write (the fastest form).

        Returns:
            net_delta (or the new array, shaped as the last forward's input). ``delta`` holds the same
            values on return.
        """
        if (
            net_delta is self._delta
            and self._x_clean
            and net_delta.dtype is F32
            and (fl := net_delta.flags).writeable
            and fl.c_contiguous
        ):
            # in place on this layer's own delta, still usable, after a forward whose input is intact
            # (_x_clean: there was one, and it was not an inference in place on output): _take_net_delta's
            # first case, inlined
            _backward(self._p_x, self._p_delta, _NULL, self._c_bwd_now, self._act)
            return net_delta
        net_delta, p_nd = self._take_net_delta(net_delta)
        _backward(self._p_x, self._p_delta, p_nd, self._c_bwd_now, self._act)
        return net_delta

    def _take_net_delta(self, net_delta: Any) -> tuple[np.ndarray, Any]:
        """Check (or allocate) a backward's net_delta; returns it and its pointer (NULL: in place)."""
        x = self._x
        if x is None:
            raise ValueError("backward: call forward first (the backward needs the forward's input)")
        if self._x_lost:
            raise ValueError(
                "backward: the last forward was an inference forward in place on output, which "
                "overwrote its input; the backward needs that input (pass it in another array)"
            )
        if net_delta is None:
            net_delta = np.empty(x.shape, dtype=np.float32)
            return net_delta, ffi.from_buffer("float[]", net_delta)
        if (
            net_delta is self._delta
            and (fl := net_delta.flags).writeable
            and fl.c_contiguous
            and net_delta.dtype == F32
        ):
            return net_delta, ffi.NULL  # in place, the fastest form: this layer's own buffer, still usable
        p_nd = check_buffer("net_delta", net_delta, self._n, self._what, True)
        if p_nd == self._p_delta:
            return net_delta, ffi.NULL  # in place: delta is the input's delta already
        if net_delta.base is not None or x.base is not None or net_delta is x:
            if np.may_share_memory(net_delta, self._delta):
                raise ValueError("net_delta: partially overlaps this layer's delta buffer")
            if np.may_share_memory(net_delta, x):
                raise ValueError("net_delta: shares memory with the forward's input x, which the backward reads")
        return net_delta, p_nd

    def update(self, learning_rate: float, momentum: float, decay: float, batch: int) -> None:
        """Darknet's ``update_batchnorm_layer`` (SGD with momentum), for every flavor:
        ``biases += learning_rate/batch * bias_updates; bias_updates *= momentum``, and the same for
        ``scales``/``scale_updates``. ``decay`` is accepted and unused, as in Darknet (weight decay
        applies to convolution weights, not to scales and biases)."""
        lr = _number("learning_rate", learning_rate)
        mom = _number("momentum", momentum)
        _number("decay", decay)
        b = _positive("batch", batch)
        p = self._p
        lib.dbn_update(p["scales"], p["scale_updates"], p["biases"], p["bias_updates"], self._c, lr / b, mom)

    # ---------------------------------------------------------------------------------------------
    # Fields

    @property
    def output(self) -> np.ndarray:
        """float32 (batch, c, h, w): the last forward's output."""
        return self._output

    @property
    def delta(self) -> np.ndarray:
        """float32 (batch, c, h, w): the output's delta before backward, the input's delta after."""
        return self._delta

    @property
    def x(self) -> np.ndarray:
        """float32 (batch, c, h, w): the last forward's input (a view of it, not a copy; zeros before
        the first forward). After an inference forward in place on ``output``, it is ``output``: the
        input was overwritten (``x_norm`` and :meth:`backward` then raise ValueError)."""
        if self._x is None:
            if self._x_copy is None:
                self._x_copy = _aligned_zeros(self._n).reshape(self._shape)
            return self._x_copy
        return self._x.reshape(self._shape)

    @property
    def x_norm(self) -> np.ndarray:
        """float32 (batch, c, h, w): the last forward's normalized input, computed on first read
        (into a buffer allocated on the first read ever; zeros before the first forward). ValueError
        after an inference forward in place on ``output`` (its input was overwritten)."""
        if self._x_lost:
            raise ValueError(
                "x_norm: the last forward was an inference forward in place on output, which overwrote its input"
            )
        if self._x_norm is None:
            self._x_norm = _aligned_zeros(self._n).reshape(self._shape)
        if self._x is not None and not self._x_norm_valid:
            p, fl = self._p, self._flavor
            if self._train:
                m, v = p["mean"], p["variance"]
                r, d = (p["r"], p["d"]) if self._renorm else (ffi.NULL, ffi.NULL)
            else:
                m, v, r, d = p["rolling_mean"], p["rolling_variance"], ffi.NULL, ffi.NULL
            lib.dbn_normalize_into(
                self._p_x,
                ffi.from_buffer("float[]", self._x_norm),
                m,
                v,
                r,
                d,
                self._batch,
                self._c,
                self._h * self._w,
                fl.eps,
                fl.eps_in_sqrt,
                EXEC,
            )
            self._x_norm_valid = True
        return self._x_norm

    scales = property(lambda self: self._rows[0], doc="float32 (c,): gamma, init 1.")
    biases = property(lambda self: self._rows[1], doc="float32 (c,): beta, init 0.")
    scale_updates = property(lambda self: self._rows[2], doc="float32 (c,): accumulated scale delta.")
    bias_updates = property(lambda self: self._rows[3], doc="float32 (c,): accumulated bias delta.")
    mean = property(lambda self: self._rows[4], doc="float32 (c,): the last training batch's mean.")
    variance = property(
        lambda self: self._rows[5], doc="float32 (c,): the last training batch's variance (the one that normalized)."
    )
    rolling_mean = property(lambda self: self._rows[6], doc="float32 (c,): running mean for inference.")
    rolling_variance = property(lambda self: self._rows[7], doc="float32 (c,): running variance for inference.")
    mean_delta = property(lambda self: self._rows[8], doc="float32 (c,): delta of the batch mean.")
    variance_delta = property(lambda self: self._rows[9], doc="float32 (c,): delta of the batch variance.")
    r = property(
        lambda self: self._rows[10],
        doc="float32 (c,): batch renormalization's r of the last training forward (1 without renorm).",
    )
    d = property(
        lambda self: self._rows[11],
        doc="float32 (c,): batch renormalization's d of the last training forward (0 without renorm).",
    )

    @property
    def renorm(self) -> bool:
        """Whether the training forward uses batch renormalization (fixed at creation)."""
        return bool(self._renorm)

    @property
    def rmax(self) -> float:
        """Batch renormalization's bound on r, >= 1 (settable between steps; 1 with dmax 0 is plain BN)."""
        return self._renorm.rmax if self._renorm else 1.0

    @rmax.setter
    def rmax(self, value: float) -> None:
        v = _number("rmax", value)
        if v < 1.0:
            raise ValueError(f"rmax: expected a number >= 1, got {v}")
        if not self._renorm:
            raise ValueError("rmax: this layer was made without renorm=True")
        self._renorm.rmax = v

    @property
    def dmax(self) -> float:
        """Batch renormalization's bound on |d|, >= 0 (settable between steps)."""
        return self._renorm.dmax if self._renorm else 0.0

    @dmax.setter
    def dmax(self, value: float) -> None:
        v = _number("dmax", value)
        if v < 0.0:
            raise ValueError(f"dmax: expected a number >= 0, got {v}")
        if not self._renorm:
            raise ValueError("dmax: this layer was made without renorm=True")
        self._renorm.dmax = v

    batch = property(lambda self: self._batch, doc="int: images per batch.")
    w = property(lambda self: self._w, doc="int: width.")
    h = property(lambda self: self._h, doc="int: height.")
    c = property(lambda self: self._c, doc="int: channels.")
    out_w = property(lambda self: self._w, doc="int: output width (= w).")
    out_h = property(lambda self: self._h, doc="int: output height (= h).")
    out_c = property(lambda self: self._c, doc="int: output channels (= c).")
    inputs = property(lambda self: self._c * self._h * self._w, doc="int: values per image, c*h*w.")
    outputs = property(lambda self: self._c * self._h * self._w, doc="int: values per image, c*h*w.")
    flavor = property(lambda self: self._flavor, doc="Flavor: the semantics this layer follows.")

    def __repr__(self) -> str:
        return f"Layer(batch={self._batch}, w={self._w}, h={self._h}, c={self._c}, flavor={self._flavor.name!r})"


def make_batchnorm_layer(
    batch: int,
    w: int,
    h: int,
    c: int,
    flavor: str | Flavor = "pjreddie",
    *,
    renorm: bool = False,
    rmax: float = 3.0,
    dmax: float = 5.0,
) -> Layer:
    """Darknet's ``make_batchnorm_layer(batch, w, h, c)``: a :class:`Layer` for ``batch`` images of
    ``c`` channels of ``h`` x ``w``, following ``flavor`` ("pjreddie", "alexeyab", "torch" or a
    :class:`~darknet_bn.flavors.Flavor`).

    ``renorm=True`` makes the training forward use batch renormalization (Ioffe 2017): per channel
    ``r = clip(sigma_B / sigma, 1/rmax, rmax)``, ``d = clip((mu_B - mu) / sigma, -dmax, dmax)`` against the
    rolling statistics (sigma by the flavor's eps convention), ``x_hat = (x - mu_B) / sigma_B * r + d``;
    the backward treats r and d as constants; inference is unchanged. ``rmax``/``dmax`` can be changed
    between steps (``layer.rmax = ...``) for the paper's warm-up schedule (rmax = 1, dmax = 0 is plain BN)."""
    return Layer(batch, w, h, c, flavor, renorm=renorm, rmax=rmax, dmax=dmax)
