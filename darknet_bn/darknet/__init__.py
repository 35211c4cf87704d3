"""Darknet's files and networks: the ``.cfg`` rules of each fork, the layers each fork builds from a cfg,
the ``.weights`` layout, and batch normalization folded into the weights.

- :mod:`.cfg`: cfg text as Darknet reads it, fork detection (:func:`parse_cfg`, :func:`detect_fork`).
- :mod:`.builder`: :func:`load_network`, the layers each fork builds (one builder class per fork).
- :mod:`.model`: :class:`Network`, :class:`DarknetLayer`, :class:`BNLayer`, :class:`LayerRef`.
- :mod:`.weights`: the ``.weights`` header and arrays (:class:`WeightsHeader`).
- :mod:`.fold`: :func:`fold_network`, :func:`save_folded`, :func:`fold_files`, :class:`FoldReport`.
"""

from .builder import SUPPORTED_TYPES, load_network
from .cfg import (
    ALEXEYAB_ONLY_KEYS,
    ALEXEYAB_ONLY_SECTIONS,
    ALEXEYAB_ONLY_VALUES,
    FORKS,
    CfgFile,
    DarknetCfgError,
    DarknetCfgWarning,
    IgnoredKey,
    Option,
    Section,
    c_atof,
    c_atoi,
    detect_fork,
    fork_of,
    known_keys,
    parse_cfg,
    parse_cfg_file,
    parse_cfg_text,
    section_type,
)
from .fold import FoldedBN, FoldReport, KeptBN, bn_affine, fold_files, fold_network, inference_denominator, save_folded
from .model import BNLayer, DarknetLayer, LayerRef, Network
from .weights import (
    ArraySpec,
    DarknetWeightsError,
    WeightsData,
    WeightsHeader,
    header_size,
    read_weights,
    seen_bytes,
    write_weights,
)

__all__ = [
    # cfg
    "FORKS",
    "CfgFile",
    "Section",
    "Option",
    "IgnoredKey",
    "DarknetCfgError",
    "DarknetCfgWarning",
    "parse_cfg",
    "parse_cfg_text",
    "parse_cfg_file",
    "detect_fork",
    "fork_of",
    "ALEXEYAB_ONLY_SECTIONS",
    "ALEXEYAB_ONLY_KEYS",
    "ALEXEYAB_ONLY_VALUES",
    "section_type",
    "known_keys",
    "c_atoi",
    "c_atof",
    # model
    "load_network",
    "Network",
    "DarknetLayer",
    "BNLayer",
    "LayerRef",
    "SUPPORTED_TYPES",
    # weights
    "DarknetWeightsError",
    "WeightsHeader",
    "WeightsData",
    "ArraySpec",
    "read_weights",
    "write_weights",
    "seen_bytes",
    "header_size",
    # fold
    "fold_network",
    "save_folded",
    "fold_files",
    "FoldReport",
    "FoldedBN",
    "KeptBN",
    "inference_denominator",
    "bn_affine",
]
