"""A Darknet network from its ``.cfg`` (and ``.weights``): the layers' sizes as each fork builds them,
the batch-normalization layers with their trained parameters, and the weights written back.

``load_network(cfg, weights=None, *, batch=1, flavor=None, fork=None)`` follows one fork's rules:
``fork=`` if given, else the flavor's (``"pjreddie"`` -> pjreddie's Darknet, ``"alexeyab"`` and
``"torch"`` -> AlexeyAB's), else the fork detected from the cfg (a section, key or value only AlexeyAB's
parser reads means AlexeyAB's; see :func:`darknet_bn.darknet.cfg.detect_fork`); ``Network.rules`` says which and
why. It follows that fork's section
types, the keys it reads, its ``make_*_layer`` size formulas and its ``.weights`` layout. Where the
fork's own parser crashes on a cfg while *building* layers (a division by zero, a failed assert, an
out-of-range layer reference), :class:`~darknet_bn.darknet.cfg.DarknetCfgError` is raised naming the line.
Where it crashes only after the layers are built (AlexeyAB divides by zero when no layer is wider
and taller than 1, e.g. its rnn/gru/lstm cfgs), the network is returned, with a warning.

Sizes are Darknet's own fields, with its C ``int`` arithmetic (division truncates toward zero):
``w, h, c`` the input a layer stores, ``out_w, out_h, out_c`` its output, ``inputs, outputs`` the
values per image. A size Darknet never sets on a layer type stays 0, as in Darknet (the input of a
``dropout``, the output of a ``softmax``, every size of pjreddie's recurrent layers); the next layer
reads Darknet's values too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .cfg import INT_MAX, INT_MIN, CfgFile, DarknetCfgError, Section, c_atoi, parse_cfg
from ..flavors import Flavor, get_flavor
from .weights import ArraySpec, WeightsHeader, read_weights, write_weights

__all__ = ["DarknetLayer", "BNLayer", "Network", "load_network", "SUPPORTED_TYPES"]

# Layer types whose shapes this module infers (per fork). Others known to the fork raise
# DarknetCfgError("not supported").
SUPPORTED_TYPES = {
    "pjreddie": frozenset("convolutional connected batchnorm maxpool avgpool route shortcut upsample reorg "
                          "yolo region detection cost softmax dropout crop local normalization active "
                          "l2norm logxent iseg rnn gru lstm crnn".split()),
    "alexeyab": frozenset("convolutional connected batchnorm maxpool local_avgpool avgpool route shortcut "
                          "scale_channels sam upsample reorg reorg_old yolo gaussian_yolo region detection "
                          "cost softmax contrastive dropout crop local normalization active empty implicit "
                          "rnn gru lstm crnn conv_lstm".split()),
}

_BN_ARRAYS = ("scales", "rolling_mean", "rolling_variance")


@dataclass(eq=False)
class DarknetLayer:
    """One layer (one cfg section after ``[net]``) as the fork's parser builds it.

    Attributes:
        index: position after ``[net]`` (0-based), as in Darknet's printout.
        type: the fork's layer type, lower-cased (``"convolutional"``, ``"maxpool"``, ``"reorg_old"``...).
        header: the section header as written (``"[conv]"``); line: its line in the cfg.
        batch_normalize: the ``batch_normalize`` flag as Darknet stores it (0 for ``[batchnorm]``).
        w, h, c: the input size the layer stores; out_w, out_h, out_c: its output size (0 where
            Darknet does not set them); inputs, outputs: values per image.
        n, size, stride, pad, groups: convolutional layers only (filters, kernel, stride, padding in
            pixels, groups); ``None`` otherwise. stride_x, stride_y, dilation: AlexeyAB's convolutional.
        input_layers: the layers a route/shortcut/scale_channels/sam/... reads (absolute indices).
        parts: the inner layers of ``rnn``/``gru``/``lstm``/``crnn``/``conv_lstm`` by Darknet's names
            (``"input_layer"``, ``"uz"``...), each a :class:`DarknetLayer` (connected or convolutional)
            with its own ``batch_normalize``: the inner layers carry the batch normalization. The outer
            layer's own flag is Darknet's: 0 for ``rnn`` and ``crnn`` (make_rnn_layer/make_crnn_layer
            never set it), the cfg's value for ``gru``, ``lstm`` and ``conv_lstm``.
        arrays: the parameters, float32, in Darknet's memory layout: ``biases`` (n,) or (outputs,);
            ``weights`` (n, c/groups, size, size) for convolutional, (outputs, inputs) for connected;
            ``scales``, ``rolling_mean``, ``rolling_variance`` (n,) with batch normalization. Filled
            by a ``.weights`` file; missing arrays take Darknet's initial values when needed
            (:meth:`array`).
        extras: other facts (``share_index``, ``flipped``, ``dontload``, ``embedding_size``...).
    """

    index: int
    type: str
    header: str
    line: int
    batch_normalize: int = 0
    w: int = 0
    h: int = 0
    c: int = 0
    out_w: int = 0
    out_h: int = 0
    out_c: int = 0
    inputs: int = 0
    outputs: int = 0
    n: int | None = None
    size: int | None = None
    stride: int | None = None
    pad: int | None = None
    groups: int | None = None
    stride_x: int | None = None
    stride_y: int | None = None
    dilation: int | None = None
    input_layers: tuple = ()
    parts: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    # Darknet's l.n for layer types other than convolutional (route: inputs, yolo: anchors...), read by
    # [yolo] embedding_layer=; and the sizes the next layer reads (antialiasing changes them).
    _n_any: int = 0
    _next: tuple | None = None
    _shapes: dict = field(default_factory=dict, repr=False)
    _init_rv: float = 0.0

    # -- parameters --------------------------------------------------------------------------------
    def array_shape(self, name: str) -> tuple:
        """The memory shape of parameter ``name`` (see :attr:`arrays`)."""
        return self._shapes[name]

    def array_names(self) -> tuple:
        """The parameters this layer has (biases, scales..., weights), in no particular order."""
        return tuple(self._shapes)

    def array(self, name: str) -> np.ndarray:
        """Parameter ``name``: the loaded array, else Darknet's initial value (weights 0 -- Darknet draws
        random ones --, biases 0, scales 1, rolling_mean 0, rolling_variance 0 (1 for torch)), created
        and kept on first use."""
        a = self.arrays.get(name)
        if a is None:
            shape = self._shapes[name]
            fill = {"scales": 1.0, "rolling_variance": self._init_rv}.get(name, 0.0)
            a = np.full(shape, fill, dtype=np.float32)
            self.arrays[name] = a
        return a

    @property
    def weights(self) -> np.ndarray | None:
        """``arrays["weights"]`` (None when the layer has none or nothing was loaded)."""
        return self.arrays.get("weights")

    @property
    def biases(self) -> np.ndarray | None:
        """``arrays["biases"]`` (None when the layer has none or nothing was loaded)."""
        return self.arrays.get("biases")

    def row(self) -> dict:
        """The layer as a row of Darknet's layer table: index, type, batch_normalize, w, h, c, out_w,
        out_h, out_c, n, size, stride, pad, groups (None off convolutional layers), and AlexeyAB's
        stride_x, stride_y, dilation."""
        return {k: getattr(self, k) for k in ("index", "type", "batch_normalize", "w", "h", "c", "out_w", "out_h",
                                              "out_c", "n", "size", "stride", "pad", "groups", "stride_x",
                                              "stride_y", "dilation")}


class BNLayer:
    """A layer that carries batch normalization: a ``[batchnorm]`` section, a convolutional or connected
    layer with ``batch_normalize=1``, or such an inner layer of ``rnn``/``gru``/``lstm``/``crnn``.

    Attributes:
        index: the network layer's index; type: its type (``"convolutional"``, ``"batchnorm"``,
            ``"rnn"``...); part: the inner layer's name for recurrent layers (``None`` otherwise).
        batch, c, h, w: the normalized tensor's shape (convolutional: its output; connected: w = h = 1,
            c = outputs; ``[batchnorm]``: its input).
        host: the :class:`DarknetLayer` holding the parameters.
        layer: a :class:`~darknet_bn.layer.Layer` of that shape and the network's flavor, with
            ``scales``, ``biases``, ``rolling_mean``, ``rolling_variance`` from the weights (Darknet's
            initial values without weights). Made on first access (its buffers hold batch*c*h*w floats
            twice); from then on the host's arrays *are* the layer's, so changes to ``layer.scales``
            are what :meth:`Network.save_weights` writes.
    """

    def __init__(self, index: int, type: str, part: str | None, host: DarknetLayer, batch: int, c: int, h: int,
                 w: int, flavor: Flavor) -> None:
        self.index, self.type, self.part, self.host = index, type, part, host
        self.batch, self.c, self.h, self.w = batch, c, h, w
        self.flavor = flavor
        self._layer = None

    @property
    def shape(self) -> tuple:
        """(batch, c, h, w)."""
        return (self.batch, self.c, self.h, self.w)

    @property
    def layer(self):
        if self._layer is None:
            from ..layer import Layer

            lyr = Layer(self.batch, self.w, self.h, self.c, self.flavor)
            for name in ("scales", "biases", "rolling_mean", "rolling_variance"):
                getattr(lyr, name)[:] = self.host.array(name).reshape(-1)
                self.host.arrays[name] = getattr(lyr, name)
            self._layer = lyr
        return self._layer

    def _param(self, name: str) -> np.ndarray:
        return getattr(self._layer, name) if self._layer is not None else self.host.array(name)

    scales = property(lambda self: self._param("scales"), doc="float32 (c,): gamma.")
    biases = property(lambda self: self._param("biases"), doc="float32 (c,): beta.")
    rolling_mean = property(lambda self: self._param("rolling_mean"), doc="float32 (c,).")
    rolling_variance = property(lambda self: self._param("rolling_variance"), doc="float32 (c,).")

    @property
    def name(self) -> str:
        """``"12 convolutional"`` or ``"3 rnn.input_layer"``."""
        return f"{self.index} {self.type}" + (f".{self.part}" if self.part else "")

    def __repr__(self) -> str:
        return f"BNLayer({self.name}, batch={self.batch}, c={self.c}, h={self.h}, w={self.w})"


class Network:
    """A network built from a cfg by one fork's rules (see :func:`load_network`).

    Attributes:
        cfg: the parsed :class:`~darknet_bn.darknet.cfg.CfgFile`; name: its name.
        flavor: the :class:`~darknet_bn.flavors.Flavor` of the BN layers; fork: ``"pjreddie"`` or
            ``"alexeyab"``, whose file rules are followed; rules: which and why (asked for, or the line
            of the cfg that decided the detection).
        batch: the batch every layer sees; time_steps: the recurrent layers' steps (1 when a batch is
            given, as AlexeyAB's ``load_network_custom``).
        w, h, c, inputs: the ``[net]`` input.
        layers: one :class:`DarknetLayer` per section after ``[net]``.
        bn_layers: the :class:`BNLayer` entries, in file order.
        header: the loaded file's :class:`~darknet_bn.darknet.weights.WeightsHeader` (``None`` without weights).
        weights_file: the loaded file's name, or ``None``; weights_trailing: bytes after its last array
            (0 unless ``allow_trailing``).
        warnings: the cfg's warnings, then the network's.
    """

    def __init__(self, cfg: CfgFile, flavor: Flavor, batch: int, time_steps: int, w: int, h: int, c: int,
                 inputs: int, layers: list, warnings: list) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.flavor = flavor
        self.fork = cfg.fork
        self.rules = cfg.rules
        self.batch, self.time_steps = batch, time_steps
        self.w, self.h, self.c, self.inputs = w, h, c, inputs
        self.layers: list[DarknetLayer] = layers
        self.warnings: list[str] = warnings
        self.header: WeightsHeader | None = None
        self.weights_file: str | None = None
        self.weights_trailing = 0
        self.bn_layers: list[BNLayer] = list(self._bn_entries())

    def __repr__(self) -> str:
        return (f"Network({self.name!r}, fork={self.fork!r}, {len(self.layers)} layers, "
                f"{len(self.bn_layers)} BN layers, batch={self.batch})")

    def _bn_entries(self) -> Iterator[BNLayer]:
        step_batch = self.batch // self.time_steps if self.time_steps else self.batch
        for lyr in self.layers:
            if lyr.type == "batchnorm":
                yield BNLayer(lyr.index, lyr.type, None, lyr, self.batch, lyr.c, lyr.h, lyr.w, self.flavor)
            elif lyr.type in ("convolutional", "connected"):
                if lyr.batch_normalize:
                    yield BNLayer(lyr.index, lyr.type, None, lyr, self.batch, lyr.out_c, lyr.out_h, lyr.out_w,
                                  self.flavor)
            for pname, part in lyr.parts.items():
                if part.batch_normalize:
                    yield BNLayer(lyr.index, lyr.type, pname, part, step_batch, part.out_c, part.out_h, part.out_w,
                                  self.flavor)

    # -- the weights file ------------------------------------------------------------------------------
    def _layer_arrays(self, lyr: DarknetLayer, write: bool) -> Iterator[tuple]:
        """(host layer, array name, count, file-transform) in the fork's file order for one layer."""
        fork = self.fork
        if not write and lyr.extras.get("dontload"):
            return
        if write and fork == "pjreddie" and lyr.extras.get("dontsave"):
            return
        skip_scales = (not write) and bool(lyr.extras.get("dontloadscales"))
        t = lyr.type
        if t == "convolutional":
            if lyr.extras.get("share_index") is not None:
                return
            yield from self._conv_arrays(lyr, skip_scales, write, numload=lyr.extras.get("numload", 0))
        elif t == "connected":
            yield from self._connected_arrays(lyr, skip_scales)
        elif t == "batchnorm":
            if fork == "alexeyab":
                yield lyr, "biases", lyr.c, None
            for name in _BN_ARRAYS:
                yield lyr, name, lyr.c, None
        elif t == "local":
            yield lyr, "biases", lyr.outputs, None
            yield lyr, "weights", int(np.prod(lyr.array_shape("weights"))), None
        elif t in ("shortcut", "implicit"):
            if "weights" in lyr._shapes:
                yield lyr, "weights", int(np.prod(lyr.array_shape("weights"))), None
        elif t == "crnn":
            for part in lyr.parts.values():
                yield from self._conv_arrays(part, False, write, 0)
        elif t in ("rnn", "gru", "lstm"):
            for part in lyr.parts.values():
                yield from self._connected_arrays(part, False)
        elif t == "conv_lstm":  # AlexeyAB's load_weights: [vf vi vo if peephole] wf [wi wg wo] uf ui ug uo
            order = ("vf", "vi", "vo", "wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")
            for name in order:
                if name in lyr.parts:
                    yield from self._conv_arrays(lyr.parts[name], False, write, 0)

    def _conv_arrays(self, lyr: DarknetLayer, skip_scales: bool, write: bool, numload: int) -> Iterator[tuple]:
        n = lyr.n if (write or not numload) else numload
        yield lyr, "biases", n, "prefix" if n != lyr.n else None
        if lyr.batch_normalize and not skip_scales:
            for name in _BN_ARRAYS:
                yield lyr, name, n, "prefix" if n != lyr.n else None
        per = int(np.prod(lyr.array_shape("weights")[1:]))
        tr = "flipped" if lyr.extras.get("flipped") else None
        if n != lyr.n:
            tr = "prefix"
        yield lyr, "weights", per * n, tr

    def _connected_arrays(self, lyr: DarknetLayer, skip_scales: bool) -> Iterator[tuple]:
        yield lyr, "biases", lyr.outputs, None
        yield lyr, "weights", lyr.outputs * lyr.inputs, "transpose"
        if lyr.batch_normalize and not skip_scales:
            for name in _BN_ARRAYS:
                yield lyr, name, lyr.outputs, None

    def _layout(self, write: bool) -> list:
        out = []
        for lyr in self.layers:
            for host, name, count, tr in self._layer_arrays(lyr, write):
                part = next((p for p, v in lyr.parts.items() if v is host), None)
                aname = f"{part}.{name}" if part else name
                out.append((ArraySpec((id(host), name), lyr.index, lyr.type, aname, count), host, name, tr))
        return out

    def weights_layout(self, *, write: bool = False) -> list:
        """The arrays of this network's ``.weights`` file in file order, as
        :class:`~darknet_bn.darknet.weights.ArraySpec` (layer, type, name, count); ``write=True`` gives what
        :meth:`save_weights` writes (pjreddie's ``dontsave=1`` layers are left out; ``dontload=1``,
        ``dontloadscales=1`` and ``numload=`` only change what is read)."""
        return [spec for spec, *_ in self._layout(write)]

    def weights_bytes(self, header: WeightsHeader | None = None) -> int:
        """The size of this network's ``.weights`` file with ``header`` (default: the loaded one, else
        the fork's)."""
        header = header or self.header or WeightsHeader.for_fork(self.fork)
        return header.nbytes + sum(s.nbytes for s in self.weights_layout())

    def load_weights(self, path: str | os.PathLike, *, allow_trailing: bool = False) -> WeightsHeader:
        """Fill every layer's arrays from a ``.weights`` file, by the fork's layout (see
        :mod:`darknet_bn.darknet.weights`). Raises DarknetWeightsError (short file, trailing bytes) or OSError."""
        layout = self._layout(write=False)
        fname = os.fspath(path)
        data = read_weights(path, [spec for spec, *_ in layout], fork=self.fork, allow_trailing=allow_trailing)
        for spec, host, name, tr in layout:
            a = data.arrays[spec.key]
            shape = host.array_shape(name)
            if tr == "transpose" and data.header.transpose:
                a = np.ascontiguousarray(a.reshape(host.inputs, host.outputs).T)
            elif tr == "flipped":
                a = np.ascontiguousarray(a.reshape(-1, host.n).T)
            elif tr == "prefix":
                full = host.array(name).reshape(-1)
                full[:a.size] = a
                a = full
            host.arrays[name] = a.reshape(shape)
        for bn in self.bn_layers:
            if bn._layer is not None:  # refresh Layers made before this load
                for name in ("scales", "biases", "rolling_mean", "rolling_variance"):
                    src = bn.host.arrays.get(name)
                    if src is not None and src is not getattr(bn._layer, name):
                        getattr(bn._layer, name)[:] = src.reshape(-1)
                        bn.host.arrays[name] = getattr(bn._layer, name)
        self.header = data.header
        self.weights_file = fname
        self.weights_trailing = data.trailing
        return data.header

    def save_weights(self, path: str | os.PathLike, *, header: WeightsHeader | None = None) -> int:
        """Write this network's ``.weights`` file: ``header`` (default: the loaded file's, else the
        fork's own, seen = 0), then every array in the fork's order. Arrays never loaded are written
        with Darknet's initial values (weights 0). A file read then written is byte-identical (the
        header is kept, transposed connected weights are transposed back). Returns the bytes written."""
        header = header or self.header or WeightsHeader.for_fork(self.fork)
        layout = self._layout(write=True)
        arrays = {}
        for spec, host, name, tr in layout:
            a = host.array(name)
            if tr == "transpose" and header.transpose:
                a = a.reshape(host.outputs, host.inputs).T
            elif tr == "flipped":
                a = a.reshape(host.n, -1).T
            arrays[spec.key] = a
        return write_weights(path, header, [spec for spec, *_ in layout], arrays)

    # -- printing ------------------------------------------------------------------------------------
    def table(self) -> list:
        """The layers as rows (see :meth:`DarknetLayer.row`)."""
        return [lyr.row() for lyr in self.layers]


# ====================================================================================================
# Building

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


class _Builder:
    """Builds the layers of a cfg by one fork's rules (parse_network_cfg and the make_*_layer)."""

    def __init__(self, cfg: CfgFile, init_rv: float) -> None:
        self.cfg = cfg
        self.fork = cfg.fork
        self.layers: list[DarknetLayer] = []
        self.warnings: list[str] = []
        self.init_rv = init_rv

    # -- helpers -----------------------------------------------------------------------------------
    def _ref(self, sec: Section, key: str, value: int, index: int) -> int:
        """A layer reference as Darknet resolves it (negative: relative); must be an earlier layer."""
        idx = value + index if value < 0 else value
        if not 0 <= idx < index:
            raise sec.error(f"{key}={value} refers to layer {idx}, which is not a layer before this one "
                            f"(0..{index - 1}); Darknet reads outside its layer array", key)
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

    def _need_image(self, sec: Section, p: dict, what: str) -> None:
        if not (p["h"] and p["w"] and p["c"]):
            raise sec.error(f"the layer before it must output an image (it gives {p['w']}x{p['h']}x{p['c']}); "
                            f"Darknet: 'Layer before {what} layer must output image.'")

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

    # -- layers ------------------------------------------------------------------------------------
    def conv(self, sec: Section, p: dict, index: int, *, n: int, size: int, stride_x: int, stride_y: int,
             padding: int, groups: int, bn: int, dilation: int = 1, antialiasing: int = 0, xnor: int = 0,
             share: DarknetLayer | None = None, type_: str = "convolutional") -> DarknetLayer:
        """make_convolutional_layer of the fork (sizes and parameter shapes)."""
        h, w, c = p["h"], p["w"], p["c"]
        if self.fork == "alexeyab":
            if xnor:
                groups = 1
            if groups < 1:
                groups = 1
        blur_sx, blur_sy = stride_x, stride_y
        if antialiasing:
            stride_x = stride_y = 1
        cg = _cdiv(c, groups, sec, "c/groups", "groups")
        nweights = _mul(sec, "nweights", cg, n, size, size)
        out_h = _cdiv(_int(h + 2 * padding - size, sec, "h + 2*pad - size"), stride_y, sec, "the output height",
                      "stride") + 1
        out_w = _cdiv(_int(w + 2 * padding - size, sec, "w + 2*pad - size"), stride_x, sec, "the output width",
                      "stride") + 1
        lyr = self._new(sec, index, type_, batch_normalize=bn, w=w, h=h, c=c, out_w=out_w, out_h=out_h, out_c=n,
                        n=n, size=size, stride=stride_x, pad=padding, groups=groups)
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = _mul(sec, "outputs", out_h, out_w, n)
        lyr._n_any = n
        if self.fork == "alexeyab":
            lyr.stride_x, lyr.stride_y, lyr.dilation = stride_x, stride_y, dilation
        if share is not None:
            if share.size != size or share._shapes.get("weights") is None or \
                    int(np.prod(share._shapes["weights"])) != nweights or share.c != c or share.n != n:
                raise sec.error(f"share_index: layer {share.index} has another size, channel count or filter "
                                "count (Darknet: 'Layer size, nweights, channels or filters don't match')",
                                "share_index")
            lyr.arrays = share.arrays
            lyr.extras["share_index"] = share.index
        lyr._shapes = {"biases": (n,), "weights": (n, cg, size, size)}
        if bn:
            lyr._shapes.update({k: (n,) for k in _BN_ARRAYS})
        if antialiasing:
            blur_size, blur_pad = (2, 0) if antialiasing == 2 else (3, 1)
            bo_h = _cdiv(out_h + 2 * blur_pad - blur_size, blur_sy, sec, "the blur output height") + 1
            bo_w = _cdiv(out_w + 2 * blur_pad - blur_size, blur_sx, sec, "the blur output width") + 1
            lyr._next = (bo_h, bo_w, n, _mul(sec, "outputs", bo_h, bo_w, n))
            lyr.extras["antialiasing"] = antialiasing
        return lyr

    def connected(self, sec: Section, index: int, inputs: int, outputs: int, bn: int,
                  type_: str = "connected") -> DarknetLayer:
        lyr = self._new(sec, index, type_, batch_normalize=bn, w=1, h=1, c=inputs, out_w=1, out_h=1, out_c=outputs,
                        inputs=inputs, outputs=outputs)
        _mul(sec, "weights", inputs, outputs)
        lyr._shapes = {"biases": (outputs,), "weights": (outputs, inputs)}
        if bn:
            lyr._shapes.update({k: (outputs,) for k in _BN_ARRAYS})
        return lyr

    def build(self, net: dict) -> list:
        p = {"h": net["h"], "w": net["w"], "c": net["c"], "inputs": net["inputs"]}
        for index, sec in enumerate(self.cfg.sections):
            lyr = self._check(self.layer(sec, p, index), sec)
            common = {"dontload": "dontload", "dontloadscales": "dontloadscales"}
            if self.fork == "pjreddie":
                common.update({"dontsave": "dontsave", "numload": "numload"})
            for key in common:
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

    def layer(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        t = sec.type
        if t not in SUPPORTED_TYPES[self.fork]:
            raise sec.error(f"{self.fork}'s Darknet knows this layer type, but darknet_bn does not build it "
                            "(not supported)")
        return getattr(self, "_" + t)(sec, p, index)

    # convolutional -------------------------------------------------------------------------------
    def _convolutional(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        n = g("filters", 1)
        if self.fork == "pjreddie":
            size = g("size", 1)
            stride = g("stride", 1)
            pad = g("pad", 0)
            padding = g("padding", 0)
            groups = g("groups", 1)
            if pad:
                padding = _cdiv(size, 2, sec, "size/2")
            self._need_image(sec, p, "convolutional")
            bn = g("batch_normalize", 0)
            lyr = self.conv(sec, p, index, n=n, size=size, stride_x=stride, stride_y=stride, padding=padding,
                            groups=groups, bn=bn)
            flipped = g("flipped", 0)
            if flipped and lyr.groups != 1:
                raise sec.error("flipped=1 with groups: pjreddie transposes c*size*size x n values, more than the "
                                "layer holds (Darknet writes out of bounds)", "flipped")
        else:
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
            pad = g("pad", 0)
            padding = g("padding", 0)
            if pad:
                padding = _cdiv(size, 2, sec, "size/2")
            share_index = g("share_index", -1000000000)
            share = None
            if share_index != -1000000000:
                share = self.layers[self._ref(sec, "share_index", share_index, index)]
                if share.type != "convolutional":
                    raise sec.error(f"share_index={share_index} refers to layer {share.index}, a {share.type} "
                                    "layer, not a convolutional one", "share_index")
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
            lyr = self.conv(sec, p, index, n=n, size=size, stride_x=stride_x, stride_y=stride_y, padding=padding,
                            groups=groups, bn=bn, dilation=dilation, antialiasing=antialiasing, xnor=xnor,
                            share=share)
        if flipped:
            lyr.extras["flipped"] = flipped
        return lyr

    def _connected(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self.connected(sec, index, p["inputs"], sec.get_int("output", 1), sec.get_int("batch_normalize", 0))

    def _batchnorm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, "batchnorm", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.inputs = lyr.outputs = _mul(sec, "outputs", h, w, c)
        lyr._shapes = {k: (c,) for k in ("biases",) + _BN_ARRAYS}
        return lyr

    def _local(self, sec: Section, p: dict, index: int) -> DarknetLayer:
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

    # pooling -------------------------------------------------------------------------------------
    def _pool(self, sec: Section, p: dict, index: int, type_: str) -> DarknetLayer:
        g = sec.get_int
        stride = g("stride", 1)
        if self.fork == "alexeyab":
            stride_x, stride_y = g("stride_x", stride), g("stride_y", stride)
        else:
            stride_x = stride_y = stride
        size = g("size", stride)
        padding = g("padding", size - 1)
        depth = out_channels = antialiasing = 0
        if type_ == "maxpool" and self.fork == "alexeyab":
            depth = g("maxpool_depth", 0)
            out_channels = g("out_channels", 1)
            antialiasing = g("antialiasing", 0)
        self._need_image(sec, p, "[maxpool]" if type_ == "maxpool" else "[local_avgpool]")
        h, w, c = p["h"], p["w"], p["c"]
        blur_sx, blur_sy = stride_x, stride_y
        if antialiasing:
            stride_x = stride_y = 1
        if depth:
            out_w, out_h, out_c = w, h, out_channels
        else:
            out_w = _cdiv(_int(w + padding - size, sec, "w + padding - size"), stride_x, sec, "the output width",
                          "stride") + 1
            out_h = _cdiv(_int(h + padding - size, sec, "h + padding - size"), stride_y, sec, "the output height",
                          "stride") + 1
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

    def _maxpool(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._pool(sec, p, index, "maxpool")

    def _local_avgpool(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._pool(sec, p, index, "local_avgpool")

    def _avgpool(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        self._need_image(sec, p, "avgpool")
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, "avgpool", w=w, h=h, c=c, out_w=1, out_h=1, out_c=c, outputs=c)
        lyr.inputs = _mul(sec, "inputs", h, w, c)
        return lyr

    # routing -------------------------------------------------------------------------------------
    def _route(self, sec: Section, p: dict, index: int) -> DarknetLayer:
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
            self.warnings.append(f"{sec.file}:{sec.line}: {sec.header} layer {index}: its input layers differ in "
                                 "width or height, so Darknet gives it no output size (0x0x0)")
        if self.fork == "alexeyab":
            groups = sec.get_int("groups", 1)
            group_id = sec.get_int("group_id", 0)
            outputs = _cdiv(outputs, groups, sec, "outputs/groups", "groups")
            lyr.out_c = _cdiv(out_c, groups, sec, "out_c/groups", "groups")
            lyr.w, lyr.h, lyr.c = first.w, first.h, lyr.out_c
            lyr.extras.update(groups=groups, group_id=group_id)
            if groups > 1 and not 0 <= group_id < groups:
                self.warnings.append(f"{sec.file}:{sec.line}: {sec.header} layer {index}: group_id={group_id} is "
                                     f"not in 0..{groups - 1} (Darknet reads outside its input)")
        lyr.inputs = lyr.outputs = outputs
        return lyr

    def _shortcut(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        if self.fork == "pjreddie":
            text = sec.get_str("from")
            if text is None:
                raise sec.error("from= is missing (Darknet crashes)")
            v, _ = c_atoi(text)
            ref = self._ref(sec, "from", _int(v, sec, "from"), index)
            frm = self.layers[ref]
            lyr = self._new(sec, index, "shortcut", w=frm.out_w, h=frm.out_h, c=frm.out_c, out_w=w, out_h=h, out_c=c,
                            input_layers=(ref,))
            lyr.outputs = lyr.inputs = _mul(sec, "outputs", w, h, c)
            return lyr
        wt = sec.get_str("weights_type", "none")
        if wt in ("per_feature", "per_layer"):
            weights_type = "per_feature"
        elif wt == "per_channel":
            weights_type = "per_channel"
        elif wt == "none":
            weights_type = None
        else:
            raise sec.error(f"weights_type={wt}: use none, per_feature or per_channel (Darknet exits)", "weights_type")
        wn = sec.get_str("weights_normalization", "none")
        if wn not in ("relu", "avg_relu", "softmax") and wt != "none":
            raise sec.error(f"weights_normalization={wn} with weights_type={wt}: AlexeyAB's Darknet exits "
                            "('Incorrect weights_normalization'); use relu or softmax", "weights_normalization")
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
                raise sec.error(f"from layer {ref} outputs {frm.out_w}x{frm.out_h}x{frm.out_c} and the layer before "
                                f"outputs {w}x{h}x{c}: AlexeyAB's Darknet asserts that their width and height "
                                "match (it cannot add them)", "from")
        return lyr

    def _from_one(self, sec: Section, index: int) -> int:
        text = sec.get_str("from")
        if text is None:
            raise sec.error("from= is missing (Darknet crashes)")
        v, _ = c_atoi(text)
        return self._ref(sec, "from", _int(v, sec, "from"), index)

    def _scale_channels(self, sec: Section, p: dict, index: int) -> DarknetLayer:
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
        lyr = self._new(sec, index, "scale_channels", w=w, h=h, c=c, out_w=frm.out_w, out_h=frm.out_h,
                        out_c=frm.out_c, input_layers=(ref,))
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", frm.out_w, frm.out_h, frm.out_c)
        return lyr

    def _sam(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ref = self._from_one(sec, index)
        frm = self.layers[ref]
        h, w, c = p["h"], p["w"], p["c"]
        if frm.out_c != c or frm.out_w != w or frm.out_h != h:
            raise sec.error(f"layer {ref} outputs {frm.out_w}x{frm.out_h}x{frm.out_c}, the input is {w}x{h}x{c}: "
                            "Darknet asserts they are equal", "from")
        lyr = self._new(sec, index, "sam", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c, input_layers=(ref,))
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", w, h, c)
        return lyr

    def _upsample(self, sec: Section, p: dict, index: int) -> DarknetLayer:
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

    def _reorg_any(self, sec: Section, p: dict, index: int, type_: str) -> DarknetLayer:
        stride = sec.get_int("stride", 1)
        reverse = sec.get_int("reverse", 0)
        extra = 0
        if self.fork == "pjreddie":
            sec.get_int("flatten", 0)  # read (and range-checked) as Darknet does; it changes no size
            extra = sec.get_int("extra", 0)
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

    def _reorg(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._reorg_any(sec, p, index, "reorg")

    def _reorg_old(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._reorg_any(sec, p, index, "reorg_old")

    # heads ---------------------------------------------------------------------------------------
    def _mask_count(self, text: str) -> int:
        n = 1
        for ch in text:
            if ch == "#" and self.fork == "alexeyab":
                break
            if ch == ",":
                n += 1
        return n

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
            raise sec.error(f"it outputs {w}x{h}x{num}*({classes}+{per}) = {lyr.outputs} values per image, the layer "
                            f"before gives {p['inputs']}: filters= of the [convolutional] before it does not match "
                            "classes= and mask= (Darknet exits)")
        if self.fork == "alexeyab":
            cpc = sec.get_str("counters_per_class")
            if cpc is not None and self._mask_count(cpc) != classes:
                raise sec.error(f"counters_per_class has {self._mask_count(cpc)} values, classes={classes} "
                                "(Darknet exits)", "counters_per_class")
            if type_ == "yolo":
                eid = g("embedding_layer", 999999)
                if eid != 999999:
                    le = self.layers[self._ref(sec, "embedding_layer", eid, index)]
                    lyr.extras["embedding_layer"] = le.index
                    lyr.extras["embedding_size"] = _cdiv(le._n_any, num, sec, "embedding size (filters/anchors)")
        return lyr

    def _yolo(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._yolo_any(sec, p, index, "yolo", 5)

    def _gaussian_yolo(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._yolo_any(sec, p, index, "gaussian_yolo", 9)

    def _region(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        coords, classes, num = g("coords", 4), g("classes", 20), g("num", 1)
        h, w = p["h"], p["w"]
        c = _mul(sec, "c", num, classes + coords + 1)
        lyr = self._new(sec, index, "region", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", h, w, num, classes + coords + 1)
        lyr._n_any = num
        if lyr.outputs != p["inputs"]:
            raise sec.error(f"it outputs {w}x{h}x{num}*({classes}+{coords}+1) = {lyr.outputs} values per image, the "
                            f"layer before gives {p['inputs']}: filters= before it does not match classes=, coords= "
                            "and num= (Darknet stops)")
        return lyr

    def _detection(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        coords, classes, num, side = g("coords", 1), g("classes", 1), g("num", 1), g("side", 7)
        inputs = p["inputs"]
        need = _mul(sec, "side*side*((1+coords)*num+classes)", side, side, (1 + coords) * num + classes)
        if need != inputs:
            raise sec.error(f"side*side*((1+coords)*num+classes) = {need}, the layer before gives {inputs} values "
                            "(Darknet asserts they are equal)")
        lyr = self._new(sec, index, "detection", w=side, h=side, inputs=inputs, outputs=inputs)
        lyr._n_any = num
        return lyr

    def _contrastive(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        g("classes", 1000)
        yid = g("yolo_layer", 0)
        if (yid + index if yid < 0 else yid) == 0:
            raise sec.error("yolo_layer= must point to a [yolo] layer (Darknet dereferences NULL without it)",
                            "yolo_layer")
        yl = self.layers[self._ref(sec, "yolo_layer", yid, index)]
        if yl.type != "yolo":
            raise sec.error(f"yolo_layer refers to layer {yid}, which is not a [yolo] layer (Darknet exits)",
                            "yolo_layer")
        h, w, c, inputs = p["h"], p["w"], p["c"], p["inputs"]
        emb = _cdiv(inputs, _mul(sec, "n*h*w", yl._n_any, h, w), sec, "inputs/(anchors*h*w)")
        if emb != yl.extras.get("embedding_size", 0):
            raise sec.error(f"embedding size {emb} differs from the [yolo] layer's "
                            f"{yl.extras.get('embedding_size', 0)} (Darknet exits)", "yolo_layer")
        lyr = self._new(sec, index, "contrastive", w=w, h=h, c=c, inputs=inputs, outputs=inputs,
                        input_layers=(yl.index,))
        lyr._n_any = yl._n_any
        return lyr

    def _iseg(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        classes, ids = sec.get_int("classes", 20), sec.get_int("ids", 32)
        h, w = p["h"], p["w"]
        c = _int(classes + ids, sec, "c")
        lyr = self._new(sec, index, "iseg", w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.outputs = lyr.inputs = _mul(sec, "outputs", h, w, c)
        if lyr.outputs != p["inputs"]:
            raise sec.error(f"it outputs {lyr.outputs} values, the layer before gives {p['inputs']} (Darknet asserts)")
        return lyr

    # pass-through and loss layers ----------------------------------------------------------------
    def _inputs_only(self, sec: Section, p: dict, index: int, type_: str) -> DarknetLayer:
        return self._new(sec, index, type_, inputs=p["inputs"], outputs=p["inputs"])

    def _cost(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ctype = sec.get_str("type", "sse")
        if ctype not in ("sse", "masked", "smooth", "L1", "seg", "wgan"):
            self.warnings.append(f"{sec.file}:{sec.line}: {sec.header} type={ctype}: unknown cost type, Darknet "
                                 "uses sse")
        return self._inputs_only(sec, p, index, "cost")

    def _softmax(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        groups = sec.get_int("groups", 1)
        if _cmod(p["inputs"], groups, sec, "inputs % groups", "groups") != 0:
            raise sec.error(f"groups={groups} does not divide its {p['inputs']} inputs (Darknet asserts)", "groups")
        lyr = self._inputs_only(sec, p, index, "softmax")
        lyr.w, lyr.h, lyr.c = p["w"], p["h"], p["c"]
        return lyr

    def _dropout(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        lyr = self._inputs_only(sec, p, index, "dropout")
        lyr.out_w, lyr.out_h, lyr.out_c = p["w"], p["h"], p["c"]
        return lyr

    def _same(self, sec: Section, p: dict, index: int, type_: str, from_inputs: bool) -> DarknetLayer:
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, type_, w=w, h=h, c=c, out_w=w, out_h=h, out_c=c)
        lyr.inputs = lyr.outputs = p["inputs"] if from_inputs else _mul(sec, "outputs", h, w, c)
        return lyr

    def _normalization(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "normalization", False)

    def _active(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "active", True)

    def _l2norm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "l2norm", True)

    def _logxent(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "logxent", True)

    def _empty(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        return self._same(sec, p, index, "empty", True)

    def _implicit(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        filters, atoms = sec.get_int("filters", 128), sec.get_int("atoms", 1)
        lyr = self._new(sec, index, "implicit", w=1, h=1, c=1, out_w=1, out_h=atoms, out_c=filters, inputs=1)
        lyr.outputs = _mul(sec, "outputs", atoms, filters)
        lyr._shapes = {"weights": (lyr.outputs,)}
        return lyr

    def _crop(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        ch, cw = sec.get_int("crop_height", 1), sec.get_int("crop_width", 1)
        self._need_image(sec, p, "crop")
        h, w, c = p["h"], p["w"], p["c"]
        lyr = self._new(sec, index, "crop", w=w, h=h, c=c, out_w=cw, out_h=ch, out_c=c)
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = _mul(sec, "outputs", cw, ch, c)
        return lyr

    # recurrent -----------------------------------------------------------------------------------
    def _recurrent(self, sec: Section, p: dict, index: int, type_: str, parts: list, out_sizes: bool) -> DarknetLayer:
        bn = sec.get_int("batch_normalize", 0)
        # make_rnn_layer (both forks) leaves l.batch_normalize at 0; make_gru_layer and make_lstm_layer set it
        lyr = self._new(sec, index, type_, batch_normalize=0 if type_ == "rnn" else bn, inputs=p["inputs"])
        for name, nin, nout in parts:
            lyr.parts[name] = self._check(self.connected(sec, index, nin, nout, bn), sec)
        lyr.outputs = parts[-1][2] if type_ == "rnn" else parts[0][2]
        if out_sizes:
            lyr.out_w, lyr.out_h, lyr.out_c = 1, 1, lyr.outputs
        return lyr

    def _rnn(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out = sec.get_int("output", 1)
        inputs = p["inputs"]
        if self.fork == "pjreddie":
            parts = [("input_layer", inputs, out), ("self_layer", out, out), ("output_layer", out, out)]
            return self._recurrent(sec, p, index, "rnn", parts, False)
        hidden = sec.get_int("hidden", 1)
        parts = [("input_layer", inputs, hidden), ("self_layer", hidden, hidden), ("output_layer", hidden, out)]
        return self._recurrent(sec, p, index, "rnn", parts, True)

    def _gru(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out, inputs = sec.get_int("output", 1), p["inputs"]
        if self.fork == "pjreddie":
            names = [("wz", out), ("wr", out), ("wh", out), ("uz", inputs), ("ur", inputs), ("uh", inputs)]
        else:
            names = [("input_z_layer", inputs), ("input_r_layer", inputs), ("input_h_layer", inputs),
                     ("state_z_layer", out), ("state_r_layer", out), ("state_h_layer", out)]
        return self._recurrent(sec, p, index, "gru", [(nm, nin, out) for nm, nin in names], False)

    def _lstm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        out, inputs = sec.get_int("output", 1), p["inputs"]
        order = "wi wf wo wg ui uf uo ug" if self.fork == "pjreddie" else "wf wi wg wo uf ui ug uo"
        parts = [(nm, out if nm[0] == "w" else inputs, out) for nm in order.split()]
        return self._recurrent(sec, p, index, "lstm", parts, self.fork == "alexeyab")

    def _crnn(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        g = sec.get_int
        if self.fork == "pjreddie":
            out_f, hid_f = g("output_filters", 1), g("hidden_filters", 1)
            bn = g("batch_normalize", 0)
            # pjreddie's parse_crnn passes (params.w, params.h) where make_crnn_layer takes (h, w)
            q = {"h": p["w"], "w": p["h"], "c": p["c"]}
            kw = dict(size=3, stride_x=1, stride_y=1, padding=1, groups=1, bn=bn)
        else:
            size, stride, dilation = g("size", 3), g("stride", 1), g("dilation", 1)
            pad, padding = g("pad", 0), g("padding", 0)
            if pad:
                padding = _cdiv(size, 2, sec, "size/2")
            out_f, hid_f = g("output", 1), g("hidden", 1)
            groups, bn, xnor = g("groups", 1), g("batch_normalize", 0), g("xnor", 0)
            q = {"h": p["h"], "w": p["w"], "c": p["c"]}
            kw = dict(size=size, stride_x=stride, stride_y=stride, padding=padding, groups=groups, bn=bn,
                      dilation=dilation, xnor=xnor)
        # make_crnn_layer (both forks) leaves l.batch_normalize at 0: only the inner convolutions carry it
        lyr = self._new(sec, index, "crnn", batch_normalize=0, w=q["w"], h=q["h"], c=q["c"])
        parts = {}
        for name, cin, nout in (("input_layer", q["c"], hid_f), ("self_layer", hid_f, hid_f),
                                ("output_layer", hid_f, out_f)):
            parts[name] = self._check(self.conv(sec, dict(q, c=cin), index, n=nout, **kw), sec)
        lyr.parts = parts
        lyr.inputs = _mul(sec, "inputs", q["h"], q["w"], q["c"])
        if self.fork == "pjreddie":
            lyr.out_h, lyr.out_w, lyr.out_c = q["h"], q["w"], out_f
            lyr.outputs = _mul(sec, "outputs", q["h"], q["w"], out_f)
        else:
            o = parts["output_layer"]
            lyr.out_h, lyr.out_w, lyr.out_c, lyr.outputs = o.out_h, o.out_w, out_f, o.outputs
            if parts["input_layer"].outputs != parts["self_layer"].outputs or \
                    parts["input_layer"].outputs != o.inputs:
                raise sec.error(f"its convolutions give {parts['input_layer'].out_w}x{parts['input_layer'].out_h} "
                                f"from {q['w']}x{q['h']}: the hidden state does not keep its size (Darknet asserts); "
                                "use pad=1 and stride=1")
        return lyr

    def _conv_lstm(self, sec: Section, p: dict, index: int) -> DarknetLayer:
        """AlexeyAB's parse_conv_lstm + make_conv_lstm_layer: convolutions uf ui ug uo (c -> output),
        wf wi wg wo (output -> output; with bottleneck=1 only wf, from 2*output), vf vi vo with
        peephole=1; the outer layer keeps the input size, batch_normalize, and uo's output size."""
        g = sec.get_int
        size, stride, dilation = g("size", 3), g("stride", 1), g("dilation", 1)
        pad, padding = g("pad", 0), g("padding", 0)
        if pad:
            padding = _cdiv(size, 2, sec, "size/2")
        out_f, groups = g("output", 1), g("groups", 1)
        bn, xnor = g("batch_normalize", 0), g("xnor", 0)
        peephole, bottleneck = g("peephole", 0), g("bottleneck", 0)
        h, w, c = p["h"], p["w"], p["c"]
        kw = dict(size=size, stride_x=stride, stride_y=stride, padding=padding, groups=groups, bn=bn,
                  dilation=dilation, xnor=xnor)
        parts = {}
        for name in ("uf", "ui", "ug", "uo"):
            parts[name] = self._check(self.conv(sec, p, index, n=out_f, **kw), sec)
        hidden = {"h": h, "w": w, "c": out_f}
        if bottleneck:
            parts["wf"] = self._check(self.conv(sec, dict(hidden, c=_int(2 * out_f, sec, "2*output")), index,
                                                n=out_f, **kw), sec)
        else:
            for name in ("wf", "wi", "wg", "wo"):
                parts[name] = self._check(self.conv(sec, hidden, index, n=out_f, **kw), sec)
        if peephole:
            for name in ("vf", "vi", "vo"):
                parts[name] = self._check(self.conv(sec, hidden, index, n=out_f, **kw), sec)
        uo = parts["uo"]
        lyr = self._new(sec, index, "conv_lstm", batch_normalize=bn, w=w, h=h, c=c, out_w=uo.out_w, out_h=uo.out_h,
                        out_c=out_f)
        lyr.inputs = _mul(sec, "inputs", w, h, c)
        lyr.outputs = uo.outputs
        lyr.parts = parts
        if (uo.out_w, uo.out_h) != (w, h):  # Darknet builds it (its asserts compare w* with u*, equal here)
            self.warnings.append(f"{sec.file}:{sec.line}: {sec.header} layer {index}: its convolutions give "
                                 f"{uo.out_w}x{uo.out_h} from {w}x{h}, but Darknet's forward feeds the "
                                 f"{uo.out_w}x{uo.out_h} state to convolutions built for {w}x{h} (it reads past "
                                 "the state); use pad=1 and stride=1")
        return lyr


def _net_options(cfg: CfgFile, batch: int | None, warnings: list) -> tuple:
    """parse_net_options (+ the batch rules of parse_network_cfg[_custom]): (batch, time_steps, w, h, c, inputs)."""
    net = cfg.net
    g = net.get_int
    fork = cfg.fork
    cfg_batch = g("batch", 1)
    subdivs = g("subdivisions", 1)
    time_steps = g("time_steps", 1)
    nb = _cdiv(cfg_batch, subdivs, net, "batch/subdivisions", "subdivisions")
    nb = _int(nb * time_steps, net, "batch*time_steps")
    h, w, c = g("height", 0), g("width", 0), g("channels", 0)
    inputs = g("inputs", _mul(net, "inputs", h, w, c))
    if not inputs and not (h and w and c):
        raise net.error("no input size: set width=, height= and channels= (or inputs=) "
                        "(Darknet: 'No input parameters supplied')")
    policy = net.get_str("policy", "constant")
    if policy == "steps":
        steps, scales = net.get_str("steps"), net.get_str("scales")
        if steps is None or scales is None:
            raise net.error("policy=steps needs steps= and scales= (Darknet stops)", "policy")
        if scales.count(",") < steps.count(","):
            warnings.append(f"{cfg.name}:{net.find('scales').line}: [net] scales= has fewer values than steps=: "
                            "Darknet reads past the end of the scales text (it may crash); sizes are not affected")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)):
            raise TypeError(f"batch: expected an int or None, got {type(batch).__name__}")
        if batch < 1:
            raise ValueError(f"batch: expected an int >= 1, got {batch}")
        return int(batch), 1, w, h, c, inputs
    if fork == "alexeyab":
        time_steps = max(time_steps, 1)
        nb = max(nb, 1, time_steps)
    if nb < 1 or time_steps < 1:
        raise net.error(f"batch={cfg_batch}, subdivisions={subdivs}, time_steps={time_steps} give a batch of {nb} "
                        f"and {time_steps} time steps: pjreddie's Darknet cannot build layers with that")
    return nb, time_steps, w, h, c, inputs


def load_network(cfg: str | bytes | os.PathLike | CfgFile, weights: str | os.PathLike | None = None, *,
                 batch: int | None = 1, flavor: str | Flavor | None = None, fork: str | None = None,
                 allow_trailing: bool = False) -> Network:
    """Build a Darknet network from a cfg (and fill it from a ``.weights`` file).

    Args:
        cfg: a path, cfg text or a parsed :class:`~darknet_bn.darknet.cfg.CfgFile` (see
            :func:`darknet_bn.darknet.cfg.parse_cfg` for how a ``str`` is told apart).
        weights: a ``.weights`` file, or ``None`` (Darknet's initial values where parameters are needed).
        batch: images per batch (>= 1) every layer sees, as Darknet's ``load_network_custom`` (time
            steps 1); ``None``: the cfg's own, ``batch/subdivisions*time_steps``.
        flavor: the flavor of the BN layers, ``"pjreddie"``, ``"alexeyab"``, ``"torch"`` or a
            :class:`~darknet_bn.flavors.Flavor`; without ``fork``, also whose rules read the cfg
            (pjreddie's for ``"pjreddie"``, else AlexeyAB's). ``None``: the flavor of the fork whose rules
            are used.
        fork: ``"pjreddie"`` or ``"alexeyab"``: whose rules read the cfg (wins over ``flavor``).
            With neither, the fork is detected from the cfg: a section, key or value only AlexeyAB's
            parser reads means AlexeyAB's rules, else pjreddie's (:func:`darknet_bn.darknet.cfg.detect_fork`).
            ``Network.rules`` says which and why. Keys the fork ignores give a
            :class:`~darknet_bn.darknet.cfg.DarknetCfgWarning` naming file, line and key.
        allow_trailing: accept bytes after the last array of the weights file.

    Returns:
        A :class:`Network`: ``.layers``, ``.bn_layers``, ``.save_weights(path)``.

    Raises:
        DarknetCfgError: a cfg the fork cannot build (names file, line and problem).
        DarknetWeightsError: a weights file that does not match the cfg.
        OSError: a file that cannot be read.
    """
    cfgf = parse_cfg(cfg, flavor=flavor, fork=fork)
    fl = get_flavor(flavor if flavor is not None else cfgf.fork)
    warnings = list(cfgf.warnings)
    nb, ts, w, h, c, inputs = _net_options(cfgf, batch, warnings)
    if not cfgf.sections:
        raise DarknetCfgError(cfgf.name, None, "no layers after [net] (Darknet reads outside its layer array)")
    builder = _Builder(cfgf, fl.init_rolling_variance)
    layers = builder.build({"h": h, "w": w, "c": c, "inputs": inputs})
    warnings.extend(builder.warnings)
    warnings.extend(w_ for w_ in cfgf.warnings if w_ not in warnings)  # lossy numbers found while building
    if cfgf.fork == "alexeyab" and not any(lyr.w > 1 and lyr.h > 1 for lyr in layers):
        warnings.append(f"{cfgf.name}: no layer is wider and taller than 1: AlexeyAB's parser divides by zero "
                        "after building the layers (avg_outputs/avg_counter) and crashes; the sizes here are the "
                        "ones it builds before that")
    net = Network(cfgf, fl, nb, ts, w, h, c, inputs, layers, warnings)
    for bn in net.bn_layers:
        if min(bn.c, bn.h, bn.w) < 1:
            raise DarknetCfgError(cfgf.name, bn.host.line,
                                  f"{bn.host.header} layer {bn.name}: batch normalization over an empty tensor "
                                  f"(c={bn.c}, h={bn.h}, w={bn.w})")
    if weights is not None:
        net.load_weights(weights, allow_trailing=allow_trailing)
    return net

