"""darknet_bn: Darknet's batch-normalization layer for Python, with fast C kernels.

- :func:`make_batchnorm_layer` / :class:`Layer`: the layer, with Darknet's fields and passes.
- :mod:`darknet_bn.kernels`: Darknet's named kernels on numpy arrays.
- :mod:`darknet_bn.flavors`: pjreddie's Darknet, AlexeyAB's Darknet, PyTorch.
- :func:`load_network`: a Darknet .cfg (and .weights) -> layers with Darknet's sizes, BN layers as Layers.
"""

from .darknet import (
    BNLayer,
    DarknetCfgError,
    DarknetCfgWarning,
    DarknetLayer,
    DarknetWeightsError,
    FoldReport,
    Network,
    WeightsHeader,
    detect_fork,
    fold_files,
    fold_network,
    load_network,
    parse_cfg,
    save_folded,
)
from .flavors import FLAVORS, Flavor, get_flavor, torch_flavor
from .kernels import get_num_threads, has_openmp, set_num_threads
from .layer import ACTIVATIONS, Layer, make_batchnorm_layer

__version__ = "0.1.0"

__all__ = [
    "Layer",
    "make_batchnorm_layer",
    "ACTIVATIONS",
    "load_network",
    "Network",
    "DarknetLayer",
    "BNLayer",
    "DarknetCfgError",
    "DarknetCfgWarning",
    "detect_fork",
    "DarknetWeightsError",
    "WeightsHeader",
    "parse_cfg",
    "fold_network",
    "save_folded",
    "fold_files",
    "FoldReport",
    "Flavor",
    "FLAVORS",
    "get_flavor",
    "torch_flavor",
    "set_num_threads",
    "get_num_threads",
    "has_openmp",
    "__version__",
]
