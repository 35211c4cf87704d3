"""darknet_bn: Darknet's batch-normalization layer for Python, with fast C kernels.

- :func:`make_batchnorm_layer` / :class:`Layer`: the layer, with Darknet's fields and passes.
- :mod:`darknet_bn.kernels`: Darknet's named kernels on numpy arrays.
- :mod:`darknet_bn.flavors`: pjreddie's Darknet, AlexeyAB's Darknet, PyTorch.
- :func:`load_network`: a Darknet .cfg (and .weights) -> layers with Darknet's sizes, BN layers as Layers.
"""

from .cfg import DarknetCfgError, DarknetCfgWarning, detect_fork, parse_cfg
from .flavors import FLAVORS, Flavor, get_flavor, torch_flavor
from .fold import FoldReport, fold_files, fold_network, save_folded
from .kernels import get_num_threads, has_openmp, set_num_threads
from .layer import ACTIVATIONS, Layer, make_batchnorm_layer
from .network import BNLayer, DarknetLayer, Network, load_network
from .weights import DarknetWeightsError, WeightsHeader

__version__ = "0.1.0"

__all__ = ["Layer", "make_batchnorm_layer", "ACTIVATIONS", "load_network", "Network", "DarknetLayer", "BNLayer",
           "DarknetCfgError", "DarknetCfgWarning", "detect_fork", "DarknetWeightsError", "WeightsHeader", "parse_cfg",
           "fold_network", "save_folded", "fold_files", "FoldReport", "Flavor", "FLAVORS", "get_flavor", "torch_flavor",
           "set_num_threads", "get_num_threads", "has_openmp", "__version__"]
