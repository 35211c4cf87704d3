"""The layers each fork builds from a cfg: ``parse_network_cfg``, the ``parse_*`` functions and the
``make_*_layer`` size formulas of each fork's ``src/parser.c`` and ``src/*_layer.c``.

:class:`Builder` holds what both forks share; :class:`PjreddieBuilder` and :class:`AlexeyABBuilder`
hold what differs. A section of layer type ``t`` is built by the method ``parse_t`` of the fork's
builder (``parse_convolutional``, ``parse_route``...): a fork builds exactly the layer types it has a
method for (:data:`SUPPORTED_TYPES`). Where a layer type differs only in a detail between the forks,
the shared method calls a small hook the fork's class overrides (``_conv_groups``, ``_pool_strides``,
``_route_groups``, ``_yolo_extra``...).

:func:`load_network` follows one fork's rules: ``fork=`` if given, else the flavor's (:attr:`Flavor.fork
<darknet_bn.flavors.Flavor.fork>`), else the fork detected from the cfg (a section, key or value only
AlexeyAB's parser reads means AlexeyAB's; see :func:`darknet_bn.darknet.cfg.detect_fork`);
``Network.rules`` says which and why. Where the fork's parser crashes only after the layers are built
(AlexeyAB divides by zero when no layer is wider and taller than 1, e.g. its rnn/gru/lstm cfgs), the
network is returned, with a warning.

Sizes follow Darknet's C ``int`` arithmetic (division truncates toward zero); a division by zero, an
``int`` overflow, a failed assert or an out-of-range layer reference -- Darknet's crashes -- raise
:class:`~darknet_bn.darknet.cfg.DarknetCfgError` naming the line. Every layer reference a layer reads
(``layers=``, ``from=``, ``share_index=``, ``embedding_layer=``, ``yolo_layer=``) is recorded, resolved,
in :attr:`DarknetLayer.refs <darknet_bn.darknet.model.DarknetLayer.refs>`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from ..flavors import Flavor, get_flavor
from .cfg import INT_MAX, INT_MIN, CfgFile, DarknetCfgError, Section, c_atoi, parse_cfg
from .model import BN_ARRAYS, DarknetLayer, LayerRef, Network

__all__ = ["Builder", "PjreddieBuilder", "AlexeyABBuilder", "BUILDERS", "SUPPORTED_TYPES", "load_network"]


# ----------------------------------------------------------------------------------------------------
# C int arithmetic


def _cdiv(a: int, b: int, sec: Section, what: str, key: str | None = None) -> int:
    """C integer division (truncates toward zero); b == 0 is Darknet's crash (SIGFPE)."""
    if b == 0:
        raise sec.error(f"{what} divides by zero (Darknet crashes)", key)
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _cmod(a: int, b: int, sec: Section, what: str, key: str | None = None) -> int:
    if b == 0:
        raise sec.error(f"{what} divides by zero (Darknet crashes)", key)
    return a - b * _cdiv(a, b, sec, what, key)


def _int(v: int, sec: Section, what: str) -> int:
    """v as a C int: out of range is an error (Darknet's int overflows)."""
    if not INT_MIN <= v <= INT_MAX:
        raise sec.error(f"{what} = {v} overflows Darknet's int")
    return v


def _mul(sec: Section, what: str, *vals: int) -> int:
    r = 1
    for v in vals:
        r = _int(r * v, sec, what)
    return r


def _padding(sec: Section, size: int) -> int:
    """``padding=``, or ``size/2`` with ``pad=1`` (both forks' parse_convolutional)."""
    pad, padding = sec.get_int("pad", 0), sec.get_int("padding", 0)
    if pad:
        padding = _cdiv(size, 2, sec, "size/2")
    return padding


# ----------------------------------------------------------------------------------------------------
# What both forks share


class Builder:
    """Builds the layers of a cfg by one fork's rules (parse_network_cfg and the make_*_layer).

    Subclasses set :attr:`fork`, :attr:`COMMON_KEYS` and provide ``parse_<type>`` for the fork's own
    layer types and the hooks; :func:`load_network` picks the class from :data:`BUILDERS`.
    """

    fork: ClassVar[str] = ""
    # keys every layer type reads (parse_network_cfg), kept in DarknetLayer.extras when set
    COMMON_KEYS: ClassVar[tuple] = ("dontload", "dontloadscales")

    def __init__(self, cfg: CfgFile, init_rv: float) -> None:
        if cfg.fork != self.fork:
            raise ValueError(f"{type(self).__name__} builds {self.fork}'s networks, the cfg was read by {cfg.fork}'s")
        self.cfg = cfg
        self.layers: list[DarknetLayer] = []
        self.warnings: list[str] = []
        self.init_rv = init_rv
        self._seen_refs: list[tuple[str, int]] = []  # (key, layer) resolved while building the current layer

    @classmethod
    def supported_types(cls) -> frozenset:
        """The layer types this builder builds (those it has a ``parse_<type>`` method for)."""
        return frozenset(name[len("parse_") :] for name in dir(cls) if name.startswith("parse_"))

    # -- [net] -------------------------------------------------------------------------------------
    def net_options(self, batch: int | None) -> tuple:
        """parse_net_options (+ the batch rules of parse_network_cfg[_custom]): (batch, time_steps, w, h, c,
        inputs). Warnings go to :attr:`warnings`."""
        cfg = self.cfg
        net = cfg.net
        g = net.get_int
        cfg_batch = g("batch", 1)
        subdivs = g("subdivisions", 1)
        time_steps = g("time_steps", 1)
        nb = _cdiv(cfg_batch, subdivs, net, "batch/subdivisions", "subdivisions")
        nb = _int(nb * time_steps, net, "batch*time_steps")
        h, w, c = g("height", 0), g("width", 0), g("channels", 0)
        inputs = g("inputs", _mul(net, "inputs", h, w, c))
        if not inputs and not (h and w and c):
            raise net.error(
                "no input size: set width=, height= and channels= (or inputs=) "
                "(Darknet: 'No input parameters supplied')"
            )
        policy = net.get_str("policy", "constant")
        if policy == "steps":
            steps, scales = net.get_str("steps"), net.find("scales")
            if steps is None or scales is None:
                raise net.error("policy=steps needs steps= and scales= (Darknet stops)", "policy")
            if scales.value.count(",") < steps.count(","):
                self.warnings.append(
                    f"{cfg.name}:{scales.line}: [net] scales= has fewer values than steps=: "
                    "Darknet reads past the end of the scales text (it may crash); sizes are not affected"
                )
        if batch is not None:
            if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)):
                raise TypeError(f"batch: expected an int or None, got {type(batch).__name__}")
            if batch < 1:
                raise ValueError(f"batch: expected an int >= 1, got {batch}")
            return int(batch), 1, w, h, c, inputs
        nb, time_steps = self._net_batch(nb, time_steps)
        if nb < 1 or time_steps < 1:
            raise net.error(
                f"batch={cfg_batch}, subdivisions={subdivs}, time_steps={time_steps} give a batch of {nb} "
                f"and {time_steps} time steps: pjreddie's Darknet cannot build layers with that"
            )
        return nb, time_steps, w, h, c, inputs

    def _net_batch(self, nb: int, time_steps: int) -> tuple[int, int]:
        """The cfg's batch and time steps as the fork's parse_network_cfg corrects them."""
        return nb, time_steps

    # -- helpers -----------------------------------------------------------------------------------
    def _ref(self, sec: Section, key: str, value: int, index: int) -> int:
        """A layer reference as Darknet resolves it (negative: relative); must be an earlier layer. It is
        recorded in the layer's :attr:`~DarknetLayer.refs`."""
        idx = value + index if value < 0 else value
        if not 0 <= idx < index:
            raise sec.error(
                f"{key}={value} refers to layer {idx}, which is not a layer before this one "
                f"(0..{index - 1}); Darknet reads outside its layer array",
                key,
            )
        self._seen_refs.append((key, idx))
        return idx

    def _refs(self, sec: Section, key: str, index: int) -> list:
        """A comma-separated list of layer references, read as Darknet does (atoi of each piece)."""
        text = sec.get_str(key)
        if text is None:
            raise sec.error(f"{key}= is missing (Darknet crashes)")
        out = []
        for piece in text.split(","):
            v, _ = c_atoi(piece)
            v = _int(v, sec, key)
            out.append(self._ref(sec, key, v, index))
        return out

    def _from_one(self, sec: Section, index: int) -> int:
        """``from=`` read as one reference (atoi of the value)."""
        text = sec.get_str("from")
        if text is None:
            raise sec.error("from= is missing (Darknet crashes)")
        v, _ = c_atoi(text)
        return self._ref(sec, "from", _int(v, sec, "from"), index)

    def _need_image(self, sec: Section, p: dict, what: str) -> None:
        if not (p["h"] and p["w"] and p["c"]):
            raise sec.error(
                f"the layer before it must output an image (it gives {p['w']}x{p['h']}x{p['c']}); "
                f"Darknet: 'Layer before {what} layer must output image.'"
            )

    def _check(self, lyr: DarknetLayer, sec: Section) -> DarknetLayer:
        for k in ("w", "h", "c", "out_w", "out_h", "out_c", "inputs", "outputs"):
            v = getattr(lyr, k)
            _int(v, sec, k)
            if v < 0:
                raise sec.error(f"gives a negative size ({k} = {v}); Darknet cannot allocate it")
        for name, shape in lyr._shapes.items():
            total = 1
            for d in shape:
                if d < 0:
                    raise sec.error(f"gives a negative size for its {name} ({shape})")
                total *= d
            _int(total, sec, name)
        lyr._init_rv = self.init_rv
        return lyr

    def _new(self, sec: Section, index: int, type_: str, **kw: Any) -> DarknetLayer:
        return DarknetLayer(index=index, type=type_, header=sec.header, line=sec.line, **kw)

    # -- the network -------------------------------------------------------------------------------
    def build(self, net: dict) -> list:
        """The layers of every section after ``[net]``, from the ``[net]`` input ``net`` (h, w, c, inputs)."""
        p = {"h": net["h"], "w": net["w"], "c": net["c"], "inputs": net["inputs"]}
        for index, sec in enumerate(self.cfg.sections):
            self._seen_refs = []
            lyr = self._check(self.layer(sec, p, index), sec)
            lyr.refs = self._group_refs()
            for key in self.COMMON_KEYS:
                v = sec.get_int(key, 0)
                if v:
                    lyr.extras[key] = v
            numload = lyr.extras.get("numload", 0)
            if numload and lyr.type == "convolutional" and not 0 < numload <= (lyr.n or 0):
                raise sec.error(f"numload={numload} must be 1..filters={lyr.n}", "numload")
            self.layers.append(lyr)
            if lyr._next is not None:
                p = {"h": lyr._next[0], "w": lyr._next[1], "c": lyr._next[2], "inputs": lyr._next[3]}
            else:
                p = {"h": lyr.out_h, "w": lyr.out_w, "c": lyr.out_c, "inputs": lyr.outputs}
        return self.layers

    def _group_refs(self) -> tuple:
        keys: dict = {}
        for key, idx in self._seen_refs:
            keys.setdefault(key, []).append(idx)
        return tuple(LayerRef(key, tuple(idx)) for key, idx in keys.items())

    def after_build(self) -> list[str]:
        """Warnings about what the fork's parser does once every layer is built (after :meth:`build`)."""
        return []

    def layer(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        """The layer of one section, by ``parse_<type>``."""
        method = getattr(self, "parse_" + sec.type, None)
        if method is None:
            raise sec.error(
                f"{self.fork}'s Darknet knows this layer type, but darknet_bn does not build it (not supported)"
            )
        return method(sec, p, index)

    # -- make_convolutional_layer, make_connected_layer --------------------------------------------
    def _conv_groups(self, groups: int, xnor: int) -> int:
        """The groups make_convolutional_layer uses."""
        return groups

    def _conv_fields(self, lyr: DarknetLayer, stride_x: int, stride_y: int, dilation: int) -> None:
        """Fields the fork's convolutional layer has beyond pjreddie's."""

    def _make_conv(
        self,
        sec: Section,
        p: dict,
        index: int,
        *,
        n: int,
        size: int,
        stride_x: int,
        stride_y: int,
        padding: int,
        groups: int,
        bn: int,
        dilation: int = 1,
        antialiasing: int = 0,
        xnor: int = 0,
        share: DarknetLayer | None = None,
        type_: str = "convolutional",
    ) -> DarknetLayer:
        """make_convolutional_layer of the fork (sizes and parameter shapes)."""
        h, w, c = p["h"], p["w"], p["c"]
        groups = self._conv_groups(groups, xnor)
        blur_sx, blur_sy = stride_x, stride_y
        if antialiasing:
            stride_x = stride_y = 1
        cg = _cdiv(c, groups, sec, "c/groups", "groups")
        nweights = _mul(sec, "nweights", cg, n, size, size)
        out_h = (
            _cdiv(_int(h + 2 * padding - size, sec, "h + 2*pad - size"), stride_y, sec, "the output height", "stride")
            + 1
        )
        out_w = (
            _cdiv(_int(w + 2 * padding - size, sec, "w + 2*pad - size"), stride_x, sec, "the output width", "stride")
            + 1
        )
        lyr = self._new(
            sec, index, type_, batch_normalize=bn, w=w, h=h, c=c, out_w=out_w, out_h=out_h, out_c=n, n=n, size=size,
            stride=stride_x, pad=padding, groups=groups,
        )  # fmt: skip
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = _mul(sec, "outputs", out_h, out_w, n)
        lyr._n_any = n
        self._conv_fields(lyr, stride_x, stride_y, dilation)
        if share is not None:
            shared = share._shapes.get("weights")
            if share.size != size or shared is None or int(np.prod(shared)) != nweights or share.c != c or share.n != n:
                raise sec.error(
                    f"share_index: layer {share.index} has another size, channel count or filter "
                    "count (Darknet: 'Layer size, nweights, channels or filters don't match')",
                    "share_index",
                )
            lyr.arrays = share.arrays
            lyr.extras["share_index"] = share.index
        lyr._shapes = {"biases": (n,), "weights": (n, cg, size, size)}
        if bn:
            lyr._shapes.update({k: (n,) for k in BN_ARRAYS})
        if antialiasing:
            blur_size, blur_pad = (2, 0) if antialiasing == 2 else (3, 1)
            bo_h = _cdiv(out_h + 2 * blur_pad - blur_size, blur_sy, sec, "the blur output height") + 1
            bo_w = _cdiv(out_w + 2 * blur_pad - blur_size, blur_sx, sec, "the blur output width") + 1
            lyr._next = (bo_h, bo_w, n, _mul(sec, "outputs", bo_h, bo_w, n))
            lyr.extras["antialiasing"] = antialiasing
        return lyr

    def _make_connected(
        self, sec: Section, index: int, inputs: int, outputs: int, bn: int, type_: str = "connected"
    ) -> DarknetLayer:
        lyr = self._new(
            sec, index, type_, batch_normalize=bn, w=1, h=1, c=inputs, out_w=1, out_h=1, out_c=outputs,
            inputs=inputs, outputs=outputs,
        )  # fmt: skip
        _mul(sec, "weights", inputs, outputs)
        lyr._shapes = {"biases": (outputs,), "weights": (outputs, inputs)}
        if bn:
            lyr._shapes.update({k: (outputs,) for k in BN_ARRAYS})
        return lyr

    # -- layers with weights -----------------------------------------------------------------------
    def parse_connected(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._make_connected(
            sec, index, p["inputs"], sec.get_int("output", 1), sec.get_int("batch_normalize", 0)
        )

    def parse_batchnorm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, "batchnorm", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.inputs = lyr.outputs = _mul(sec, "outputs", h, w, c)
        lyr._shapes = {k: (c,) for k in ("biases",) + BN_ARRAYS}
        return lyr

    def parse_local(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        n, size, stride, pad = g("filters", 1), g("size", 1), g("stride", 1), g("pad", 0)
        self._need_image(sec, p, "local")
        h, w, c = p["h"], p["w"], p["c"]
        out_h = _cdiv(h - (1 if pad else size), stride, sec, "the output height", "stride") + 1
        out_w = _cdiv(w - (1 if pad else size), stride, sec, "the output width", "stride") + 1
        lyr = self._new(sec, index, "local", w=w, h=h, c=c, out_w=out_w, out_h=out_h, out_c=n)
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = _mul(sec, "outputs", out_h, out_w, n)
        lyr._n_any = n
        lyr._shapes = {"biases": (lyr.outputs,), "weights": (out_h * out_w, n, c, size, size)}
        return lyr

    # -- pooling -----------------------------------------------------------------------------------
    def _pool_strides(self, sec: Section) -> tuple[int, int, int]:
        """(stride, stride_x, stride_y) of a pooling section."""
        stride = sec.get_int("stride", 1)
        return stride, stride, stride

    def _pool_extra(self, sec: Section, type_: str) -> tuple[int, int, int]:
        """(maxpool_depth, out_channels, antialiasing) of a pooling section."""
        return 0, 0, 0

    def _pool(self, sec: Section, p: dict, index: int, type_: str) -> DarknetLayer:
        g = sec.get_int
        stride, stride_x, stride_y = self._pool_strides(sec)
        size = g("size", stride)
        padding = g("padding", size - 1)
        depth, out_channels, antialiasing = self._pool_extra(sec, type_)
        self._need_image(sec, p, "[maxpool]" if type_ == "maxpool" else "[local_avgpool]")
        h, w, c = p["h"], p["w"], p["c"]
        blur_sx, blur_sy = stride_x, stride_y
        if antialiasing:
            stride_x = stride_y = 1
        if depth:
            out_w, out_h, out_c = w, h, out_channels
        else:
            out_w = (
                _cdiv(_int(w + padding - size, sec, "w + padding - size"), stride_x, sec, "the output width", "stride")
                + 1
            )
            out_h = (
                _cdiv(_int(h + padding - size, sec, "h + padding - size"), stride_y, sec, "the output height", "stride")
                + 1
            )
            out_c = c
        lyr = self._new(sec, index, type_, w=w, h=h, c=c, out_w=out_w, out_h=out_h, out_c=out_c)
        lyr.inputs = _mul(sec, "inputs", h, w, c)
        lyr.outputs = _mul(sec, "outputs", out_h, out_w, out_c)
        lyr.extras.update(size=size, stride_x=stride_x, stride_y=stride_y, padding=padding)
        if antialiasing:
            blur_size, blur_pad = (2, 0) if antialiasing == 2 else (3, 1)
            bo_h = _cdiv(out_h + 2 * blur_pad - blur_size, blur_sy, sec, "the blur output height") + 1
            bo_w = _cdiv(out_w + 2 * blur_pad - blur_size, blur_sx, sec, "the blur output width") + 1
            lyr._next = (bo_h, bo_w, out_c, _mul(sec, "outputs", bo_h, bo_w, out_c))
            lyr.extras["antialiasing"] = antialiasing
        return lyr

    def parse_maxpool(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._pool(sec, p, index, "maxpool")

    def parse_avgpool(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        self._need_image(sec, p, "avgpool")
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, "avgpool", w=w, h=h, c=c, out_w=1, out_h=1, out_c=c, outputs=c)
        lyr.inputs = _mul(sec, "inputs", h, w, c)
        return lyr

    # -- routing -----------------------------------------------------------------------------------
    def _route_groups(self, sec: Section, lyr: DarknetLayer, index: int, outputs: int, first: DarknetLayer) -> int:
        """The fork's changes to a route layer after pjreddie's sizes; returns its outputs."""
        return outputs

    def parse_route(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        refs = self._refs(sec, "layers", index)
        ins = [self.layers[i] for i in refs]
        outputs = 0
        for lin in ins:
            outputs = _int(outputs + lin.outputs, sec, "outputs")
        first = ins[0]
        out_w, out_h, out_c = first.out_w, first.out_h, first.out_c
        for nxt in ins[1:]:
            if nxt.out_w == first.out_w and nxt.out_h == first.out_h:
                out_c = _int(out_c + nxt.out_c, sec, "out_c")
            else:
                out_h = out_w = out_c = 0
        lyr = self._new(sec, index, "route", out_w=out_w, out_h=out_h, out_c=out_c, input_layers=tuple(refs))
        lyr._n_any = len(refs)
        if any(nxt.out_w != first.out_w or nxt.out_h != first.out_h for nxt in ins[1:]):
            self.warnings.append(
                f"{sec.file}:{sec.line}: {sec.header} layer {index}: its input layers differ in "
                "width or height, so Darknet gives it no output size (0x0x0)"
            )
        outputs = self._route_groups(sec, lyr, index, outputs, first)
        lyr.inputs = lyr.outputs = outputs
        return lyr

    def parse_upsample(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        stride = sec.get_int("stride", 2)
        h, w, c = p["h"], p["w"], p["c"]
        out_w, out_h = _int(w * stride, sec, "out_w"), _int(h * stride, sec, "out_h")
        if stride < 0:
            out_w = _cdiv(w, -stride, sec, "w/stride")
            out_h = _cdiv(h, -stride, sec, "h/stride")
        lyr = self._new(sec, index, "upsample", w=w, h=h, c=c, out_w=out_w, out_h=out_h, out_c=c)
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = _mul(sec, "outputs", out_w, out_h, c)
        lyr.extras["stride"] = stride
        return lyr

    def _reorg_extra(self, sec: Section) -> int:
        """pjreddie's ``extra=`` (0 where the fork does not read it)."""
        return 0

    def _reorg_any(self, sec: Section, p: dict, index: int, type_: str) -> DarknetLayer:
        stride = sec.get_int("stride", 1)
        reverse = sec.get_int("reverse", 0)
        extra = self._reorg_extra(sec)
        self._need_image(sec, p, "reorg")
        h, w, c = p["h"], p["w"], p["c"]
        ss = _int(stride * stride, sec, "stride*stride")
        if reverse:
            out_w, out_h = _int(w * stride, sec, "out_w"), _int(h * stride, sec, "out_h")
            out_c = _cdiv(c, ss, sec, "c/(stride*stride)", "stride")
        else:
            out_w = _cdiv(w, stride, sec, "w/stride", "stride")
            out_h = _cdiv(h, stride, sec, "h/stride", "stride")
            out_c = _int(c * ss, sec, "out_c")
        lyr = self._new(sec, index, type_, w=w, h=h, c=c, out_w=out_w, out_h=out_h, out_c=out_c)
        lyr.inputs = _mul(sec, "inputs", h, w, c)
        lyr.outputs = _mul(sec, "outputs", out_h, out_w, out_c)
        lyr.extras["stride"] = stride
        if extra:
            lyr.out_w = lyr.out_h = lyr.out_c = 0
            lyr.outputs = _int(lyr.inputs + extra, sec, "outputs")
        return lyr

    def parse_reorg(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._reorg_any(sec, p, index, "reorg")

    # -- heads -------------------------------------------------------------------------------------
    def _mask_count(self, text: str) -> int:
        """The values of a ``mask=``-like list: its commas + 1."""
        return text.count(",") + 1

    def _yolo_extra(self, sec: Section, lyr: DarknetLayer, index: int, type_: str, classes: int, num: int) -> None:
        """The fork's checks and fields of a yolo layer beyond pjreddie's."""

    def _yolo_any(self, sec: Section, p: dict, index: int, type_: str, per: int) -> DarknetLayer:
        g = sec.get_int
        classes = g("classes", 20)
        total = g("num", 1)
        num = total
        mask = sec.get_str("mask")
        if mask is not None:
            num = self._mask_count(mask)
        h, w = p["h"], p["w"]
        c = _mul(sec, "c", num, classes + per)
        lyr = self._new(sec, index, type_, w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", h, w, num, classes + per)
        lyr._n_any = num
        lyr.extras.update(classes=classes, num=num, total=total)
        if lyr.outputs != p["inputs"]:
            raise sec.error(
                f"it outputs {w}x{h}x{num}*({classes}+{per}) = {lyr.outputs} values per image, the layer "
                f"before gives {p['inputs']}: filters= of the [convolutional] before it does not match "
                "classes= and mask= (Darknet exits)"
            )
        self._yolo_extra(sec, lyr, index, type_, classes, num)
        return lyr

    def parse_yolo(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._yolo_any(sec, p, index, "yolo", 5)

    def parse_region(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        coords, classes, num = g("coords", 4), g("classes", 20), g("num", 1)
        h, w = p["h"], p["w"]
        c = _mul(sec, "c", num, classes + coords + 1)
        lyr = self._new(sec, index, "region", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", h, w, num, classes + coords + 1)
        lyr._n_any = num
        if lyr.outputs != p["inputs"]:
            raise sec.error(
                f"it outputs {w}x{h}x{num}*({classes}+{coords}+1) = {lyr.outputs} values per image, the "
                f"layer before gives {p['inputs']}: filters= before it does not match classes=, coords= "
                "and num= (Darknet stops)"
            )
        return lyr

    def parse_detection(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        coords, classes, num, side = g("coords", 1), g("classes", 1), g("num", 1), g("side", 7)
        inputs = p["inputs"]
        need = _mul(sec, "side*side*((1+coords)*num+classes)", side, side, (1 + coords) * num + classes)
        if need != inputs:
            raise sec.error(
                f"side*side*((1+coords)*num+classes) = {need}, the layer before gives {inputs} values "
                "(Darknet asserts they are equal)"
            )
        lyr = self._new(sec, index, "detection", w=side, h=side, inputs=inputs, outputs=inputs)
        lyr._n_any = num
        return lyr

    # -- pass-through and loss layers --------------------------------------------------------------
    def _inputs_only(self, sec: Section, p: dict, index: int, type_: str) -> DarknetLayer:
        return self._new(sec, index, type_, inputs=p["inputs"], outputs=p["inputs"])

    def parse_cost(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ctype = sec.get_str("type", "sse")
        if ctype not in ("sse", "masked", "smooth", "L1", "seg", "wgan"):
            self.warnings.append(
                f"{sec.file}:{sec.line}: {sec.header} type={ctype}: unknown cost type, Darknet uses sse"
            )
        return self._inputs_only(sec, p, index, "cost")

    def parse_softmax(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        groups = sec.get_int("groups", 1)
        if _cmod(p["inputs"], groups, sec, "inputs % groups", "groups") != 0:
            raise sec.error(f"groups={groups} does not divide its {p['inputs']} inputs (Darknet asserts)", "groups")
        lyr = self._inputs_only(sec, p, index, "softmax")
        lyr.w, lyr.h, lyr.c = p["w"], p["h"], p["c"]
        return lyr

    def parse_dropout(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        lyr = self._inputs_only(sec, p, index, "dropout")
        lyr.out_w, lyr.out_h, lyr.out_c = p["w"], p["h"], p["c"]
        return lyr

    def _same(self, sec: Section, p: dict, index: int, type_: str, from_inputs: bool) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, type_, w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.inputs = lyr.outputs = p["inputs"] if from_inputs else _mul(sec, "outputs", h, w, c)
        return lyr

    def parse_normalization(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "normalization", False)

    def parse_active(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "active", True)

    def parse_crop(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ch, cw = sec.get_int("crop_height", 1), sec.get_int("crop_width", 1)
        self._need_image(sec, p, "crop")
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, "crop", w=w, h=h, c=c, out_w=cw, out_h=ch, out_c=c)
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = _mul(sec, "outputs", cw, ch, c)
        return lyr

    # -- recurrent ---------------------------------------------------------------------------------
    def _recurrent(self, sec: Section, p: dict, index: int, type_: str, parts: list, out_sizes: bool) -> DarknetLayer:
        bn = sec.get_int("batch_normalize", 0)
        # make_rnn_layer (both forks) leaves l.batch_normalize at 0; make_gru_layer and make_lstm_layer set it
        lyr = self._new(sec, index, type_, batch_normalize=0 if type_ == "rnn" else bn, inputs=p["inputs"])
        for name, nin, nout in parts:
            lyr.parts[name] = self._check(self._make_connected(sec, index, nin, nout, bn), sec)
        lyr.outputs = parts[-1][2] if type_ == "rnn" else parts[0][2]
        if out_sizes:
            lyr.out_w, lyr.out_h, lyr.out_c = 1, 1, lyr.outputs
        return lyr

    def _crnn_parts(self, sec: Section, q: dict, index: int, out_f: int, hid_f: int, kw: dict) -> tuple:
        """make_crnn_layer (both forks): the outer layer and its three convolutions (input, self, output).
        It leaves l.batch_normalize at 0: only the inner convolutions carry it."""
        lyr = self._new(sec, index, "crnn", batch_normalize=0, w=q["w"], h=q["h"], c=q["c"])
        parts = {}
        for name, cin, nout in (
            ("input_layer", q["c"], hid_f),
            ("self_layer", hid_f, hid_f),
            ("output_layer", hid_f, out_f),
        ):
            parts[name] = self._check(self._make_conv(sec, dict(q, c=cin), index, n=nout, **kw), sec)
        lyr.parts = parts
        lyr.inputs = _mul(sec, "inputs", q["h"], q["w"], q["c"])
        return lyr, parts


# ----------------------------------------------------------------------------------------------------
# pjreddie's Darknet


class PjreddieBuilder(Builder):
    """pjreddie/darknet's parser."""

    fork = "pjreddie"
    COMMON_KEYS = ("dontload", "dontloadscales", "dontsave", "numload")

    def parse_convolutional(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        n = g("filters", 1)
        size = g("size", 1)
        stride = g("stride", 1)
        pad = g("pad", 0)
        padding = g("padding", 0)
        groups = g("groups", 1)
        if pad:
            padding = _cdiv(size, 2, sec, "size/2")
        self._need_image(sec, p, "convolutional")
        bn = g("batch_normalize", 0)
        lyr = self._make_conv(
            sec, p, index, n=n, size=size, stride_x=stride, stride_y=stride, padding=padding, groups=groups, bn=bn
        )
        flipped = g("flipped", 0)
        if flipped and lyr.groups != 1:
            raise sec.error(
                "flipped=1 with groups: pjreddie transposes c*size*size x n values, more than the "
                "layer holds (Darknet writes out of bounds)",
                "flipped",
            )
        if flipped:
            lyr.extras["flipped"] = flipped
        return lyr

    def parse_shortcut(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        ref = self._from_one(sec, index)
        frm = self.layers[ref]
        lyr = self._new(
            sec, index, "shortcut", w=frm.out_w, h=frm.out_h, c=frm.out_c, out_w=w, out_h=h, out_c=c,
            input_layers=(ref,),
        )  # fmt: skip
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", w, h, c)
        return lyr

    def _reorg_extra(self, sec: Section) -> int:
        sec.get_int("flatten", 0)  # read (and range-checked) as Darknet does; it changes no size
        return sec.get_int("extra", 0)

    def parse_iseg(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        classes, ids = sec.get_int("classes", 20), sec.get_int("ids", 32)
        h, w = p["h"], p["w"]
        c = _int(classes + ids, sec, "c")
        lyr = self._new(sec, index, "iseg", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", h, w, c)
        if lyr.outputs != p["inputs"]:
            raise sec.error(f"it outputs {lyr.outputs} values, the layer before gives {p['inputs']} (Darknet asserts)")
        return lyr

    def parse_l2norm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "l2norm", True)

    def parse_logxent(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "logxent", True)

    def parse_rnn(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out = sec.get_int("output", 1)
        inputs = p["inputs"]
        parts = [("input_layer", inputs, out), ("self_layer", out, out), ("output_layer", out, out)]
        return self._recurrent(sec, p, index, "rnn", parts, False)

    def parse_gru(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out, inputs = sec.get_int("output", 1), p["inputs"]
        names = [("wz", out), ("wr", out), ("wh", out), ("uz", inputs), ("ur", inputs), ("uh", inputs)]
        return self._recurrent(sec, p, index, "gru", [(nm, nin, out) for nm, nin in names], False)

    def parse_lstm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out, inputs = sec.get_int("output", 1), p["inputs"]
        parts = [(nm, out if nm[0] == "w" else inputs, out) for nm in "wi wf wo wg ui uf uo ug".split()]
        return self._recurrent(sec, p, index, "lstm", parts, False)

    def parse_crnn(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        out_f, hid_f = g("output_filters", 1), g("hidden_filters", 1)
        bn = g("batch_normalize", 0)
        # pjreddie's parse_crnn passes (params.w, params.h) where make_crnn_layer takes (h, w)
        q = {"h": p["w"], "w": p["h"], "c": p["c"]}
        kw = dict(size=3, stride_x=1, stride_y=1, padding=1, groups=1, bn=bn)
        lyr, _ = self._crnn_parts(sec, q, index, out_f, hid_f, kw)
        lyr.out_h, lyr.out_w, lyr.out_c = q["h"], q["w"], out_f
        lyr.outputs = _mul(sec, "outputs", q["h"], q["w"], out_f)
        return lyr


# ----------------------------------------------------------------------------------------------------
# AlexeyAB's Darknet


class AlexeyABBuilder(Builder):
    """AlexeyAB/darknet's parser."""

    fork = "alexeyab"

    # -- [net] and the whole network -----------------------------------------------------------------
    def _net_batch(self, nb: int, time_steps: int) -> tuple[int, int]:
        time_steps = max(time_steps, 1)
        return max(nb, 1, time_steps), time_steps

    def after_build(self) -> list[str]:
        if any(lyr.w > 1 and lyr.h > 1 for lyr in self.layers):
            return []
        return [
            f"{self.cfg.name}: no layer is wider and taller than 1: AlexeyAB's parser divides by zero "
            "after building the layers (avg_outputs/avg_counter) and crashes; the sizes here are the "
            "ones it builds before that"
        ]

    # -- convolutional -----------------------------------------------------------------------------
    def _conv_groups(self, groups: int, xnor: int) -> int:
        return 1 if xnor or groups < 1 else groups

    def _conv_fields(self, lyr: DarknetLayer, stride_x: int, stride_y: int, dilation: int) -> None:
        lyr.stride_x, lyr.stride_y, lyr.dilation = stride_x, stride_y, dilation

    def _conv_options(self, sec: Section) -> dict:
        """size, stride, dilation and padding as AlexeyAB's parse_crnn and parse_conv_lstm read them
        (keywords of _make_conv)."""
        g = sec.get_int
        size, stride, dilation = g("size", 3), g("stride", 1), g("dilation", 1)
        padding = _padding(sec, size)
        return dict(size=size, stride_x=stride, stride_y=stride, padding=padding, dilation=dilation)

    def parse_convolutional(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        n = g("filters", 1)
        groups = g("groups", 1)
        size = g("size", 1)
        stride_x = g("stride_x", -1)
        stride_y = g("stride_y", -1)
        if stride_x < 1 or stride_y < 1:
            stride = g("stride", 1)
            if stride_x < 1:
                stride_x = stride
            if stride_y < 1:
                stride_y = stride
        dilation = g("dilation", 1)
        antialiasing = g("antialiasing", 0)
        if size == 1:
            dilation = 1
        padding = _padding(sec, size)
        share_index = g("share_index", -1000000000)
        share = None
        if share_index != -1000000000:
            share = self.layers[self._ref(sec, "share_index", share_index, index)]
            if share.type != "convolutional":
                raise sec.error(
                    f"share_index={share_index} refers to layer {share.index}, a {share.type} "
                    "layer, not a convolutional one",
                    "share_index",
                )
        self._need_image(sec, p, "convolutional")
        bn = g("batch_normalize", 0)
        if g("cbn", 0):
            bn = 2
        xnor = g("xnor", 0)
        deform = [g(k, 0) for k in ("sway", "rotate", "stretch", "stretch_sway")]
        if sum(deform) > 1:
            raise sec.error("only one of sway=1, rotate=1, stretch=1, stretch_sway=1 may be set (Darknet exits)")
        if any(deform) and size == 1:
            raise sec.error("sway/rotate/stretch need size >= 3 (Darknet exits)", "size")
        flipped = g("flipped", 0)
        lyr = self._make_conv(
            sec, p, index, n=n, size=size, stride_x=stride_x, stride_y=stride_y, padding=padding, groups=groups,
            bn=bn, dilation=dilation, antialiasing=antialiasing, xnor=xnor, share=share,
        )  # fmt: skip
        if flipped:
            lyr.extras["flipped"] = flipped
        return lyr

    def parse_implicit(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        filters, atoms = sec.get_int("filters", 128), sec.get_int("atoms", 1)
        lyr = self._new(sec, index, "implicit", w=1, h=1, c=1, out_w=1, out_h=atoms, out_c=filters, inputs=1)
        lyr.outputs = _mul(sec, "outputs", atoms, filters)
        lyr._shapes = {"weights": (lyr.outputs,)}
        return lyr

    # -- pooling -----------------------------------------------------------------------------------
    def _pool_strides(self, sec: Section) -> tuple[int, int, int]:
        stride = sec.get_int("stride", 1)
        return stride, sec.get_int("stride_x", stride), sec.get_int("stride_y", stride)

    def _pool_extra(self, sec: Section, type_: str) -> tuple[int, int, int]:
        if type_ != "maxpool":
            return 0, 0, 0
        g = sec.get_int
        return g("maxpool_depth", 0), g("out_channels", 1), g("antialiasing", 0)

    def parse_local_avgpool(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._pool(sec, p, index, "local_avgpool")

    # -- routing -----------------------------------------------------------------------------------
    def _route_groups(self, sec: Section, lyr: DarknetLayer, index: int, outputs: int, first: DarknetLayer) -> int:
        groups = sec.get_int("groups", 1)
        group_id = sec.get_int("group_id", 0)
        outputs = _cdiv(outputs, groups, sec, "outputs/groups", "groups")
        lyr.out_c = _cdiv(lyr.out_c, groups, sec, "out_c/groups", "groups")
        lyr.w, lyr.h, lyr.c = first.w, first.h, lyr.out_c
        lyr.extras.update(groups=groups, group_id=group_id)
        if groups > 1 and not 0 <= group_id < groups:
            self.warnings.append(
                f"{sec.file}:{sec.line}: {sec.header} layer {index}: group_id={group_id} is "
                f"not in 0..{groups - 1} (Darknet reads outside its input)"
            )
        return outputs

    def parse_shortcut(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        wt = sec.get_str("weights_type", "none")
        if wt in ("per_feature", "per_layer"):
            weights_type: str | None = "per_feature"
        elif wt == "per_channel":
            weights_type = "per_channel"
        elif wt == "none":
            weights_type = None
        else:
            raise sec.error(f"weights_type={wt}: use none, per_feature or per_channel (Darknet exits)", "weights_type")
        wn = sec.get_str("weights_normalization", "none")
        if wn not in ("relu", "avg_relu", "softmax") and wt != "none":
            raise sec.error(
                f"weights_normalization={wn} with weights_type={wt}: AlexeyAB's Darknet exits "
                "('Incorrect weights_normalization'); use relu or softmax",
                "weights_normalization",
            )
        refs = self._refs(sec, "from", index)
        lyr = self._new(sec, index, "shortcut", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c, input_layers=tuple(refs))
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", w, h, c)
        lyr._n_any = len(refs)
        if weights_type is not None:
            nw = len(refs) + 1 if weights_type == "per_feature" else _mul(sec, "nweights", len(refs) + 1, c)
            lyr._shapes = {"weights": (nw,)}
            lyr.extras["weights_type"] = weights_type
        for ref in refs:
            frm = self.layers[ref]
            if frm.out_w != w or frm.out_h != h:
                raise sec.error(
                    f"from layer {ref} outputs {frm.out_w}x{frm.out_h}x{frm.out_c} and the layer before "
                    f"outputs {w}x{h}x{c}: AlexeyAB's Darknet asserts that their width and height "
                    "match (it cannot add them)",
                    "from",
                )
        return lyr

    def parse_scale_channels(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ref = self._from_one(sec, index)
        scale_wh = sec.get_int("scale_wh", 0)
        frm = self.layers[ref]
        h, w, c = p["h"], p["w"], p["c"]
        if not scale_wh and not (w == 1 and h == 1):
            raise sec.error(f"its input is {w}x{h}x{c}; without scale_wh=1 it must be 1x1 (Darknet asserts)")
        if scale_wh and c != 1:
            raise sec.error(f"its input is {w}x{h}x{c}; with scale_wh=1 it must have 1 channel (Darknet asserts)")
        if not scale_wh and frm.out_c != c:
            raise sec.error(f"layer {ref} has {frm.out_c} channels, the input {c} (Darknet asserts they match)", "from")
        if scale_wh and (frm.out_w != w or frm.out_h != h):
            raise sec.error(f"layer {ref} is {frm.out_w}x{frm.out_h}, the input {w}x{h} (Darknet asserts)", "from")
        lyr = self._new(
            sec, index, "scale_channels", w=w, h=h, c=c, out_w=frm.out_w, out_h=frm.out_h, out_c=frm.out_c,
            input_layers=(ref,),
        )  # fmt: skip
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", frm.out_w, frm.out_h, frm.out_c)
        return lyr

    def parse_sam(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ref = self._from_one(sec, index)
        frm = self.layers[ref]
        h, w, c = p["h"], p["w"], p["c"]
        if frm.out_c != c or frm.out_w != w or frm.out_h != h:
            raise sec.error(
                f"layer {ref} outputs {frm.out_w}x{frm.out_h}x{frm.out_c}, the input is {w}x{h}x{c}: "
                "Darknet asserts they are equal",
                "from",
            )
        lyr = self._new(sec, index, "sam", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c, input_layers=(ref,))
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", w, h, c)
        return lyr

    def parse_reorg_old(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._reorg_any(sec, p, index, "reorg_old")

    def parse_empty(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "empty", True)

    # -- heads -------------------------------------------------------------------------------------
    def _mask_count(self, text: str) -> int:
        """AlexeyAB's count stops at a '#'."""
        return text.split("#", 1)[0].count(",") + 1

    def _yolo_extra(self, sec: Section, lyr: DarknetLayer, index: int, type_: str, classes: int, num: int) -> None:
        cpc = sec.get_str("counters_per_class")
        if cpc is not None and self._mask_count(cpc) != classes:
            raise sec.error(
                f"counters_per_class has {self._mask_count(cpc)} values, classes={classes} (Darknet exits)",
                "counters_per_class",
            )
        if type_ == "yolo":
            eid = sec.get_int("embedding_layer", 999999)
            if eid != 999999:
                le = self.layers[self._ref(sec, "embedding_layer", eid, index)]
                lyr.extras["embedding_layer"] = le.index
                lyr.extras["embedding_size"] = _cdiv(le._n_any, num, sec, "embedding size (filters/anchors)")

    def parse_gaussian_yolo(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._yolo_any(sec, p, index, "gaussian_yolo", 9)

    def parse_contrastive(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        g("classes", 1000)
        yid = g("yolo_layer", 0)
        if (yid + index if yid < 0 else yid) == 0:
            raise sec.error(
                "yolo_layer= must point to a [yolo] layer (Darknet dereferences NULL without it)", "yolo_layer"
            )
        yl = self.layers[self._ref(sec, "yolo_layer", yid, index)]
        if yl.type != "yolo":
            raise sec.error(
                f"yolo_layer refers to layer {yid}, which is not a [yolo] layer (Darknet exits)", "yolo_layer"
            )
        h, w, c, inputs = p["h"], p["w"], p["c"], p["inputs"]
        emb = _cdiv(inputs, _mul(sec, "n*h*w", yl._n_any, h, w), sec, "inputs/(anchors*h*w)")
        if emb != yl.extras.get("embedding_size", 0):
            raise sec.error(
                f"embedding size {emb} differs from the [yolo] layer's "
                f"{yl.extras.get('embedding_size', 0)} (Darknet exits)",
                "yolo_layer",
            )
        lyr = self._new(
            sec, index, "contrastive", w=w, h=h, c=c, inputs=inputs, outputs=inputs, input_layers=(yl.index,)
        )
        lyr._n_any = yl._n_any
        return lyr

    # -- recurrent ---------------------------------------------------------------------------------
    def parse_rnn(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out = sec.get_int("output", 1)
        inputs = p["inputs"]
        hidden = sec.get_int("hidden", 1)
        parts = [("input_layer", inputs, hidden), ("self_layer", hidden, hidden), ("output_layer", hidden, out)]
        return self._recurrent(sec, p, index, "rnn", parts, True)

    def parse_gru(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out, inputs = sec.get_int("output", 1), p["inputs"]
        names = [
            ("input_z_layer", inputs), ("input_r_layer", inputs), ("input_h_layer", inputs),
            ("state_z_layer", out), ("state_r_layer", out), ("state_h_layer", out),
        ]  # fmt: skip
        return self._recurrent(sec, p, index, "gru", [(nm, nin, out) for nm, nin in names], False)

    def parse_lstm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out, inputs = sec.get_int("output", 1), p["inputs"]
        parts = [(nm, out if nm[0] == "w" else inputs, out) for nm in "wf wi wg wo uf ui ug uo".split()]
        return self._recurrent(sec, p, index, "lstm", parts, True)

    def parse_crnn(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        conv = self._conv_options(sec)
        out_f, hid_f = g("output", 1), g("hidden", 1)
        groups, bn, xnor = g("groups", 1), g("batch_normalize", 0), g("xnor", 0)
        q = {"h": p["h"], "w": p["w"], "c": p["c"]}
        kw = dict(conv, groups=groups, bn=bn, xnor=xnor)
        lyr, parts = self._crnn_parts(sec, q, index, out_f, hid_f, kw)
        o = parts["output_layer"]
        lyr.out_h, lyr.out_w, lyr.out_c, lyr.outputs = o.out_h, o.out_w, out_f, o.outputs
        if parts["input_layer"].outputs != parts["self_layer"].outputs or parts["input_layer"].outputs != o.inputs:
            raise sec.error(
                f"its convolutions give {parts['input_layer'].out_w}x{parts['input_layer'].out_h} "
                f"from {q['w']}x{q['h']}: the hidden state does not keep its size (Darknet asserts); "
                "use pad=1 and stride=1"
            )
        return lyr

    def parse_conv_lstm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        """AlexeyAB's parse_conv_lstm + make_conv_lstm_layer: convolutions uf ui ug uo (c -> output),
        wf wi wg wo (output -> output; with bottleneck=1 only wf, from 2*output), vf vi vo with
        peephole=1; the outer layer keeps the input size, batch_normalize, and uo's output size."""
        g = sec.get_int
        conv = self._conv_options(sec)
        out_f, groups = g("output", 1), g("groups", 1)
        bn, xnor = g("batch_normalize", 0), g("xnor", 0)
        peephole, bottleneck = g("peephole", 0), g("bottleneck", 0)
        h, w, c = p["h"], p["w"], p["c"]
        kw = dict(conv, groups=groups, bn=bn, xnor=xnor)
        parts = {}
        for name in ("uf", "ui", "ug", "uo"):
            parts[name] = self._check(self._make_conv(sec, p, index, n=out_f, **kw), sec)
        hidden = {"h": h, "w": w, "c": out_f}
        if bottleneck:
            c2 = _int(2 * out_f, sec, "2*output")
            parts["wf"] = self._check(self._make_conv(sec, dict(hidden, c=c2), index, n=out_f, **kw), sec)
        else:
            for name in ("wf", "wi", "wg", "wo"):
                parts[name] = self._check(self._make_conv(sec, hidden, index, n=out_f, **kw), sec)
        if peephole:
            for name in ("vf", "vi", "vo"):
                parts[name] = self._check(self._make_conv(sec, hidden, index, n=out_f, **kw), sec)
        uo = parts["uo"]
        lyr = self._new(
            sec, index, "conv_lstm", batch_normalize=bn, w=w, h=h, c=c, out_w=uo.out_w, out_h=uo.out_h, out_c=out_f
        )
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = uo.outputs
        lyr.parts = parts
        if (uo.out_w, uo.out_h) != (w, h):  # Darknet builds it (its asserts compare w* with u*, equal here)
            self.warnings.append(
                f"{sec.file}:{sec.line}: {sec.header} layer {index}: its convolutions give "
                f"{uo.out_w}x{uo.out_h} from {w}x{h}, but Darknet's forward feeds the "
                f"{uo.out_w}x{uo.out_h} state to convolutions built for {w}x{h} (it reads past "
                "the state); use pad=1 and stride=1"
            )
        return lyr


BUILDERS: dict[str, type[Builder]] = {"pjreddie": PjreddieBuilder, "alexeyab": AlexeyABBuilder}

# Layer types whose shapes darknet_bn builds, per fork (the builder's parse_<type> methods). Other types the
# fork knows raise DarknetCfgError("not supported").
SUPPORTED_TYPES: dict[str, frozenset] = {fork: cls.supported_types() for fork, cls in BUILDERS.items()}


def load_network(
    cfg: str | bytes | os.PathLike | CfgFile,
    weights: str | os.PathLike | None = None,
    *,
    batch: int | None = 1,
    flavor: str | Flavor | None = None,
    fork: str | None = None,
    allow_trailing: bool = False,
) -> Network:
    """Build a Darknet network from a cfg (and fill it from a ``.weights`` file).

    Args:
        cfg: a path, cfg text or a parsed :class:`~darknet_bn.darknet.cfg.CfgFile` (see
            :func:`darknet_bn.darknet.cfg.parse_cfg` for how a ``str`` is told apart).
        weights: a ``.weights`` file, or ``None`` (Darknet's initial values where parameters are needed).
        batch: images per batch (>= 1) every layer sees, as Darknet's ``load_network_custom`` (time
            steps 1); ``None``: the cfg's own, ``batch/subdivisions*time_steps``.
        flavor: the flavor of the BN layers, ``"pjreddie"``, ``"alexeyab"``, ``"torch"`` or a
            :class:`~darknet_bn.flavors.Flavor`; without ``fork``, also whose rules read the cfg
            (:attr:`Flavor.fork <darknet_bn.flavors.Flavor.fork>`: pjreddie's for ``"pjreddie"``, else
            AlexeyAB's). ``None``: the flavor of the fork whose rules are used.
        fork: ``"pjreddie"`` or ``"alexeyab"``: whose rules read the cfg (wins over ``flavor``).
            With neither, the fork is detected from the cfg: a section, key or value only AlexeyAB's
            parser reads means AlexeyAB's rules, else pjreddie's (:func:`darknet_bn.darknet.cfg.detect_fork`).
            ``Network.rules`` says which and why. Keys the fork ignores give a
            :class:`~darknet_bn.darknet.cfg.DarknetCfgWarning` naming file, line and key.
        allow_trailing: accept bytes after the last array of the weights file.

    Returns:
        A :class:`~darknet_bn.darknet.model.Network`: ``.layers``, ``.bn_layers``, ``.save_weights(path)``.

    Raises:
        DarknetCfgError: a cfg the fork cannot build (names file, line and problem).
        DarknetWeightsError: a weights file that does not match the cfg.
        OSError: a file that cannot be read.
    """
    cfgf = parse_cfg(cfg, flavor=flavor, fork=fork)
    fl = get_flavor(flavor if flavor is not None else cfgf.fork)
    warnings = list(cfgf.warnings)
    builder = BUILDERS[cfgf.fork](cfgf, fl.init_rolling_variance)
    nb, ts, w, h, c, inputs = builder.net_options(batch)
    if not cfgf.sections:
        raise DarknetCfgError(cfgf.name, None, "no layers after [net] (Darknet reads outside its layer array)")
    layers = builder.build({"h": h, "w": w, "c": c, "inputs": inputs})
    warnings.extend(builder.warnings)
    warnings.extend(w_ for w_ in cfgf.warnings if w_ not in warnings)  # lossy numbers found while building
    warnings.extend(builder.after_build())
    net = Network(cfgf, fl, nb, ts, w, h, c, inputs, layers, warnings)
    for bn in net.bn_layers:
        if min(bn.c, bn.h, bn.w) < 1:
            raise DarknetCfgError(
                cfgf.name,
                bn.host.line,
                f"{bn.host.header} layer {bn.name}: batch normalization over an empty tensor "
                f"(c={bn.c}, h={bn.h}, w={bn.w})",
            )
    if weights is not None:
        net.load_weights(weights, allow_trailing=allow_trailing)
    return net
