"""A Darknet network as each fork builds it from a ``.cfg``: the layers (:class:`DarknetLayer`) with
Darknet's sizes and parameters, the batch-normalization layers (:class:`BNLayer`), and the network
(:class:`Network`) that reads and writes its ``.weights`` file by the fork's layout.

The layers are built by :mod:`darknet_bn.darknet.builder` (:func:`~darknet_bn.darknet.builder.load_network`);
this module holds what they are. Sizes are Darknet's own fields, with its C ``int`` arithmetic (division
truncates toward zero): ``w, h, c`` the input a layer stores, ``out_w, out_h, out_c`` its output,
``inputs, outputs`` the values per image. A size Darknet never sets on a layer type stays 0, as in
Darknet (the input of a ``dropout``, the output of a ``softmax``, every size of pjreddie's recurrent
layers); the next layer reads Darknet's values too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..flavors import Flavor
from .cfg import CfgFile
from .weights import ArraySpec, WeightsHeader, read_weights, write_weights

if TYPE_CHECKING:
    from ..layer import Layer

__all__ = ["DarknetLayer", "BNLayer", "Network", "LayerRef", "BN_ARRAYS"]

# The batch-normalization arrays of a layer with batch_normalize (besides its biases), in file order.
BN_ARRAYS = ("scales", "rolling_mean", "rolling_variance")


@dataclass(frozen=True)
class LayerRef:
    """A layer reference of a cfg section as the builder resolved it: ``key`` the option
    (``layers``, ``from``, ``share_index``, ``embedding_layer``, ``yolo_layer``) and ``layers`` the
    absolute indices of the layers it names, one per value in the order written (Darknet reads the
    first ``len(layers)`` comma-separated values)."""

    key: str
    layers: tuple


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
        refs: every layer reference of its section, resolved (:class:`LayerRef`): ``input_layers``,
            ``share_index=``, ``embedding_layer=``, ``yolo_layer=``.
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
    refs: tuple = ()
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
        return {
            k: getattr(self, k)
            for k in (
                "index",
                "type",
                "batch_normalize",
                "w",
                "h",
                "c",
                "out_w",
                "out_h",
                "out_c",
                "n",
                "size",
                "stride",
                "pad",
                "groups",
                "stride_x",
                "stride_y",
                "dilation",
            )
        }


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

    def __init__(
        self,
        index: int,
        type: str,
        part: str | None,
        host: DarknetLayer,
        batch: int,
        c: int,
        h: int,
        w: int,
        flavor: Flavor,
    ) -> None:
        self.index, self.type, self.part, self.host = index, type, part, host
        self.batch, self.c, self.h, self.w = batch, c, h, w
        self.flavor = flavor
        self._layer: Layer | None = None

    @property
    def shape(self) -> tuple:
        """(batch, c, h, w)."""
        return (self.batch, self.c, self.h, self.w)

    @property
    def layer(self) -> Layer:
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
    """A network built from a cfg by one fork's rules (see :func:`~darknet_bn.darknet.builder.load_network`).

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

    def __init__(
        self,
        cfg: CfgFile,
        flavor: Flavor,
        batch: int,
        time_steps: int,
        w: int,
        h: int,
        c: int,
        inputs: int,
        layers: list,
        warnings: list,
    ) -> None:
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
        return (
            f"Network({self.name!r}, fork={self.fork!r}, {len(self.layers)} layers, "
            f"{len(self.bn_layers)} BN layers, batch={self.batch})"
        )

    def _bn_entries(self) -> Iterator[BNLayer]:
        step_batch = self.batch // self.time_steps if self.time_steps else self.batch
        for lyr in self.layers:
            if lyr.type == "batchnorm":
                yield BNLayer(lyr.index, lyr.type, None, lyr, self.batch, lyr.c, lyr.h, lyr.w, self.flavor)
            elif lyr.type in ("convolutional", "connected"):
                if lyr.batch_normalize:
                    yield BNLayer(
                        lyr.index, lyr.type, None, lyr, self.batch, lyr.out_c, lyr.out_h, lyr.out_w, self.flavor
                    )
            for pname, part in lyr.parts.items():
                if part.batch_normalize:
                    yield BNLayer(
                        lyr.index, lyr.type, pname, part, step_batch, part.out_c, part.out_h, part.out_w, self.flavor
                    )

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
            for name in BN_ARRAYS:
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
        n = (lyr.n or 0) if (write or not numload) else numload
        yield lyr, "biases", n, "prefix" if n != lyr.n else None
        if lyr.batch_normalize and not skip_scales:
            for name in BN_ARRAYS:
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
            for name in BN_ARRAYS:
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
                full[: a.size] = a
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
