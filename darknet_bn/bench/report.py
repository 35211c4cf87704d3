"""The bench's output: the table, the notes on the peers' checks, JSON and the plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from .cases import OURS_BASELINE
from .harness import Result


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _fmt_ratio(v: float) -> str:
    return f"{v:.2f}" if v == v else "-"


def format_table(results: list[Result], peers: Sequence[str]) -> str:
    head = f"{'shape':>18} {'pass':>15} {'ours ms':>9} {'spread':>15} {'GB/s':>6} {'roofline':>8}"
    widths = [max(8, len(p) + 2) for p in peers]
    head += "".join(f" {('x ' + p):>{wd}}" for p, wd in zip(peers, widths))
    lines = [head, "-" * len(head)]
    for r in results:
        shape = "x".join(map(str, r.shape))
        spread = f"{r.q1_ms['ours']:.3f}-{r.q3_ms['ours']:.3f}"
        line = f"{shape:>18} {r.pass_:>15} {r.ours_ms:9.3f} {spread:>15} {r.gbs:6.1f} {r.roofline:8.2f}"
        line += "".join(f" {_fmt_ratio(r.ratio(p)):>{wd}}" for p, wd in zip(peers, widths))
        lines.append(line)
    lines.append("")
    lines.append("peer time / our time, geometric mean over the shapes (above 1: darknet_bn is faster; - : not timed):")
    all_passes = list(dict.fromkeys(r.pass_ for r in results))
    for p in peers:
        timed = [r for r in results if p in r.median_ms]
        if not timed:
            lines.append(f"  {p:>9}: not timed")
            continue
        per = ", ".join(
            f"{ps} {geomean([r.ratio(p) for r in timed if r.pass_ == ps]):.2f}"
            for ps in all_passes
            if any(r.pass_ == ps for r in timed)
        )
        worst = min(timed, key=lambda r: r.ratio(p))
        lines.append(f"  {p:>9}: {per}; lowest {worst.ratio(p):.2f} ({'x'.join(map(str, worst.shape))} {worst.pass_})")
    for p, base in OURS_BASELINE.items():
        extra = [(r.ours_ms / r.median_ms[base], r.shape) for r in results if r.pass_ == p and base in r.median_ms]
        if extra:
            highest = max(extra)
            lines.append(
                f"ours, {p} / {base.split(':')[1]}, timed in the same rounds: geometric mean "
                f"{geomean([f for f, _ in extra]):.2f}, highest {highest[0]:.2f} "
                f"({'x'.join(map(str, highest[1]))})"
            )
    lines.extend(check_notes(results, peers))
    return "\n".join(lines)


def check_notes(results: list[Result], peers: Sequence[str]) -> list[str]:
    """Lines saying how each peer's output compared with ours, and every row a peer was not timed in
    for a reason other than not offering the pass."""
    lines = []
    checked = [
        f"{p} {max(r.check_error[p] for r in results if p in r.check_error):.1e}"
        for p in peers
        if any(p in r.check_error for r in results)
    ]
    if checked:
        lines.append(
            f"checked against ours before timing (max |error| over the rows, outputs of order 1): {', '.join(checked)}"
        )
    for p in peers:
        missing = [r.pass_ for r in results if r.not_timed.get(p) == "does not offer this pass"]
        if missing:
            lines.append(f"{p} does not offer: {', '.join(dict.fromkeys(missing))}")
        why_rows: dict = {}
        for r in results:
            why = r.not_timed.get(p)
            if why and why != "does not offer this pass":
                why_rows.setdefault(why, []).append(f"{'x'.join(map(str, r.shape))} {r.pass_}")
        for why, rows in why_rows.items():
            lines.append(f"NOT TIMED: {p} on {', '.join(rows)}: {why}")
    return lines


def write_json(path: str, results: list[Result], info: dict) -> None:
    with open(path, "w") as f:
        json.dump({"machine": info, "results": [r.as_dict() for r in results]}, f, indent=1)


def plot(path: str, results: list[Result], peers: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in results))
    passes = list(dict.fromkeys(r.pass_ for r in results))
    fig, axes = plt.subplots(1, len(passes) + 1, figsize=(5 * (len(passes) + 1), 0.6 * len(shapes) + 2), sharey=True)
    labels = ["x".join(map(str, s)) for s in shapes]
    ys = np.arange(len(shapes))
    width = 0.8 / max(1, len(peers))
    for ax, p in zip(axes, passes):
        rs = {r.shape: r for r in results if r.pass_ == p}
        for i, peer in enumerate(peers):
            vals = [rs[s].ratio(peer) for s in shapes]  # NaN (not timed): no bar
            ax.barh(ys + i * width, [v if v == v else 0 for v in vals], height=width, label=peer, color=f"C{i % 10}")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{p}: peer time / darknet_bn time")
    axes[0].set_yticks(ys + 0.4 - width / 2)
    axes[0].set_yticklabels(labels)
    axes[0].legend(fontsize="small")
    ax = axes[-1]
    height = 0.8 / len(passes)
    for i, p in enumerate(passes):
        rs = {r.shape: r for r in results if r.pass_ == p}
        ax.barh(ys + i * height, [rs[s].roofline for s in shapes], height=height, label=p, color=f"C{i % 10}")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_title("fraction of the triad roofline")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
