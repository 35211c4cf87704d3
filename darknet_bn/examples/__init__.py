"""Example code shipped with darknet_bn, not library API: nothing in darknet_bn imports or re-exports it.

- :mod:`darknet_bn.examples.digits`: a numpy MLP trained with and without darknet_bn's BN layer on
  scikit-learn's digits (``darknet-bn demo`` runs it).
"""
