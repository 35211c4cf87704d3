"""Darknet's ``.cfg`` files, read by Darknet's own rules.

A cfg file is a list of sections (``[net]``, ``[convolutional]``, ...), each a list of ``key=value``
options. Darknet reads it line by line (``read_cfg`` in ``src/parser.c``, ``read_option`` in
``src/option_list.c``, ``strip`` and ``fgetl`` in ``src/utils.c``), and this module follows it:

- A line ends at ``\\n``; it is cut at a NUL byte (C strings). Every space, tab, ``\\n`` and ``\\r`` in
  it is removed -- *inside* the line too: ``fil ters = 3 2`` is ``filters=32``. (pjreddie's ``strip``
  keeps ``\\r``, which makes it fail on Windows line endings; AlexeyAB's removes it, and so does this
  module for both forks: Windows line endings work.)
- An empty line, or one starting with ``#`` or ``;``, is skipped. A ``#`` later in a line is *not* a
  comment: it stays in the value (``batch=64#x`` reads as ``64`` through ``atoi``).
- A line starting with ``[`` starts a section; its type is the whole line (``[net]``, ``[conv]``...).
- Any other line is ``key=value``, split at the first ``=``. When a key appears twice in a section the
  *first* occurrence is used (``option_find`` walks the list from its front); the later ones are
  reported as warnings.
- Numbers are read with C's ``atoi``/``atof``: the longest numeric prefix (``3.7`` as an int is 3,
  ``abc`` is 0). Such lossy reads are reported as warnings.

Where Darknet crashes or silently misbehaves, :class:`DarknetCfgError` is raised instead, naming the
file, the line and the problem: an option before any section (Darknet dereferences NULL), ``key=``
with no value (Darknet prints an error and drops the line), a line without ``=`` (Darknet keeps a key
with a NULL value), an empty key, a section type the fork does not know (Darknet builds an empty
layer), a first section that is not ``[net]``/``[network]``, no section at all, an integer that does
not fit in a C ``int``.

Which fork's rules: an explicit ``fork=`` or ``flavor=`` chooses them. Without either, they are
detected from the file (:func:`detect_fork`): a section type, a key or a value that only AlexeyAB's
parser reads (:data:`ALEXEYAB_ONLY_SECTIONS`, :data:`ALEXEYAB_ONLY_KEYS`, :data:`ALEXEYAB_ONLY_VALUES`,
derived from the two forks' ``src/parser.c`` and ``src/activations.c``) means AlexeyAB's rules; a cfg with
none of them is read by pjreddie's rules (both forks then build the same sizes). :attr:`CfgFile.rules`
says which rules were used and why.

Keys the fork's parser never reads for that section type, and repeated keys (Darknet reads the first),
are ignored by Darknet (it prints ``Unused field``); they are reported as a
:class:`DarknetCfgWarning` naming file, line and key (``warn=True``, the default), and listed in
:attr:`CfgFile.ignored` and :attr:`CfgFile.warnings`.

Path or text: :func:`parse_cfg` takes a :class:`pathlib.Path` (or any ``os.PathLike``), ``bytes``
(the file's content) or a ``str``. A ``str`` containing a line break (``\\n`` or ``\\r``) is the cfg
text itself; any other ``str`` is a file path. :func:`parse_cfg_text` and :func:`parse_cfg_file` take
one kind explicitly.
"""

from __future__ import annotations

import math
import os
import re
import warnings as _warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

from ..flavors import Flavor, get_flavor

__all__ = [
    "DarknetCfgError",
    "DarknetCfgWarning",
    "IgnoredKey",
    "detect_fork",
    "ALEXEYAB_ONLY_SECTIONS",
    "ALEXEYAB_ONLY_KEYS",
    "ALEXEYAB_ONLY_VALUES",
    "Option",
    "Section",
    "CfgFile",
    "parse_cfg",
    "parse_cfg_text",
    "parse_cfg_file",
    "FORKS",
    "fork_of",
    "section_type",
    "known_keys",
    "c_atoi",
    "c_atof",
    "INT_MAX",
    "INT_MIN",
]

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
_LONG_MAX = 2**63 - 1
_LONG_MIN = -(2**63)

FORKS = ("pjreddie", "alexeyab")

CfgSource = Union[str, bytes, "os.PathLike[str]"]


class DarknetCfgError(ValueError):
    """A cfg file Darknet cannot build a network from (or would misread).

    Attributes:
        file: the file's name (``"<text>"`` or the name given for a text).
        line: the 1-based line number the problem is on, or ``None`` when it is not one line's.
        problem: what is wrong, in words.
    """

    def __init__(self, file: str, line: int | None, problem: str) -> None:
        self.file = file
        self.line = line
        self.problem = problem
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {problem}")


class DarknetCfgWarning(UserWarning):
    """A cfg key the chosen fork's Darknet ignores (it prints ``Unused field``): a key its parser never
    reads in that section type, or a repeated key (Darknet reads the first occurrence).

    Attributes:
        file: the file's name; line: the key's 1-based line; key: the key; section: the header
        (``"[route]"``).
    """

    def __init__(
        self,
        message: str,
        file: str = "<text>",
        line: int | None = None,
        key: str | None = None,
        section: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file, self.line, self.key, self.section = file, line, key, section


@dataclass(frozen=True)
class IgnoredKey:
    """One key Darknet ignores: where it is, and why (``"unread"`` or ``"repeated"``)."""

    file: str
    line: int
    section: str
    key: str
    value: str
    why: str
    message: str


def fork_of(flavor: str | Flavor) -> str:
    """The Darknet fork whose file rules a flavor follows, :attr:`Flavor.fork
    <darknet_bn.flavors.Flavor.fork>`: ``"pjreddie"`` for the pjreddie flavor, ``"alexeyab"`` for
    ``"alexeyab"`` and ``"torch"``. Takes a flavor name or a :class:`~darknet_bn.flavors.Flavor`
    (ValueError for an unknown name, TypeError for anything else)."""
    return get_flavor(flavor).fork


# ------------------------------------------------------------------------------------------------
# C's atoi and atof

_C_SPACE = " \t\n\v\f\r"
_INT_RE = re.compile(r"[+-]?[0-9]+")
_DEC_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_RE = re.compile(r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)")
_SPECIAL_RE = re.compile(r"([+-]?)(inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)


def c_atoi(text: str) -> tuple[int, bool]:
    """C's ``atoi`` (glibc: ``(int) strtol(text, NULL, 10)``): leading whitespace, a sign, digits;
    whatever follows is ignored, no digits give 0.

    Returns:
        ``(value, exact)``: ``exact`` is False when characters were ignored (``"3.5"``, ``"12abc"``,
        ``""``). The value is *not* truncated to 32 bits: callers check the range (a C ``int`` would
        wrap).
    """
    s = text.lstrip(_C_SPACE)
    m = _INT_RE.match(s)
    if not m:
        return 0, False
    digits = m.group(0).lstrip("+-").lstrip("0")
    if len(digits) > 19:  # beyond a C long: strtol saturates (and Python's int() limits digit counts)
        v = _LONG_MIN if m.group(0).startswith("-") else _LONG_MAX
    else:
        v = max(_LONG_MIN, min(_LONG_MAX, int(m.group(0))))
    return v, m.end() == len(s) and s == text


def c_atof(text: str) -> tuple[float, bool]:
    """C's ``atof`` (``strtod``): the longest prefix that is a decimal or hexadecimal float, ``inf``,
    ``infinity`` or ``nan``; 0.0 when there is none. Returns ``(value, exact)`` as :func:`c_atoi`."""
    s = text.lstrip(_C_SPACE)
    best_end, value = 0, 0.0
    m = _HEX_RE.match(s)
    if m:
        mant = m.group(2)
        if "p" not in mant.lower():
            mant += "p0"
        try:
            value = float.fromhex(m.group(1) + "0x" + mant)
        except OverflowError:
            value = math.copysign(math.inf, -1.0 if m.group(1) == "-" else 1.0)
        best_end = m.end()
    else:
        m = _SPECIAL_RE.match(s)
        if m:
            word = m.group(2).lower()
            value = math.inf if word.startswith("inf") else math.nan
            if m.group(1) == "-":
                value = -value
            best_end = m.end()
        else:
            m = _DEC_RE.match(s)
            if m:
                value = float(m.group(0))  # Python overflows to inf as strtod does
                best_end = m.end()
    if best_end == 0:
        return 0.0, False
    return value, best_end == len(s) and s == text


# ------------------------------------------------------------------------------------------------
# Section types: the header as written -> the fork's layer type (Darknet's LAYER_TYPE, lower-cased)

_COMMON_TYPES = {
    "[shortcut]": "shortcut",
    "[crop]": "crop",
    "[cost]": "cost",
    "[detection]": "detection",
    "[region]": "region",
    "[yolo]": "yolo",
    "[local]": "local",
    "[conv]": "convolutional",
    "[convolutional]": "convolutional",
    "[activation]": "active",
    "[net]": "network",
    "[network]": "network",
    "[crnn]": "crnn",
    "[gru]": "gru",
    "[lstm]": "lstm",
    "[rnn]": "rnn",
    "[conn]": "connected",
    "[connected]": "connected",
    "[max]": "maxpool",
    "[maxpool]": "maxpool",
    "[avg]": "avgpool",
    "[avgpool]": "avgpool",
    "[dropout]": "dropout",
    "[lrn]": "normalization",
    "[normalization]": "normalization",
    "[batchnorm]": "batchnorm",
    "[soft]": "softmax",
    "[softmax]": "softmax",
    "[route]": "route",
    "[upsample]": "upsample",
}
_SECTION_TYPES = {
    "pjreddie": {
        **_COMMON_TYPES,
        "[iseg]": "iseg",
        "[deconv]": "deconvolutional",
        "[deconvolutional]": "deconvolutional",
        "[logistic]": "logxent",
        "[l2norm]": "l2norm",
        "[reorg]": "reorg",
    },
    "alexeyab": {
        **_COMMON_TYPES,
        "[scale_channels]": "scale_channels",
        "[sam]": "sam",
        "[Gaussian_yolo]": "gaussian_yolo",
        "[conv_lstm]": "conv_lstm",
        "[history]": "history",
        "[local_avg]": "local_avgpool",
        "[local_avgpool]": "local_avgpool",
        "[reorg3d]": "reorg",
        "[reorg]": "reorg_old",
        "[contrastive]": "contrastive",
        "[empty]": "empty",
        "[silence]": "empty",
        "[implicit]": "implicit",
    },
}


def section_type(header: str, fork: str) -> str | None:
    """The fork's layer type for a section header as written (``"[conv]"`` -> ``"convolutional"``),
    ``None`` when the fork does not know it. Headers are case-sensitive, as in Darknet."""
    return _SECTION_TYPES[fork].get(header)


# ------------------------------------------------------------------------------------------------
# The keys each fork's parser reads, per layer type (from parse_* in each fork's src/parser.c;
# keys read only under some conditions, e.g. [net] step= with policy=step, are included).


def _keys(text: str) -> frozenset:
    return frozenset(text.split())


_PJ_COMMON = _keys("truth onlyforward stopbackward dontsave dontload numload dontloadscales learning_rate smooth")
_AB_COMMON = _keys(
    "clip onlyforward dont_update burnin_update stopbackward train_only_bn dontload dontloadscales learning_rate"
)
_PJ_NET = _keys(
    "batch subdivisions time_steps learning_rate momentum decay notruth random adam B1 B2 eps height width "
    "channels inputs max_crop min_crop max_ratio min_ratio center clip angle aspect saturation exposure hue "
    "policy burn_in power step scale steps scales gamma max_batches"
)
_AB_NET = _keys(
    "max_batches batch learning_rate learning_rate_min sgdr_cycle sgdr_mult momentum decay subdivisions "
    "time_steps track augment_speed sequential_subdivisions try_fix_nan weights_reject_freq equidistant_point "
    "badlabels_rejection_percentage num_sigmas_reject_badlabels ema_alpha use_cuda_graph loss_scale "
    "dynamic_minibatch optimized_memory workspace_size_limit_MB adam B1 B2 eps height width channels inputs "
    "max_crop min_crop flip blur gaussian_noise mixup cutmix mosaic letter_box mosaic_bound contrastive "
    "contrastive_jit_flip contrastive_color unsupervised label_smooth_eps resize_step attention adversarial_lr "
    "max_chart_loss angle aspect saturation exposure hue power policy burn_in step scale steps scales "
    "seq_scales gamma show_receptive_field"
)
_YOLO_AB = _keys(
    "classes num mask max show_details max_delta counters_per_class label_smooth_eps scale_x_y objectness_smooth "
    "new_coords iou_normalizer obj_normalizer cls_normalizer delta_normalizer iou_loss iou_thresh_kind beta_nms "
    "nms_kind jitter resize focal_loss ignore_thresh truth_thresh iou_thresh random track_history_size "
    "sim_thresh dets_for_track dets_for_show track_ciou_norm embedding_layer map anchors"
)
_KEYS = {
    "pjreddie": {
        "network": _PJ_NET,
        "convolutional": _keys(
            "filters size stride pad padding groups activation batch_normalize binary xnor flipped dot"
        ),
        "deconvolutional": _keys("filters size stride activation batch_normalize pad padding"),
        "local": _keys("filters size stride pad activation"),
        "crnn": _keys("output_filters hidden_filters activation batch_normalize shortcut"),
        "rnn": _keys("output activation batch_normalize shortcut"),
        "gru": _keys("output batch_normalize tanh"),
        "lstm": _keys("output batch_normalize"),
        "connected": _keys("output activation batch_normalize"),
        "softmax": _keys("groups temperature tree spatial noloss"),
        "yolo": _keys("classes num mask max jitter ignore_thresh truth_thresh random map anchors"),
        "iseg": _keys("classes ids"),
        "region": _keys(
            "coords classes num log sqrt softmax background max jitter rescore thresh classfix "
            "absolute random coord_scale object_scale noobject_scale mask_scale class_scale "
            "bias_match tree map anchors"
        ),
        "detection": _keys(
            "coords classes rescore num side softmax sqrt max coord_scale forced object_scale "
            "noobject_scale class_scale jitter random reorg"
        ),
        "cost": _keys("type scale ratio noobj thresh"),
        "crop": _keys("crop_height crop_width flip angle saturation exposure noadjust shift"),
        "reorg": _keys("stride reverse flatten extra"),
        "maxpool": _keys("stride size padding"),
        "avgpool": frozenset(),
        "dropout": _keys("probability"),
        "normalization": _keys("alpha beta kappa size"),
        "batchnorm": frozenset(),
        "shortcut": _keys("from activation alpha beta"),
        "l2norm": frozenset(),
        "logxent": frozenset(),
        "active": _keys("activation"),
        "upsample": _keys("stride scale"),
        "route": _keys("layers"),
    },
    "alexeyab": {
        "network": _AB_NET,
        "convolutional": _keys(
            "filters groups size stride_x stride_y stride dilation antialiasing pad padding "
            "activation assisted_excitation share_index batch_normalize cbn binary xnor "
            "bin_output sway rotate stretch stretch_sway flipped dot angle grad_centr reverse "
            "coordconv stream wait_stream"
        ),
        "local": _keys("filters size stride pad activation"),
        "crnn": _keys("size stride dilation pad padding output hidden groups activation batch_normalize xnor shortcut"),
        "rnn": _keys("output hidden activation batch_normalize logistic shortcut"),
        "gru": _keys("output batch_normalize"),
        "lstm": _keys("output batch_normalize"),
        "conv_lstm": _keys(
            "size stride dilation pad padding output groups activation batch_normalize xnor "
            "peephole bottleneck state_constrain shortcut lstm_activation time_normalizer"
        ),
        "history": _keys("history_size"),
        "connected": _keys("output activation batch_normalize"),
        "softmax": _keys("groups temperature tree spatial noloss"),
        "contrastive": _keys("classes yolo_layer temperature cls_normalizer max_delta contrastive_neg_max"),
        "yolo": _YOLO_AB,
        "gaussian_yolo": _keys(
            "classes max num mask max_delta counters_per_class label_smooth_eps scale_x_y objectness_smooth "
            "uc_normalizer iou_normalizer obj_normalizer cls_normalizer delta_normalizer iou_loss "
            "iou_thresh_kind beta_nms nms_kind yolo_point jitter resize ignore_thresh truth_thresh iou_thresh "
            "random map anchors"
        ),
        "region": _keys(
            "coords classes num max log sqrt softmax focal_loss jitter resize rescore thresh classfix "
            "absolute random coord_scale object_scale noobject_scale mask_scale class_scale "
            "bias_match tree map anchors"
        ),
        "detection": _keys(
            "coords classes rescore num side softmax sqrt max coord_scale forced object_scale "
            "noobject_scale class_scale jitter resize random reorg"
        ),
        "cost": _keys("type scale ratio"),
        "crop": _keys("crop_height crop_width flip angle saturation exposure noadjust shift"),
        "reorg": _keys("stride reverse"),
        "reorg_old": _keys("stride reverse"),
        "local_avgpool": _keys("stride stride_x stride_y size padding"),
        "maxpool": _keys(
            "stride stride_x stride_y size padding maxpool_depth out_channels antialiasing maxpool_zero_nonmax"
        ),
        "avgpool": frozenset(),
        "dropout": _keys("probability dropblock dropblock_size_rel dropblock_size_abs"),
        "normalization": _keys("alpha beta kappa size"),
        "batchnorm": frozenset(),
        "shortcut": _keys("activation weights_type weights_normalization from"),
        "scale_channels": _keys("from scale_wh activation"),
        "sam": _keys("from activation"),
        "implicit": _keys("mean std filters atoms"),
        "active": _keys("activation"),
        "upsample": _keys("stride scale"),
        "route": _keys("layers groups group_id stream wait_stream"),
        "empty": frozenset(),
    },
}


def known_keys(layer_type: str, fork: str) -> frozenset:
    """The keys the fork's parser reads in a section of this layer type (including the keys every
    layer reads, such as ``dontload``; for ``network``, the ``[net]`` keys)."""
    keys = _KEYS[fork].get(layer_type, frozenset())
    if layer_type == "network":
        return keys
    return keys | (_PJ_COMMON if fork == "pjreddie" else _AB_COMMON)


# ------------------------------------------------------------------------------------------------
# What only AlexeyAB's parser reads: the evidence that a cfg is written for AlexeyAB's Darknet.
# Derived from the tables above (the parse_* of both forks' src/parser.c) and from get_activation
# (src/activations.c) and get_policy (src/parser.c) of both forks.

# Section headers only AlexeyAB's string_to_layer_type knows ([sam], [scale_channels], [implicit], ...).
ALEXEYAB_ONLY_SECTIONS = frozenset(h for h in _SECTION_TYPES["alexeyab"] if h not in _SECTION_TYPES["pjreddie"])

# Keys pjreddie's parser ignores but its own cfgs carry (an older pjreddie parser read them): no evidence.
# pjreddie's cfg/rnn.cfg and rnn.train.cfg set [rnn] hidden=.
_PJREDDIE_LEGACY_KEYS = {"[rnn]": frozenset({"hidden"})}


def _alexeyab_only_keys() -> dict:
    out = {}
    for header, ab_type in _SECTION_TYPES["alexeyab"].items():
        pj_type = _SECTION_TYPES["pjreddie"].get(header)
        if pj_type is None:
            continue
        only = known_keys(ab_type, "alexeyab") - known_keys(pj_type, "pjreddie")
        only -= _PJREDDIE_LEGACY_KEYS.get(header, frozenset())
        if only:
            out[header] = frozenset(only)
    return out


# Per section header both forks know: the keys only AlexeyAB's parser reads there (route groups= and
# group_id=, convolutional stride_x=/dilation=/antialiasing=, the [yolo] loss options, [net] mosaic=, ...).
ALEXEYAB_ONLY_KEYS: dict = _alexeyab_only_keys()

_PJ_ACTIVATIONS = frozenset(
    "logistic loggy relu elu selu relie plse hardtan lhtan linear ramp leaky tanh stair".split()
)
_AB_ACTIVATIONS = _PJ_ACTIVATIONS | frozenset(
    "swish mish hard_mish normalize_channels normalize_channels_softmax normalize_channels_softmax_maxval relu6 gelu "
    "revleaky".split()
)
# Values only AlexeyAB's Darknet knows, per key (pjreddie's get_activation falls back to relu and its
# get_policy to constant, silently changing the network).
ALEXEYAB_ONLY_VALUES: dict = {
    "activation": _AB_ACTIVATIONS - _PJ_ACTIVATIONS,
    "policy": frozenset({"sgdr"}),
}

_FORK_NAMES = {"pjreddie": "pjreddie's", "alexeyab": "AlexeyAB's"}


def _evidence(raw: list) -> list:
    """(line, what) for every AlexeyAB-only section, key or value of raw sections, in file order."""
    out = []
    for header, hline, options in raw:
        if header in ALEXEYAB_ONLY_SECTIONS:
            out.append((hline, f"section {header}"))
            continue
        only = ALEXEYAB_ONLY_KEYS.get(header, frozenset())
        known = header in _SECTION_TYPES["pjreddie"]
        for key, value, line in options:
            if key in only:
                out.append((line, f"{header} {key}="))
            elif (
                known
                and value in ALEXEYAB_ONLY_VALUES.get(key, ())
                and (key != "policy" or _SECTION_TYPES["pjreddie"][header] == "network")
            ):
                out.append((line, f"{header} {key}={value}"))
    return out


def _detect(raw: list) -> tuple[str, str]:
    ev = _evidence(raw)
    if ev:
        line, what = ev[0]
        more = f" (and {len(ev) - 1} more)" if len(ev) > 1 else ""
        return "alexeyab", (f"AlexeyAB's rules, detected: line {line}: {what} is read only by AlexeyAB's Darknet{more}")
    return "pjreddie", ("pjreddie's rules, detected: no section, key or value that only AlexeyAB's Darknet reads")


def detect_fork(source: CfgSource) -> tuple[str, str]:
    """The fork whose rules read a cfg by default, and why.

    Args:
        source: a path, ``bytes`` or cfg text, as :func:`parse_cfg` takes.

    Returns:
        ``(fork, reason)``: ``"alexeyab"`` when the cfg has a section, key or value only AlexeyAB's parser
        reads (:data:`ALEXEYAB_ONLY_SECTIONS`, :data:`ALEXEYAB_ONLY_KEYS`, :data:`ALEXEYAB_ONLY_VALUES`),
        else ``"pjreddie"``; ``reason`` names the first line that decided.

    Raises:
        DarknetCfgError: a cfg Darknet cannot read at all; OSError: an unreadable file.
    """
    text, name = _source_text(source)
    return _detect(_raw_sections(text, name))


# ------------------------------------------------------------------------------------------------
# The parsed file


@dataclass
class Option:
    """One ``key=value`` line: key and value as Darknet keeps them (whitespace removed), its line."""

    key: str
    value: str
    line: int


@dataclass
class Section:
    """One section: ``header`` as written (whitespace removed, e.g. ``"[conv]"``), ``type`` the fork's
    layer type (``"convolutional"``, ``"network"`` for ``[net]``...), its line, its options in file
    order. The accessors follow Darknet's ``option_find*``: the first occurrence of a key wins."""

    header: str
    type: str
    line: int
    options: list[Option] = field(default_factory=list)
    file: str = "<text>"
    warnings: list[str] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options)

    def find(self, key: str) -> Option | None:
        """The first option with this key, or ``None``."""
        for o in self.options:
            if o.key == key:
                return o
        return None

    def has(self, key: str) -> bool:
        return self.find(key) is not None

    def get_str(self, key: str, default: str | None = None) -> str | None:
        """``option_find_str``: the value, or ``default``."""
        o = self.find(key)
        return o.value if o is not None else default

    def get_int(self, key: str, default: int) -> int:
        """``option_find_int``: ``atoi`` of the value, or ``default``. Raises DarknetCfgError when the
        number does not fit in a C ``int``; warns when ``atoi`` ignores characters."""
        o = self.find(key)
        if o is None:
            return default
        v, exact = c_atoi(o.value)
        if not INT_MIN <= v <= INT_MAX:
            raise DarknetCfgError(
                self.file, o.line, f"{self.header} {key}={o.value}: out of the range of a C int ({INT_MIN}..{INT_MAX})"
            )
        if not exact:
            self.warnings.append(
                f"{self.file}:{o.line}: {self.header} {key}={o.value!r} is read as {v} "
                "(C atoi ignores what is not an integer)"
            )
        return v

    def get_float(self, key: str, default: float) -> float:
        """``option_find_float``: ``atof`` of the value, or ``default`` (warns as :meth:`get_int`)."""
        o = self.find(key)
        if o is None:
            return default
        v, exact = c_atof(o.value)
        if not exact:
            self.warnings.append(
                f"{self.file}:{o.line}: {self.header} {key}={o.value!r} is read as {v} "
                "(C atof ignores what is not a number)"
            )
        return v

    def error(self, problem: str, key: str | None = None) -> DarknetCfgError:
        """A DarknetCfgError about this section, at the key's line (or the header's)."""
        o = self.find(key) if key is not None else None
        return DarknetCfgError(self.file, o.line if o is not None else self.line, f"{self.header}: {problem}")


@dataclass
class CfgFile:
    """A parsed cfg: its name, the fork whose rules read it, ``net`` (the ``[net]`` section),
    ``sections`` (the layer sections after it, in order), ``warnings`` (strings naming file and
    line: repeated keys, keys the fork does not read, lossy numbers), ``rules`` (which fork's rules and
    why: asked for, or the line that decided the detection) and ``ignored`` (the keys the fork ignores,
    as :class:`IgnoredKey`, in line order)."""

    name: str
    fork: str
    net: Section
    sections: list[Section]
    warnings: list[str]
    rules: str = ""
    ignored: list = field(default_factory=list)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) as Darknet's fgetl + strip give them."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    for i, raw in enumerate(parts, 1):
        nul = raw.find("\0")
        if nul >= 0:
            raw = raw[:nul]
        yield i, raw.replace(" ", "").replace("\t", "").replace("\r", "")


def _raw_sections(text: str, name: str) -> list:
    """read_cfg + read_option, fork-independent: [(header, line, [(key, value, line)...])...]."""
    raw: list = []
    current: tuple[str, int, list] | None = None
    for no, line in _lines(text):
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            current = (line, no, [])
            raw.append(current)
            continue
        eq = line.find("=")
        if current is None:
            raise DarknetCfgError(
                name, no, f"{line!r} comes before any section (Darknet crashes on it); the file must start with [net]"
            )
        if eq < 0:
            raise DarknetCfgError(name, no, f"{current[0]}: line {line!r} has no '=' (expected key=value)")
        if eq == len(line) - 1:
            raise DarknetCfgError(name, no, f"{current[0]}: {line!r} has no value (Darknet drops the line)")
        if eq == 0:
            raise DarknetCfgError(name, no, f"{current[0]}: {line!r} has no key before '='")
        current[2].append((line[:eq], line[eq + 1 :], no))
    if not raw:
        raise DarknetCfgError(name, None, "no sections: a cfg starts with [net] and lists layers after it")
    return raw


def _as_text(text: str | bytes) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("latin-1")
    if not isinstance(text, str):
        raise TypeError(f"cfg text: expected str or bytes, got {type(text).__name__}")
    return text


def _read_file(path: str | os.PathLike) -> tuple[str, str]:
    path = os.fspath(path)
    with open(path, "rb") as f:
        return f.read().decode("latin-1"), str(path)


def _source_text(source: CfgSource) -> tuple[str, str]:
    """(text, name) of a path, bytes or text (see parse_cfg)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _as_text(source), "<text>"
    if isinstance(source, str):
        if "\n" in source or "\r" in source:
            return source, "<text>"
        return _read_file(source)
    if isinstance(source, os.PathLike):
        return _read_file(source)
    raise TypeError(f"cfg: expected a path, a str or bytes, got {type(source).__name__}")


def _choose(raw: list, flavor: str | Flavor | None, fork: str | None) -> tuple[str, str]:
    """The fork whose rules read the file, and why: fork=, else flavor=, else detected."""
    if fork is not None:
        if fork not in FORKS:
            raise ValueError(f"fork: expected 'pjreddie', 'alexeyab' or None, got {fork!r}")
        return fork, f"{_FORK_NAMES[fork]} rules, as asked (fork={fork!r})"
    if flavor is not None:
        f = fork_of(flavor)
        name = flavor if isinstance(flavor, str) else flavor.name
        return f, f"{_FORK_NAMES[f]} rules, as asked (flavor {name!r})"
    return _detect(raw)


def parse_cfg_text(
    text: str | bytes,
    name: str = "<text>",
    *,
    flavor: str | Flavor | None = None,
    fork: str | None = None,
    warn: bool = True,
) -> CfgFile:
    """Parse cfg text (``str``, or ``bytes`` decoded as Latin-1, byte for byte); ``name`` is used in
    messages.

    Args:
        fork: ``"pjreddie"`` or ``"alexeyab"``: whose rules read the file. ``None``: the flavor's fork
            (see :func:`fork_of`), or without a flavor the fork detected from the file (:func:`detect_fork`).
        flavor: a flavor name or :class:`~darknet_bn.flavors.Flavor`, or ``None``.
        warn: emit a :class:`DarknetCfgWarning` per key the chosen fork ignores.

    Raises:
        DarknetCfgError: see the module docstring.
    """
    text = _as_text(text)
    raw = _raw_sections(text, name)
    fork, rules = _choose(raw, flavor, fork)
    sections: list[Section] = []
    warnings: list[str] = []
    ignored: list[IgnoredKey] = []
    fname = _FORK_NAMES[fork]
    for header, hline, options in raw:
        ltype = section_type(header, fork)
        if ltype is None:
            other = [f for f in FORKS if f != fork and section_type(header, f) is not None]
            hint = f" (it is {other[0]}'s; choose that fork)" if other else ""
            raise DarknetCfgError(name, hline, f"unknown section type {header} for {fname} Darknet{hint}")
        sec = Section(header, ltype, hline, file=name, warnings=warnings)
        keys = known_keys(ltype, fork)
        other_keys = (
            known_keys(ab_type, "alexeyab")
            if fork == "pjreddie" and (ab_type := section_type(header, "alexeyab"))
            else frozenset()
        )
        for key, value, line in options:
            first = sec.find(key)
            if first is not None:
                msg = (
                    f"{name}:{line}: {header} {key}={value} repeats the key of line {first.line}; "
                    f"Darknet uses the first ({key}={first.value}) and ignores this one"
                )
                ignored.append(IgnoredKey(name, line, header, key, value, "repeated", msg))
            elif key not in keys:
                hint = " (AlexeyAB's Darknet reads it)" if key in other_keys else ""
                msg = (
                    f"{name}:{line}: {header} {key}={value}: {fname} Darknet does not read '{key}' in a "
                    f"{header} section, it is ignored (Darknet: 'Unused field'){hint}"
                )
                ignored.append(IgnoredKey(name, line, header, key, value, "unread", msg))
            sec.options.append(Option(key, value, line))
        sections.append(sec)
    net = sections[0]
    if net.type != "network":
        raise DarknetCfgError(name, net.line, f"the first section is {net.header}; it must be [net] or [network]")
    ignored.sort(key=lambda k: k.line)
    warnings.extend(k.message for k in ignored)
    if warn:
        level = _caller_level()
        for k in ignored:
            _warnings.warn(DarknetCfgWarning(k.message, k.file, k.line, k.key, k.section), stacklevel=level)
    return CfgFile(name, fork, net, sections[1:], warnings, rules, ignored)


# darknet_bn's own directory (this file is darknet_bn/darknet/cfg.py): frames below it are the package's
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside darknet_bn (the user's call)."""
    import sys
    from types import FrameType

    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def parse_cfg_file(
    path: str | os.PathLike, *, flavor: str | Flavor | None = None, fork: str | None = None, warn: bool = True
) -> CfgFile:
    """Parse the cfg file at ``path`` (read as bytes, Latin-1; see :func:`parse_cfg_text` for the
    arguments). An unreadable file raises ``OSError``."""
    text, name = _read_file(path)
    return parse_cfg_text(text, name, flavor=flavor, fork=fork, warn=warn)


def parse_cfg(
    source: CfgSource | CfgFile, *, flavor: str | Flavor | None = None, fork: str | None = None, warn: bool = True
) -> CfgFile:
    """Parse a cfg given as a path or as text.

    Args:
        source: a :class:`pathlib.Path`/``os.PathLike`` (a file), ``bytes`` (a file's content), a
            ``str`` containing ``\\n`` or ``\\r`` (cfg text) or any other ``str`` (a file path). A
            :class:`CfgFile` is returned as it is (when parsed by the fork asked for, if one is).
        flavor: ``"pjreddie"`` (pjreddie's rules) or ``"alexeyab"``/``"torch"`` (AlexeyAB's), or ``None``.
        fork: ``"pjreddie"``/``"alexeyab"`` (wins over ``flavor``), or ``None``. With neither, the rules
            are detected from the file (:func:`detect_fork`); :attr:`CfgFile.rules` says which and why.
        warn: emit a :class:`DarknetCfgWarning` per key the chosen fork ignores.

    Raises:
        DarknetCfgError: a cfg Darknet cannot read (see the module docstring).
        OSError: the file cannot be read.
    """
    if isinstance(source, CfgFile):
        want = fork if fork is not None else (fork_of(flavor) if flavor is not None else None)
        if want is not None and source.fork != want:
            raise ValueError(f"cfg {source.name} was parsed by {source.fork}'s rules, not {want}'s")
        return source
    text, name = _source_text(source)
    return parse_cfg_text(text, name, flavor=flavor, fork=fork, warn=warn)
