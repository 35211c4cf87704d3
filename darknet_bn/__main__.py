"""``python -m darknet_bn``: the darknet-bn command line."""

import sys

from .cli import main

sys.exit(main())
