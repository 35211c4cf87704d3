"""The bench's output: the table, the notes on the peers' checks, JSON and the plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .cases import ours_baseline, split_act_pass
from .harness import Result

#: issue 16's targets for the +ACT rows, fwd+bwd: ours fused / our plain training passes (at most), and
#: Darknet-style separate activation passes / ours fused (at least)
ACT_TARGETS = {"fused_over_plain_max": 1.1, "separate_over_fused_min": 1.5}
SEPARATE_PEER = "darknet"  # the peer the separate-passes target is measured against


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _fmt_ratio(v: float) -> str:
    return f"{v:.2f}" if v == v else "-"


def _fmt_ms(v: float) -> str:
    """Milliseconds with four significant digits (a 256x32 pass of 2.4 us reads 0.002381, not 0.002)."""
    return f"{v:.4g}" if v >= 1e-4 else f"{v:.2e}"


def format_table(results: list[Result], peers: Sequence[str]) -> str:
    head = f"{'shape':>18} {'pass':>15} {'ours ms':>9} {'spread':>17} {'GB/s':>6} {'roofline':>8}"
    widths = [max(8, len(p) + 2) for p in peers]
    head += "".join(f" {('x ' + p):>{wd}}" for p, wd in zip(peers, widths))
    lines = [head, "-" * len(head)]
    for r in results:
        shape = "x".join(map(str, r.shape))
        spread = f"{_fmt_ms(r.q1_ms['ours'])}-{_fmt_ms(r.q3_ms['ours'])}"
        line = f"{shape:>18} {r.pass_:>15} {_fmt_ms(r.ours_ms):>9} {spread:>17} {r.gbs:6.1f} {r.roofline:8.2f}"
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
    for p in all_passes:
        base = ours_baseline(p)
        extra = [(r.ours_ms / r.median_ms[base], r.shape) for r in results if r.pass_ == p and base in r.median_ms]
        if base and extra:
            highest = max(extra)
            lines.append(
                f"ours, {p} / {base.split(':')[1]}, timed in the same rounds: geometric mean "
                f"{geomean([f for f, _ in extra]):.2f}, highest {highest[0]:.2f} "
                f"({'x'.join(map(str, highest[1]))})"
            )
    lines.extend(format_activation_summary(results, peers))
    lines.extend(check_notes(results, peers))
    return "\n".join(lines)


def _shape_name(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def activation_summary(results: list[Result]) -> dict:
    """For each activation of the +ACT rows (``train+ACT``, ``backward+ACT``), per shape with both rows:
    what fusing it costs over our plain training passes timed in the same rounds (``train_cost`` =
    ours train+ACT / ours train, ``backward_cost`` likewise, ``fused_over_plain`` = the sum of both
    fused medians / the sum of both plain ones), and ``peer_over_fused``: each peer timed in both rows,
    its forward + backward / ours fused forward + backward (above 1: fused is faster). Then their
    geometric means over the shapes, the worst shape for each target of :data:`ACT_TARGETS` and how
    many shapes meet it. Empty without +ACT rows."""
    rows = {(r.shape, r.pass_): r for r in results}
    acts = list(dict.fromkeys(sp[1] for sp in (split_act_pass(r.pass_) for r in results) if sp))
    out: dict = {}
    for act in acts:
        per = []
        for shape in dict.fromkeys(r.shape for r in results):
            tr, bw = rows.get((shape, f"train+{act}")), rows.get((shape, f"backward+{act}"))
            if tr is None or bw is None or "ours:train" not in tr.median_ms or "ours:backward" not in bw.median_ms:
                continue
            fused = tr.ours_ms + bw.ours_ms
            peer_ratio = {
                p: (tr.median_ms[p] + bw.median_ms[p]) / fused
                for p in tr.median_ms
                if p != "ours" and not p.startswith("ours:") and p in bw.median_ms
            }
            per.append(
                {
                    "shape": list(shape),
                    "train_cost": tr.ours_ms / tr.median_ms["ours:train"],
                    "backward_cost": bw.ours_ms / bw.median_ms["ours:backward"],
                    "fused_over_plain": fused / (tr.median_ms["ours:train"] + bw.median_ms["ours:backward"]),
                    "fused_ms": fused,
                    "peer_over_fused": peer_ratio,
                }
            )
        if not per:
            continue
        peers = list(dict.fromkeys(p for d in per for p in d["peer_over_fused"]))
        geo: dict[str, Any] = {
            k: geomean([d[k] for d in per]) for k in ("train_cost", "backward_cost", "fused_over_plain")
        }
        geo["peer_over_fused"] = {
            p: geomean([d["peer_over_fused"][p] for d in per if p in d["peer_over_fused"]]) for p in peers
        }
        worst = max(per, key=lambda d: d["fused_over_plain"])
        targets: dict = {
            "fused_over_plain": {
                "max": ACT_TARGETS["fused_over_plain_max"],
                "geomean": geo["fused_over_plain"],
                "worst": worst["fused_over_plain"],
                "worst_shape": worst["shape"],
                "shapes_met": sum(d["fused_over_plain"] <= ACT_TARGETS["fused_over_plain_max"] for d in per),
                "shapes": len(per),
            }
        }
        sep = [d for d in per if SEPARATE_PEER in d["peer_over_fused"]]
        if sep:
            low = min(sep, key=lambda d: d["peer_over_fused"][SEPARATE_PEER])
            targets["separate_over_fused"] = {
                "peer": SEPARATE_PEER,
                "min": ACT_TARGETS["separate_over_fused_min"],
                "geomean": geo["peer_over_fused"][SEPARATE_PEER],
                "worst": low["peer_over_fused"][SEPARATE_PEER],
                "worst_shape": low["shape"],
                "shapes_met": sum(
                    d["peer_over_fused"][SEPARATE_PEER] >= ACT_TARGETS["separate_over_fused_min"] for d in sep
                ),
                "shapes": len(sep),
            }
        out[act] = {"per_shape": per, "geomean": geo, "targets": targets}
    return out


def _act_row(label: str, d: dict, peers: Sequence[str], cols: Sequence[str]) -> str:
    vals = [d["train_cost"], d["backward_cost"], d["fused_over_plain"]]
    vals += [d["peer_over_fused"].get(p, float("nan")) for p in peers]
    return f"{label:>18} " + " ".join(f"{_fmt_ratio(v):>{len(c)}}" for v, c in zip(vals, cols))


def format_activation_summary(results: list[Result], peers: Sequence[str]) -> list[str]:
    """The lines of :func:`activation_summary`: a small table per activation, its geometric means and
    the targets (none without +ACT rows)."""
    lines = []
    for act, a in activation_summary(results).items():
        ps = [p for p in peers if p in a["geomean"]["peer_over_fused"]]
        cols = [f"train+{act}/train", f"backward+{act}/backward", "fused/plain fwd+bwd"]
        cols += [f"x {p} fwd+bwd" for p in ps]
        lines.append("")
        lines.append(
            f"{act} fused in training -- ours against our plain training passes timed in the same rounds, and "
            f"each peer's forward + backward / ours fused (above 1: fused is faster):"
        )
        lines.append(f"{'shape':>18} " + " ".join(cols))
        lines.extend(_act_row(_shape_name(d["shape"]), d, ps, cols) for d in a["per_shape"])
        lines.append(_act_row("geomean", a["geomean"], ps, cols))
        t = a["targets"]["fused_over_plain"]
        text = (
            f"targets: fused fwd+bwd / plain fwd+bwd <= {t['max']:g}: geomean {t['geomean']:.2f}, highest "
            f"{t['worst']:.2f} ({_shape_name(t['worst_shape'])}), met on {t['shapes_met']} of {t['shapes']} shapes"
        )
        t = a["targets"].get("separate_over_fused")
        if t:
            text += (
                f"; separate passes ({t['peer']}) fwd+bwd / fused >= {t['min']:g}: geomean {t['geomean']:.2f}, "
                f"lowest {t['worst']:.2f} ({_shape_name(t['worst_shape'])}), met on {t['shapes_met']} of "
                f"{t['shapes']} shapes"
            )
        else:
            text += f"; separate passes: not timed (--compare {SEPARATE_PEER})"
        lines.append(text)
    return lines


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
        data = {"machine": info, "results": [r.as_dict() for r in results]}
        act = activation_summary(results)
        if act:
            data["activation"] = act
        json.dump(data, f, indent=1)


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
