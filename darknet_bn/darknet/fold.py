"""Batch normalization folded into the weights of a Darknet network (``darknet-bn fold``).

Inference batch normalization is a per-channel affine map. For output channel ``k`` of a convolutional
or connected layer whose BN uses the rolling statistics,

    ``y[k] = scale[k] * (z[k] - rolling_mean[k]) / s[k] + bias[k]``

where ``z`` is the layer's output before BN and ``s[k]`` the flavor's inference denominator
(:func:`inference_denominator`: pjreddie ``sqrt(rolling_variance) + 1e-6``, alexeyab and torch
``sqrt(rolling_variance + 1e-5)``, read from the :class:`~darknet_bn.flavors.Flavor`'s ``eps`` and
``eps_in_sqrt`` fields, never hard-coded here). ``z[k]`` is linear in filter ``k``'s weights, so with
``a[k] = scale[k] / s[k]``:

    ``w'[k] = a[k] * w[k]``,   ``b'[k] = bias[k] - a[k] * rolling_mean[k]``

and the layer without BN computes the same ``y`` (before its activation). Everything is computed in
float64 and rounded once to float32. A filter is ``weights[k]`` in Darknet's memory layout whatever the
layer's groups, dilation or stride (``(n, c/groups, size, size)``), and a connected layer's row ``k``
(``(outputs, inputs)``; files with transposed connected weights are transposed by
:mod:`darknet_bn.darknet.model` on reading and back on writing), so all those cases are the same code.

A standalone ``[batchnorm]`` section is merged into the convolutional/connected layer right before it
when that is exact: that layer's activation is ``linear``, its output is read by nothing else (no
``[route]``, ``[shortcut]``... names it), and nothing else happens between the two (no antialiasing
blur, coordconv). Its bias then enters too: ``b' = a * (b - rolling_mean) + bias``. A chain
(conv -> [batchnorm] -> [batchnorm]) merges in one pass. A merged ``[batchnorm]`` section is removed
from the cfg and the layer references after it (``layers=``, ``from=``, ``share_index=``,
``embedding_layer=``, ``yolo_layer=``) are renumbered; a reference to the removed layer now names the
layer that absorbed it, which outputs the same values.

Layers are left as they are, and reported with the reason, when folding would not be exact or would
not survive a save: ``dontload``/``dontloadscales``/``numload``/``dontsave``, weights tied across
filters (AlexeyAB's ``sway``/``rotate``/``stretch``/``stretch_sway``), weights shared by
``share_index`` with a layer whose BN differs, non-finite parameters, a denominator that is not a
positive finite number, folded values that overflow float32, and binary (``xnor``/``binary``) filters
where a negative factor meets a zero weight (binarization commutes with a per-filter factor
otherwise). The inner layers of ``rnn``/``gru``/``lstm``/``crnn`` share one ``batch_normalize`` key:
they are folded all together or not at all.

The folded cfg is the original text with the ``batch_normalize`` lines (and AlexeyAB's ``cbn``) of
the folded layers and the merged ``[batchnorm]`` sections (with the blank lines after them) removed,
and the references after them renumbered; every other line -- comments, blank lines, line endings --
is kept. The ``.weights`` file keeps the original header. Folding a folded
network changes nothing.

How: first a plan (``_Planner`` walks the layers once and decides, for every BN layer, what it folds
into or why it is kept, from the network's layers, its arrays and the layer references the builder
resolved, :attr:`DarknetLayer.refs <darknet_bn.darknet.model.DarknetLayer.refs>`), then the steps that
apply it: the folded arrays (``_Affine``), the cfg lines dropped and the references renumbered
(``_edit_cfg``), the folded network built and filled (``_fill``), the files written (:func:`save_folded`).

API: :func:`fold_network` (a new :class:`~darknet_bn.darknet.model.Network`, the original untouched, and a
:class:`FoldReport`), :func:`save_folded`, :func:`fold_files`; command line: ``darknet-bn fold``
(:mod:`darknet_bn.cli.fold`).
"""

from __future__ import annotations

import os
import re
import weakref
from dataclasses import dataclass, field

import numpy as np

from ..flavors import Flavor, get_flavor
from .builder import load_network
from .cfg import CfgFile, DarknetCfgError, c_atoi, parse_cfg_file, parse_cfg_text
from .model import DarknetLayer, Network

__all__ = [
    "fold_network",
    "fold_files",
    "save_folded",
    "FoldReport",
    "FoldedBN",
    "KeptBN",
    "inference_denominator",
    "bn_affine",
]

_RECURRENT = ("rnn", "gru", "lstm", "crnn", "conv_lstm")
_BN_PARAMS = ("scales", "biases", "rolling_mean", "rolling_variance")
_TIED = ("sway", "rotate", "stretch", "stretch_sway")  # AlexeyAB: weights transformed across filters
_AFTER_ACTIVATION = ("antialiasing", "coordconv", "bin_output")  # AlexeyAB: the output changes after the activation
_WS = " \t\r"  # what Darknet's strip removes from a line (besides '\n', which ends it)
_C_SPACE = " \t\n\v\f\r"  # what C's atoi skips before a number
_INT_PREFIX = re.compile(r"[+-]?[0-9]+")
# The cfg text of the networks fold_network made, so that folding them again keeps their comments.
_FOLDED_TEXT: weakref.WeakKeyDictionary[Network, str] = weakref.WeakKeyDictionary()


# ================================================================================================
# The math


def inference_denominator(rolling_variance: np.ndarray, flavor: str | Flavor) -> np.ndarray:
    """The flavor's inference BN denominator ``s``, float64, shape of ``rolling_variance``:
    ``sqrt(rv + flavor.eps)`` when ``flavor.eps_in_sqrt`` (alexeyab, torch), else ``sqrt(rv) +
    flavor.eps`` (pjreddie). Negative variances give NaN (no warning)."""
    fl = get_flavor(flavor)
    rv = np.asarray(rolling_variance, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.sqrt(rv + fl.eps) if fl.eps_in_sqrt else np.sqrt(rv) + fl.eps


def bn_affine(
    scales: np.ndarray, biases: np.ndarray, rolling_mean: np.ndarray, rolling_variance: np.ndarray, flavor: str | Flavor
) -> tuple[np.ndarray, np.ndarray]:
    """Inference BN as ``y = a * z + c`` per channel: ``a = scales / s``, ``c = biases - a * rolling_mean``
    (float64 arrays of shape (channels,); ``s`` from :func:`inference_denominator`). The inputs are
    float32 or float64 arrays of one shape (channels,)."""
    arrs = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (scales, biases, rolling_mean, rolling_variance)]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"bn_affine: the arrays differ in size ({', '.join(str(a.size) for a in arrs)})")
    sc, bi, mu, rv = arrs
    s = inference_denominator(rv, flavor)
    with np.errstate(all="ignore"):
        a = sc / s
        return a, bi - a * mu


# ================================================================================================
# The report


@dataclass(frozen=True)
class FoldedBN:
    """A batch normalization that was folded.

    Attributes:
        index, type, part: the BN layer in the original network (``part`` names the inner layer of a
            recurrent layer, else ``None``); ``type`` ``"batchnorm"`` for a merged ``[batchnorm]``.
        into: the original index of the layer whose weights absorbed it (``index`` for a layer's own
            BN; the ``share_index`` source for a layer sharing its weights).
        new_index: that layer's index in the folded network.
    """

    index: int
    type: str
    part: str | None
    into: int
    new_index: int

    @property
    def name(self) -> str:
        return f"{self.index} {self.type}" + (f".{self.part}" if self.part else "")


@dataclass(frozen=True)
class KeptBN:
    """A batch normalization left in place: the BN layer (``index``, ``type``, ``part`` as in
    :class:`FoldedBN`), its index in the folded network and the reason, in words."""

    index: int
    type: str
    part: str | None
    new_index: int
    reason: str

    @property
    def name(self) -> str:
        return f"{self.index} {self.type}" + (f".{self.part}" if self.part else "")


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_network` did.

    Attributes:
        flavor: the flavor whose denominator was used.
        folded: the BN layers folded (:class:`FoldedBN`), in network order.
        kept: the BN layers left in place (:class:`KeptBN`), with reasons.
        removed: original indices of the ``[batchnorm]`` sections merged and removed from the cfg.
        index_map: original layer index -> folded network index (a removed ``[batchnorm]`` maps to the
            layer that absorbed it).
        cfg_text: the folded cfg (str; bytes are Latin-1, as :mod:`darknet_bn.darknet.cfg` reads them).
        comments_kept: False when the original cfg text was not available and the cfg was written from
            the parsed options (``key=value`` lines, no comments).
        rules: the network's file rules: which fork's, and why (asked for, or what in the cfg decided).
    """

    flavor: Flavor
    folded: tuple
    kept: tuple
    removed: tuple
    index_map: tuple
    cfg_text: str
    comments_kept: bool
    rules: str = ""

    def denominator_text(self) -> str:
        fl = self.flavor
        return f"sqrt(rolling_variance + {fl.eps:.3g})" if fl.eps_in_sqrt else f"sqrt(rolling_variance) + {fl.eps:.3g}"

    def summary(self) -> str:
        """A few lines of text: counts, the denominator, each BN layer kept and why."""
        kinds: dict = {}
        for f in self.folded:
            k = "[batchnorm] merged" if f.type == "batchnorm" else (f"{f.type} inner layer" if f.part else f.type)
            kinds[k] = kinds.get(k, 0) + 1
        total = len(self.folded) + len(self.kept)
        what = ", ".join(f"{v} {k}" for k, v in kinds.items()) or "none"
        lines = [
            f"folded {len(self.folded)} of {total} BN layers ({what}) with the {self.flavor.name} flavor, "
            f"s = {self.denominator_text()}"
        ]
        if self.removed:
            lines.append(
                f"removed {len(self.removed)} [batchnorm] section(s): layers "
                f"{', '.join(map(str, self.removed))} (later layer references renumbered)"
            )
        for k in self.kept:
            lines.append(f"kept layer {k.name}: {k.reason}")
        if not self.comments_kept:
            lines.append(
                "note: the original cfg text was not available: the cfg is written from its parsed options "
                "(comments not kept)"
            )
        return "\n".join(lines)


# ================================================================================================
# Folding


def _array(host: DarknetLayer, name: str, init_rv: float) -> np.ndarray:
    """host's array without creating it on the host (the original network stays untouched)."""
    a = host.arrays.get(name)
    if a is None:
        fill = {"scales": 1.0, "rolling_variance": init_rv}.get(name, 0.0)
        a = np.full(host.array_shape(name), fill, dtype=np.float32)
    return a


def _bn_params(host: DarknetLayer, init_rv: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """host's scales, biases, rolling_mean, rolling_variance (see :func:`_array`)."""
    sc, bi, mu, rv = (_array(host, n, init_rv) for n in _BN_PARAMS)
    return sc, bi, mu, rv


class _Affine:
    """A layer's weights and biases in float64 while BNs are folded into it (per output channel)."""

    def __init__(self, w: np.ndarray, b: np.ndarray | None, binary: bool) -> None:
        self.w0, self.b0 = w, b
        self.w: np.ndarray | None = None  # float64 (n, rest), made on the first fold, dropped by release()
        self.b: np.ndarray | None = None
        self.binary = binary
        self.w32: np.ndarray | None = None
        self.b32: np.ndarray | None = None

    def release(self) -> None:
        """Drop the float64 copies (no more folds into this layer)."""
        self.w = self.b = None

    def fold(self, a: np.ndarray, c: np.ndarray, params: tuple, fl: Flavor) -> str | None:
        """y = a * (w x + b) + c (b absent: a layer's own BN, whose bias is in c). Returns None when done,
        else why not (the state is then unchanged)."""
        if self.w is None:
            if self.w32 is not None:
                raise RuntimeError("internal error: folding into a released layer")
            self.w = np.asarray(self.w0, dtype=np.float64).reshape(self.w0.shape[0], -1)
            self.b = None if self.b0 is None else np.asarray(self.b0, dtype=np.float64).reshape(-1)
        if (
            not all(np.all(np.isfinite(np.asarray(p, dtype=np.float64))) for p in params)
            or not np.all(np.isfinite(self.w))
            or (self.b is not None and not np.all(np.isfinite(self.b)))
        ):
            return "non-finite values in its weights, biases or BN parameters"
        s = inference_denominator(params[3], fl)
        bad = np.flatnonzero(~(np.isfinite(s) & (s > 0)))
        if bad.size:
            k = int(bad[0])
            return (
                f"rolling_variance[{k}] = {float(params[3].reshape(-1)[k]):.9g} gives the denominator s = "
                f"{float(s[k]):.9g}, not a positive finite number"
            )
        if a.size != self.w.shape[0]:
            raise ValueError(f"the BN has {a.size} channels, the layer {self.w.shape[0]} outputs")
        with np.errstate(all="ignore"):
            w = self.w * a[:, None]
            b = c if self.b is None else a * self.b + c
            w32, b32 = w.astype(np.float32), b.astype(np.float32)
        bad = np.flatnonzero(~(np.all(np.isfinite(w32), axis=1) & np.isfinite(b32)))
        if bad.size:
            return f"the folded weights or bias of channel {int(bad[0])} overflow float32"
        if self.binary:
            zero = self.w == 0
            flips = np.flatnonzero((a < 0) & np.any(zero, axis=1))
            if flips.size:
                return (
                    f"binary weights: channel {int(flips[0])} has a negative factor and a weight equal to 0, "
                    "whose binarized sign would change"
                )
            if np.any((w32 == 0) != zero):
                return "binary weights: a folded weight underflows to 0, whose binarized sign would change"
        self.w, self.b, self.w32, self.b32 = w, b, w32, b32
        return None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The folded float32 weights (in the layer's shape) and biases."""
        if self.w32 is None or self.b32 is None:
            raise RuntimeError("internal error: the arrays of a layer nothing was folded into")
        return self.w32.reshape(self.w0.shape), self.b32


def _source_text(net: Network, cfg_text: str | bytes | None) -> tuple[str, bool]:
    """The cfg text the network was built from (str, Latin-1), and whether it is the original text."""

    def same(text: str) -> bool:
        try:
            other = parse_cfg_text(text, net.name, fork=net.fork, warn=False)
        except DarknetCfgError:
            return False
        return _structure(other) == _structure(net.cfg)

    if cfg_text is not None:
        if isinstance(cfg_text, (bytes, bytearray, memoryview)):
            cfg_text = bytes(cfg_text).decode("latin-1")
        if not isinstance(cfg_text, str):
            raise TypeError(f"cfg_text: expected str or bytes, got {type(cfg_text).__name__}")
        if not same(cfg_text):
            raise ValueError("cfg_text: not the cfg this network was built from (its sections or options differ)")
        return cfg_text, True
    text = _FOLDED_TEXT.get(net)
    if text is not None and same(text):
        return text, True
    name = net.cfg.name
    if isinstance(name, str) and os.path.isfile(name):
        try:
            with open(name, "rb") as f:
                text = f.read().decode("latin-1")
        except OSError:
            text = None
        if text is not None and same(text):
            return text, True
    lines = []
    for sec in [net.cfg.net] + net.cfg.sections:
        lines.append(sec.header)
        lines.extend(f"{o.key}={o.value}" for o in sec.options)
        lines.append("")
    return "\n".join(lines), False


def _structure(cfg: CfgFile) -> list:
    return [(s.header, [(o.key, o.value) for o in s.options]) for s in [cfg.net] + cfg.sections]


# ------------------------------------------------------------------------------------------------
# (1) The plan: what folds into what, and why not


@dataclass(frozen=True)
class _Decision:
    """One BN layer: folded ``into`` a layer (``reason`` None), or kept for ``reason`` (``into`` None)."""

    index: int
    type: str
    part: str | None
    into: int | None = None
    reason: str | None = None


@dataclass
class _Plan:
    """What fold_network does, decided from the network (its layers, the references the builder
    resolved, its arrays): the decisions in network order, the folded arrays per (layer, part), the
    layers whose batch_normalize lines go, and the [batchnorm] sections merged (index -> absorber)."""

    decisions: list = field(default_factory=list)
    affines: dict = field(default_factory=dict)
    drop_bn: set = field(default_factory=set)
    removed: dict = field(default_factory=dict)

    def fold(self, lyr: DarknetLayer, part: str | None, into: int) -> None:
        self.decisions.append(_Decision(lyr.index, lyr.type, part, into=into))

    def keep(self, lyr: DarknetLayer, part: str | None, reason: str) -> None:
        self.decisions.append(_Decision(lyr.index, lyr.type, part, reason=reason))


def _readers(net: Network) -> dict:
    """layer index -> the later layers that read its output by reference (not as the next layer): every
    reference the builder resolved except ``share_index`` (which shares weights, not outputs)."""
    out: dict = {}
    for lyr in net.layers:
        refs = {i for r in lyr.refs if r.key != "share_index" for i in r.layers}
        for r in refs:
            out.setdefault(r, []).append(lyr.index)
    return out


def _sharers(net: Network) -> dict:
    """layer index -> the layers sharing its weights (``share_index``)."""
    out: dict = {}
    for lyr in net.layers:
        for r in lyr.refs:
            if r.key == "share_index":
                out.setdefault(r.layers[0], []).append(lyr.index)
    return out


class _Planner:
    """Walks the layers once and decides every BN layer's fate (:class:`_Plan`).

    A convolutional/connected layer folds its own BN; it then becomes the *head* that may absorb the
    [batchnorm] sections right after it (its chain), when its output is not changed after the affine
    part (linear activation, no antialiasing...) and nothing else reads it."""

    def __init__(self, net: Network, fl: Flavor, cfg: CfgFile) -> None:
        self.net, self.fl, self.cfg = net, fl, cfg
        self.init_rv = net.flavor.init_rolling_variance
        self.readers = _readers(net)
        self.sharers = _sharers(net)
        self.plan = _Plan()
        self.head: _Affine | None = None  # the layer that may absorb the [batchnorm] after it
        self.head_index = -1
        self.chain_last = -1  # the last layer of head's chain (head or a merged [batchnorm])
        self.head_why = "there is no layer before it"

    # -- what the cfg says about a layer -----------------------------------------------------------
    def _opt_int(self, i: int, key: str) -> int:
        o = self.cfg.sections[i].find(key)
        return c_atoi(o.value)[0] if o is not None else 0

    def _activation(self, i: int) -> str:
        return self.cfg.sections[i].get_str("activation", "logistic") or "logistic"

    def _binary(self, i: int) -> bool:
        return bool(
            self._opt_int(i, "xnor") or (self._opt_int(i, "binary") and self.net.layers[i].type == "convolutional")
        )

    def _unmodifiable(self, lyr: DarknetLayer) -> str | None:
        """Why this layer's weights must not change, or None."""
        e = lyr.extras
        if e.get("dontload"):
            return "dontload=1: its parameters are not read from the weights file"
        if e.get("dontloadscales"):
            return "dontloadscales=1: its BN parameters are not read from the weights file"
        if e.get("numload"):
            return f"numload={e['numload']}: only part of its parameters are read from the weights file"
        if e.get("dontsave"):
            return "dontsave=1: its parameters are not written to the weights file"
        if lyr.type == "convolutional" and self.net.fork == "alexeyab":
            tied = [k for k in _TIED if self._opt_int(lyr.index, k)]
            if tied:
                return f"{tied[0]}=1: its weights are tied across filters"
        return None

    def _own_bn(self, host: DarknetLayer, i: int) -> tuple[_Affine | None, str | None]:
        params = _bn_params(host, self.init_rv)
        a, c = bn_affine(*params, self.fl)
        aff = _Affine(_array(host, "weights", self.init_rv), None, self._binary(i))
        why = aff.fold(a, c, params, self.fl)
        return (None, why) if why else (aff, None)

    # -- the walk ----------------------------------------------------------------------------------
    def run(self) -> _Plan:
        for lyr in self.net.layers:
            if lyr.type == "batchnorm":
                self._batchnorm(lyr)
                continue
            if self.head is not None:
                self.head.release()
            self.head, self.head_index, self.chain_last = None, lyr.index, lyr.index
            if lyr.type in ("convolutional", "connected"):
                self._weighted(lyr)
            else:
                self.head_why = f"layer {lyr.index} before it is a {lyr.type} layer, not convolutional or connected"
                # the inner layers carry the BN (make_rnn_layer/make_crnn_layer leave the outer flag at 0)
                if lyr.type in _RECURRENT and any(p.batch_normalize for p in lyr.parts.values()):
                    self._recurrent(lyr)
        # the heads that absorbed nothing
        self.plan.affines = {k: v for k, v in self.plan.affines.items() if v.w32 is not None}
        return self.plan

    def _batchnorm(self, lyr: DarknetLayer) -> None:
        """A [batchnorm] section: merged into the head of the chain it ends, or kept."""
        i, plan, head = lyr.index, self.plan, self.head
        why = self.head_why if (head is None or self.chain_last != i - 1) else None
        if why is None and self.readers.get(i - 1):
            why = (
                f"the output of layer {i - 1} before it is also read by layer(s) "
                f"{', '.join(map(str, sorted(self.readers[i - 1])))}"
            )
        if why is None and head is not None:
            params = _bn_params(lyr, self.init_rv)
            a, c = bn_affine(*params, self.fl)
            why = head.fold(a, c, params, self.fl)
            if why is not None:
                why = f"merging it into layer {self.head_index}: {why}"
        if why is None:
            plan.removed[i] = self.head_index
            plan.fold(lyr, None, self.head_index)
            self.chain_last = i
        else:
            plan.keep(lyr, None, why)
            if head is not None:
                head.release()
            self.head, self.head_why = None, f"layer {i} before it is a [batchnorm] left in place"

    def _weighted(self, lyr: DarknetLayer) -> None:
        """A convolutional or connected layer: its own BN folded (or kept), then whether it heads a chain."""
        i, t, plan, layers = lyr.index, lyr.type, self.plan, self.net.layers
        why = self._unmodifiable(lyr)
        src = lyr.extras.get("share_index")
        if src is not None:  # AlexeyAB shares weights, biases and BN arrays with layer src
            if lyr.batch_normalize:
                if src in plan.drop_bn:
                    plan.drop_bn.add(i)
                    plan.fold(lyr, None, src)
                elif not layers[src].batch_normalize:
                    plan.keep(lyr, None, f"it shares the weights of layer {src}, which has no batch normalization")
                else:
                    plan.keep(
                        lyr, None, f"it shares the weights of layer {src}, whose batch normalization is not folded"
                    )
            self.head_why = f"layer {i} before it shares the weights of layer {src} (share_index)"
            return
        sharers = self.sharers.get(i, [])
        mismatch = [j for j in sharers if bool(layers[j].batch_normalize) != bool(lyr.batch_normalize)]
        if lyr.batch_normalize:
            aff = None
            if why is None and mismatch:
                why = f"layer {mismatch[0]} shares its weights (share_index) without batch normalization"
            if why is None:
                aff, why = self._own_bn(lyr, i)
            if aff is None:
                plan.keep(lyr, None, why or "")
                self.head_why = f"the batch normalization of layer {i} before it is left in place"
                return
            plan.affines[(i, None)] = aff
            plan.drop_bn.add(i)
            plan.fold(lyr, None, i)
        if why is not None:
            self.head_why = f"layer {i} before it cannot be changed: {why}"
        elif sharers:
            self.head_why = f"layer {i} before it shares its weights with layer(s) {', '.join(map(str, sharers))}"
        elif self._activation(i) != "linear":
            self.head_why = f"layer {i} before it has activation={self._activation(i)}, not linear"
        elif (
            t == "convolutional" and self.net.fork == "alexeyab" and any(self._opt_int(i, k) for k in _AFTER_ACTIVATION)
        ):
            k = next(k for k in _AFTER_ACTIVATION if self._opt_int(i, k))
            self.head_why = f"layer {i} before it has {k}=1, which changes its output after the activation"
        else:
            self.head = plan.affines.get((i, None))
            if self.head is None:
                self.head = _Affine(
                    _array(lyr, "weights", self.init_rv), _array(lyr, "biases", self.init_rv), self._binary(i)
                )
                plan.affines[(i, None)] = self.head
        own = plan.affines.get((i, None))
        if own is not None and own is not self.head:
            own.release()

    def _recurrent(self, lyr: DarknetLayer) -> None:
        """rnn/gru/lstm/crnn/conv_lstm: the inner layers share one batch_normalize key, all fold or none."""
        i, plan = lyr.index, self.plan
        why = self._unmodifiable(lyr)
        parts: dict = {}
        for pname, part in lyr.parts.items():
            if why is not None:
                break
            aff, pwhy = self._own_bn(part, i)
            if aff is None:
                why = f"its inner layers share one batch_normalize key, and {pname} cannot be folded: {pwhy}"
            else:
                aff.release()
            parts[pname] = aff
        for pname in lyr.parts:
            if why is None:
                plan.affines[(i, pname)] = parts[pname]
                plan.fold(lyr, pname, i)
            else:
                plan.keep(lyr, pname, why)
        if why is None:
            plan.drop_bn.add(i)


# ------------------------------------------------------------------------------------------------
# (2) The steps that apply it


def fold_network(
    net: Network, *, flavor: str | Flavor | None = None, cfg_text: str | bytes | None = None
) -> tuple[Network, FoldReport]:
    """Fold the network's batch normalizations into its convolutional and connected layers.

    Args:
        net: a :class:`~darknet_bn.darknet.model.Network` (normally loaded with weights; without, Darknet's
            initial values are folded). Not modified.
        flavor: whose inference denominator to use (default: the network's). It must follow the same
            fork's file rules as the network (:attr:`Flavor.fork <darknet_bn.flavors.Flavor.fork>`).
        cfg_text: the cfg text the network was built from, to keep its comments; default: for a
            network made by this function its folded cfg, else the file ``net.cfg.name`` when it still
            holds that cfg, else the cfg is written from its parsed options (``report.comments_kept``
            is then False).

    Returns:
        ``(folded, report)``: a new :class:`~darknet_bn.darknet.model.Network` built from the folded cfg
        (``report.cfg_text``) whose arrays are float32 copies -- the folded weights and biases where BN
        was folded, the original values elsewhere -- and with the original's ``.weights`` header; and a
        :class:`FoldReport`. ``save_folded(folded, report, cfg_path, weights_path)`` writes both files.

    Raises:
        TypeError: ``net`` is not a Network.
        ValueError: a flavor of the other fork; ``cfg_text`` that is not the network's cfg.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a darknet_bn Network, got {type(net).__name__}")
    fl = net.flavor if flavor is None else get_flavor(flavor)
    if fl.fork != net.fork:
        raise ValueError(
            f"flavor {fl.name!r} follows {fl.fork}'s Darknet rules, the network was loaded by "
            f"{net.fork}'s: load it with that flavor"
        )
    text, original = _source_text(net, cfg_text)
    cfg = parse_cfg_text(text, net.name, fork=net.fork, warn=False)  # line numbers of this text; same sections
    plan = _Planner(net, fl, cfg).run()
    index_map = _index_map(len(net.layers), plan.removed)
    new_text = _edit_cfg(text, cfg, net, plan, index_map)
    new_cfg = parse_cfg_text(new_text, f"{net.name} (folded)", fork=net.fork, warn=False)
    batch = net.batch if net.time_steps == 1 else None
    new = load_network(new_cfg, batch=batch, flavor=fl)
    _fill(net, new, plan.affines, plan.removed, index_map)
    new.header = net.header
    _FOLDED_TEXT[new] = new_text
    report = FoldReport(
        flavor=fl,
        folded=tuple(
            FoldedBN(d.index, d.type, d.part, d.into, index_map[d.into]) for d in plan.decisions if d.into is not None
        ),
        kept=tuple(
            KeptBN(d.index, d.type, d.part, index_map[d.index], d.reason or "")
            for d in plan.decisions
            if d.into is None
        ),
        removed=tuple(sorted(plan.removed)),
        index_map=tuple(index_map),
        cfg_text=new_text,
        comments_kept=original,
        rules=net.rules,
    )
    return new, report


def _index_map(n_layers: int, removed: dict) -> list:
    """original layer index -> folded index; a removed [batchnorm] maps to the layer that absorbed it."""
    index_map: list = []
    n = 0
    for i in range(n_layers):
        if i in removed:
            index_map.append(index_map[removed[i]])
        else:
            index_map.append(n)
            n += 1
    return index_map


def _fill(net: Network, new: Network, affines: dict, removed: dict, index_map: list) -> None:
    """Copy the arrays into the folded network (folded weights and biases where BN was folded)."""
    if len(new.layers) != len(net.layers) - len(removed):
        raise RuntimeError(
            f"internal error: the folded cfg has {len(new.layers)} layers, expected {len(net.layers) - len(removed)}"
        )
    for lyr in net.layers:
        if lyr.index in removed:
            continue
        nl = new.layers[index_map[lyr.index]]
        if nl.type != lyr.type:
            raise RuntimeError(f"internal error: layer {lyr.index} ({lyr.type}) became {nl.type}")
        if lyr.extras.get("share_index") is not None:
            continue  # its arrays are its source's (one dict in both networks)
        hosts: list[tuple[str | None, DarknetLayer, DarknetLayer]] = [(None, lyr, nl)]
        hosts += [(p, lyr.parts[p], nl.parts[p]) for p in lyr.parts]
        for pname, oh, nh in hosts:
            aff = affines.get((lyr.index, pname))
            for name in nh.array_names():
                if aff is not None and name in ("weights", "biases"):
                    w, b = aff.arrays()
                    a = w if name == "weights" else b
                else:
                    src = oh.arrays.get(name)
                    if src is None:
                        continue  # never loaded: the folded network takes Darknet's initial value too
                    a = np.array(src, dtype=np.float32, copy=True)
                nh.arrays[name] = np.ascontiguousarray(a, dtype=np.float32).reshape(nh.array_shape(name))


# The cfg text


def _blank(raw: str) -> bool:
    nul = raw.find("\0")
    if nul >= 0:
        raw = raw[:nul]
    return not raw.strip(_WS)


def _edit_cfg(text: str, cfg: CfgFile, net: Network, plan: _Plan, index_map: list) -> str:
    """The cfg text with the plan's lines taken out (:func:`_dropped_lines`) and the layer references
    renumbered by ``index_map`` (:func:`_renumber`)."""
    raw = text.split("\n")  # line k of Darknet's reading is raw[k - 1] (cfg._lines splits the same way)
    gone = _dropped_lines(raw, cfg, plan)
    _renumber(raw, cfg, net, plan.removed, index_map, gone)
    return "\n".join(r for k, r in enumerate(raw, 1) if k not in gone)


def _dropped_lines(raw: list, cfg: CfgFile, plan: _Plan) -> set:
    """The line numbers that go: batch_normalize (and AlexeyAB's cbn) of the layers whose BN folded,
    the merged [batchnorm] sections with the blank lines after them."""
    gone: set = set()
    for i in plan.drop_bn:
        sec = cfg.sections[i]
        keys = {"batch_normalize"}
        if cfg.fork == "alexeyab" and sec.type == "convolutional":
            keys.add("cbn")
        gone.update(o.line for o in sec.options if o.key in keys)
    for i in plan.removed:
        sec = cfg.sections[i]
        last = max([o.line for o in sec.options], default=sec.line)
        gone.update(range(sec.line, last + 1))
        if sec.line == 1 or _blank(raw[sec.line - 2]):  # and the blank lines after it
            stop = len(raw) - 1 if raw[-1] == "" else len(raw)  # a final "" is the last line's '\n'
            k = last + 1
            while k <= stop and _blank(raw[k - 1]):
                gone.add(k)
                k += 1
    return gone


def _renumber(raw: list, cfg: CfgFile, net: Network, removed: dict, index_map: list, gone: set) -> None:
    """Rewrite, in ``raw``, every layer reference the builder resolved (:attr:`DarknetLayer.refs`) to the
    folded network's indices (relative references stay relative)."""
    for lyr in net.layers:
        j = lyr.index
        if j in removed:
            continue
        for ref in lyr.refs:
            o = cfg.sections[j].find(ref.key)
            if o is None or o.line in gone:
                continue
            raw[o.line - 1] = _rewrite_refs(raw[o.line - 1], ref.layers, j, index_map)


def _rewrite_refs(line: str, targets: tuple, j: int, index_map: list) -> str:
    """``line`` (a raw ``key=value`` line of layer ``j``) with the integer each of its first
    ``len(targets)`` value pieces starts with (as C's atoi reads it) replaced by the folded index of
    that target (relative when written relative); spacing and whatever follows a number are kept."""
    nul = line.find("\0")
    tail = ""
    if nul >= 0:
        line, tail = line[:nul], line[nul:]
    eq = line.index("=")
    pieces = line[eq + 1 :].split(",")
    for k, (piece, target) in enumerate(zip(pieces, targets)):
        pos = [p for p, ch in enumerate(piece) if ch not in _WS]  # raw positions of what Darknet keeps
        stripped = "".join(piece[p] for p in pos)
        v, _ = c_atoi(stripped)
        nv = index_map[target] - index_map[j] if v < 0 else index_map[target]
        if nv == v:
            continue
        off = len(stripped) - len(stripped.lstrip(_C_SPACE))
        m = _INT_PREFIX.match(stripped, off)
        n = m.end() - off if m else 0
        if n:
            start, end = pos[off], pos[off + n - 1] + 1
        else:
            start = end = pos[off] if off < len(pos) else len(piece)
        pieces[k] = piece[:start] + str(nv) + piece[end:]
    return line[: eq + 1] + ",".join(pieces) + tail


# ================================================================================================
# Files


def save_folded(net: Network, report: FoldReport, cfg_path: str | os.PathLike, weights_path: str | os.PathLike) -> int:
    """Write the folded cfg (``report.cfg_text``, Latin-1 bytes as read) and ``net``'s ``.weights``
    (its header: the original file's). Both are written to temporary files next to their targets and
    renamed once both are complete, so an error leaves neither half-written. Returns the bytes of the
    weights file. Raises OSError when a file cannot be written."""
    data = report.cfg_text.encode("latin-1")
    tmp_cfg = f"{os.fspath(cfg_path)}.{os.getpid()}.tmp"
    tmp_w = f"{os.fspath(weights_path)}.{os.getpid()}.tmp"
    target = cfg_path
    try:
        with open(tmp_cfg, "wb") as f:
            f.write(data)
        target = weights_path
        n = net.save_weights(tmp_w)
        os.replace(tmp_w, weights_path)
        target = cfg_path
        os.replace(tmp_cfg, cfg_path)
    except OSError as e:  # name the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, os.fspath(target)) from e
    finally:
        for t in (tmp_cfg, tmp_w):
            if os.path.exists(t):
                os.remove(t)
    return n


def fold_files(
    cfg: str | os.PathLike,
    weights: str | os.PathLike,
    out_cfg: str | os.PathLike,
    out_weights: str | os.PathLike,
    *,
    flavor: str | Flavor | None = None,
    allow_trailing: bool = False,
    verify: bool = True,
) -> FoldReport:
    """Fold a Darknet model on disk: read ``cfg`` and ``weights`` by the flavor's fork rules (``flavor=None``:
    the rules detected from the cfg, see :func:`darknet_bn.darknet.cfg.detect_fork`, and that fork's flavor), fold
    with its denominator, write ``out_cfg`` and ``out_weights``. Keys the fork ignores give a
    :class:`~darknet_bn.darknet.cfg.DarknetCfgWarning` (once, for the input cfg). With ``verify``, the written files are
    loaded back and every array compared bit for bit (RuntimeError if they differ).

    Raises:
        DarknetCfgError, DarknetWeightsError: a bad cfg, weights that do not match it.
        OSError: a file that cannot be read or written.
        ValueError: an output path that is one of the inputs.
    """
    for out in (out_cfg, out_weights):
        for src in (cfg, weights):
            if os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src):
                raise ValueError(f"{os.fspath(out)}: the output would overwrite the input {os.fspath(src)}")
    if os.path.abspath(out_cfg) == os.path.abspath(out_weights):
        raise ValueError(f"{os.fspath(out_cfg)}: the folded cfg and weights need two different files")
    with open(cfg, "rb") as f:
        text = f.read()
    parsed = parse_cfg_text(text, os.fspath(cfg), flavor=flavor)
    fl = get_flavor(flavor if flavor is not None else parsed.fork)
    net = load_network(parsed, weights, flavor=fl, allow_trailing=allow_trailing)
    new, report = fold_network(net, flavor=fl, cfg_text=text)
    save_folded(new, report, out_cfg, out_weights)
    if verify:
        back = load_network(parse_cfg_file(out_cfg, fork=net.fork, warn=False), out_weights, flavor=fl)
        for a, b in zip(new.layers, back.layers):
            for ha, hb in [(a, b)] + [(a.parts[p], b.parts[p]) for p in a.parts]:
                for name in ha.array_names():
                    if ha.arrays.get(name) is None and hb.arrays.get(name) is None:
                        continue
                    if not np.array_equal(ha.array(name).view(np.uint32), hb.array(name).view(np.uint32)):
                        raise RuntimeError(
                            f"{os.fspath(out_weights)}: layer {a.index} {name} differs after loading "
                            "the written files back"
                        )
    return report
