"""``darknet-bn bench``: how fast darknet_bn's passes are, against the memory roofline and against peers.

The bench measures darknet_bn's passes as users call them, against peers called the fastest way they
document, in interleaved rounds, with a memory-bandwidth triad after each row. Used by ``darknet-bn bench`` (and
``bench --cfg``, :mod:`darknet_bn.cli`) and by the scripts of ``benchmarks/``.

- :mod:`~darknet_bn.bench.cases`: the shapes, the passes (and :func:`act_passes`, the training passes
  with an activation fused), a shape's data (:class:`Setup`, :class:`Impl`);
- :mod:`~darknet_bn.bench.peers`: the implementations (``ours`` and each peer), their check against ours;
- :mod:`~darknet_bn.bench.roofline`: the least bytes per pass and the triad (:class:`Triad`);
- :mod:`~darknet_bn.bench.harness`: :func:`run` and its :class:`Result` rows;
- :mod:`~darknet_bn.bench.report`: the table, JSON, the plot, the +ACT rows' summary
  (:func:`activation_summary`: what the activation costs, fused against separate passes);
- :mod:`~darknet_bn.bench.machine`: the CPU, caches, build and versions a run reports;
- :mod:`~darknet_bn.bench.network`: every BN layer of a Darknet network timed (:func:`bench_cfg`).
"""

from .cases import (
    DEFAULT_ACTIVATION,
    DEFAULT_SHAPES,
    LARGE_SHAPES,
    OURS_BASELINE,
    PASSES,
    PEER_PASS,
    RENORM_PASSES,
    Impl,
    Setup,
    act_passes,
    default_rounds,
    make_data,
    make_params,
    ours_baseline,
    parse_shape,
    peer_passes,
    split_act_pass,
)
from .harness import DEFAULT_BUDGET_S, MIN_ROUNDS, MIN_SAMPLE_S, Result, run
from .machine import cpu_info, describe_cpu, machine_info, peer_versions
from .network import CfgBench, bench_cfg, format_bench_cfg
from .peers import (
    ACT_PEERS,
    CHECK_RTOL,
    DEFAULT_PEERS,
    MAKERS,
    PEER_INSTALL,
    PEER_MODULES,
    PEER_OFFERS,
    PEERS,
    TORCH_ACTIVATIONS,
    available,
    check_peer,
    offers,
    reference_outputs,
)
from .report import (
    ACT_TARGETS,
    SEPARATE_PEER,
    activation_summary,
    check_notes,
    format_activation_summary,
    format_table,
    geomean,
    plot,
    write_json,
)
from .roofline import BYTES_PER_ELEMENT, TRIAD_N, Triad, bytes_per_element

__all__ = [
    "DEFAULT_SHAPES",
    "LARGE_SHAPES",
    "PASSES",
    "RENORM_PASSES",
    "PEER_PASS",
    "OURS_BASELINE",
    "DEFAULT_ACTIVATION",
    "act_passes",
    "split_act_pass",
    "ours_baseline",
    "Setup",
    "Impl",
    "parse_shape",
    "default_rounds",
    "make_data",
    "make_params",
    "peer_passes",
    "run",
    "Result",
    "DEFAULT_BUDGET_S",
    "MIN_ROUNDS",
    "MIN_SAMPLE_S",
    "PEERS",
    "DEFAULT_PEERS",
    "MAKERS",
    "PEER_MODULES",
    "PEER_INSTALL",
    "PEER_OFFERS",
    "ACT_PEERS",
    "TORCH_ACTIVATIONS",
    "CHECK_RTOL",
    "available",
    "offers",
    "check_peer",
    "reference_outputs",
    "BYTES_PER_ELEMENT",
    "bytes_per_element",
    "TRIAD_N",
    "Triad",
    "format_table",
    "check_notes",
    "activation_summary",
    "format_activation_summary",
    "ACT_TARGETS",
    "SEPARATE_PEER",
    "geomean",
    "write_json",
    "plot",
    "cpu_info",
    "describe_cpu",
    "peer_versions",
    "machine_info",
    "CfgBench",
    "bench_cfg",
    "format_bench_cfg",
]
