"""The bench of a network: darknet_bn's passes (and peers') timed on every BN layer of a Darknet cfg,
each distinct shape once (:func:`bench_cfg`), per layer and in total (:func:`format_bench_cfg`).
``darknet-bn bench --cfg`` prints it (:mod:`darknet_bn.cli.bench_cfg`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._capi import set_num_threads
from ..darknet import BNLayer, Network, load_network
from ..darknet.cfg import CfgFile, CfgSource
from .cases import PASSES
from .harness import Result, run
from .peers import PEERS
from .report import check_notes

__all__ = ["CfgBench", "bench_cfg", "format_bench_cfg"]


@dataclass
class CfgBench:
    """What :func:`bench_cfg` measured: the network, the peers, the passes, ``results`` (one
    :class:`~darknet_bn.bench.Result` per distinct shape and pass), ``by_shape`` ((shape, pass) ->
    Result), ``timed`` (the BN layers timed) and ``skipped`` (those with batch*h*w = 1, where a training
    forward is undefined)."""

    net: Network
    peers: list
    passes: tuple
    results: list[Result]
    by_shape: dict = field(default_factory=dict)
    timed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def layer_ms(self, bn: BNLayer, pass_: str, impl: str = "ours") -> float:
        """Median ms of one pass on this BN layer's shape for an implementation; NaN when it was not
        timed there (a peer that failed its check on that shape, or does not offer the pass)."""
        return self.by_shape[(bn.shape, pass_)].median_ms.get(impl, math.nan)

    def total_ms(self, pass_: str, impl: str = "ours") -> float:
        """The pass summed over the timed BN layers (ms per network pass; NaN when the implementation
        was not timed on some layer's shape)."""
        return sum(self.layer_ms(bn, pass_, impl) for bn in self.timed)


def bench_cfg(
    cfg: CfgSource | CfgFile,
    *,
    batch: int = 1,
    flavor: str | None = None,
    weights: str | None = None,
    threads: int | None = None,
    repeat: int | None = None,
    peers: Sequence[str] = (),
    passes: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    fork: str | None = None,
) -> CfgBench:
    """Time darknet_bn (and ``peers``) on every BN layer of a cfg's network.

    Args:
        cfg: the .cfg (path or text); weights: an optional .weights file (the values do not change the
            timings; it is checked against the cfg).
        batch: images per batch; flavor: the BN flavor timed (``None``: ``"torch"``); given, also whose
            rules read the cfg when ``fork`` is not (``"torch"``, ``"alexeyab"`` -> AlexeyAB's,
            ``"pjreddie"`` -> pjreddie's).
        fork: whose rules read the cfg; with neither ``fork`` nor ``flavor`` they are detected from the
            cfg (:func:`darknet_bn.darknet.detect_fork`).
        threads: darknet_bn's threads (``None``: unchanged); repeat: rounds per shape and pass
            (``None``: bench's default by size); peers: among ``darknet_bn.PEERS``; passes:
            default ``darknet_bn.bench.PASSES``.

    Returns:
        A :class:`CfgBench`. Each distinct (batch, c, h, w) is timed once.

    Raises:
        DarknetCfgError, DarknetWeightsError, OSError: as :func:`~darknet_bn.darknet.load_network`;
        ValueError: a network without BN layers, an unknown peer.
    """
    net = load_network(cfg, weights, batch=batch, flavor=flavor, fork=fork)
    flavor = flavor if flavor is not None else "torch"
    if not net.bn_layers:
        raise ValueError(f"{net.name}: the network has no batch-normalization layer to time")
    timed = [bn for bn in net.bn_layers if bn.batch * bn.h * bn.w >= 2]
    if not timed:
        raise ValueError(
            f"{net.name}: every BN layer has batch*h*w = 1 at batch {net.batch}, where a training "
            "forward is undefined; use a batch of 2 or more"
        )
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if threads is not None:
        set_num_threads(threads)
    shapes = list(dict.fromkeys(bn.shape for bn in timed))
    passes = tuple(passes) if passes is not None else tuple(PASSES)
    kw: dict[str, Any] = {} if passes == tuple(PASSES) else {"passes": passes}
    results = run(shapes, list(peers), rounds=repeat, flavor=flavor, progress=progress, **kw)
    out = CfgBench(
        net, list(peers), passes, results, timed=timed, skipped=[bn for bn in net.bn_layers if bn not in timed]
    )
    out.by_shape = {(tuple(r.shape), r.pass_): r for r in results}
    return out


def format_bench_cfg(res: CfgBench) -> str:
    """Per BN layer: its shape, our median ms per pass, each peer's time / ours over the passes (``-``
    where the peer was not timed on one of them, e.g. it failed its check on that shape); then the
    totals over the network (ms per network pass); then how the peers' checks went
    (:func:`~darknet_bn.bench.check_notes`)."""
    passes, peers = res.passes, res.peers
    names = {id(bn): bn.name for bn in res.timed}
    wn = max([len("layer")] + [len(v) for v in names.values()])
    head = f"{'layer':<{wn}} {'BxCxHxW':>18}" + "".join(f" {p + ' ms':>13}" for p in passes)
    head += "".join(f" {('x ' + p):>8}" for p in peers)
    lines = [head, "-" * len(head)]
    for bn in res.timed:
        ours = [res.layer_ms(bn, p) for p in passes]
        line = f"{names[id(bn)]:<{wn}} {'x'.join(map(str, bn.shape)):>18}" + "".join(f" {v:13.4f}" for v in ours)
        for peer in peers:
            theirs = sum(res.layer_ms(bn, p, peer) for p in passes)
            line += f" {_ratio(theirs / sum(ours)):>8}"
        lines.append(line)
    lines.append("-" * len(head))
    tot = [res.total_ms(p) for p in passes]
    line = f"{'total':<{wn}} {str(len(res.timed)) + ' layers':>18}" + "".join(f" {v:13.3f}" for v in tot)
    for peer in peers:
        line += f" {_ratio(sum(res.total_ms(p, peer) for p in passes) / sum(tot)):>8}"
    lines.append(line)
    lines.append("")
    if res.skipped:
        lines.append(
            f"not timed: {', '.join(bn.name for bn in res.skipped)} (batch*h*w = 1: a training forward is "
            "undefined; use --batch 2 or more)"
        )
    lines.append(
        f"ms: medians of interleaved rounds per distinct shape ({len(res.results) // len(passes)} here); "
        "total = the sum over the BN layers (one network pass)"
        + ("; x peer = the peer's time / ours over the passes (- : not timed on every pass)" if peers else "")
    )
    lines.extend(check_notes(res.results, peers))
    return "\n".join(lines)


def _ratio(v: float) -> str:
    return f"{v:.2f}" if v == v else "-"
