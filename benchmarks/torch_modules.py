"""darknet_bn.torch's BatchNorm modules against torch.nn's, called as users call them.

  train : m.train();  y = m(x); y.backward(g)        (x, weight, bias grads set to None before each
                                                       call, as optimizer.zero_grad() leaves them)
  eval  : m.eval();   with torch.no_grad(): y = m(x)

on the shapes of darknet_bn/bench's default table (bench/cases.py), in NCHW and channels_last; the per-call time of
a BatchNorm1d(32) at batch 256; and whole training steps (forward, cross-entropy, backward, SGD) of a
small ResNet-style and a MobileNet-style (depthwise) network, converted (darknet_bn.torch.convert) vs
not, with BN's share of the step measured as (step - step with BN replaced by Identity) / step.

Rounds are interleaved: round r runs every variant once (after one untimed call of the same variant),
in an order that rotates from round to round; ratios are medians of the per-round ratios torch/ours.
Both libraries use the same thread count (torch.set_num_threads; darknet_bn.torch follows it).

A sample repeats a call until it lasts at least MIN_SAMPLE_S = 0.2 s (--sample-s; timeit's autorange
uses the same 0.2 s), the same rule for both libraries, and reports the mean time per call (a sample
stops early once it has lasted 4 x MIN_SAMPLE_S: under outside load). Long
samples make each round's figure the mean per call that a training loop pays -- including the calls
that stall (torch's small passes enter an OpenMP region at 2 threads, which waits whenever the other
core is busy or asleep: a few % of its calls take 2-50x the median) -- while the median over rounds
still drops rounds hit by outside load. Short samples (2 ms, before session 22: ~20 calls of a
BatchNorm1d(32)@256 step) fall between stalls most of the time, so the median over rounds reported
the typical call and missed the stalls: 1.00x torch/ours with 2 ms samples against 1.12x with
20-200 ms ones on the idle machine (docs/performance.md section 16). The garbage collector stays on
(timeit turns it off): users' loops run with it, and both libraries' graphs allocate Python objects.

usage: python benchmarks/torch_modules.py [--rounds N] [--threads N] [--quick] [--no-output-cache]
       [--no-act | --act-only] [--no-nets | --nets-only] [--sample-s S] [--json FILE]
       (--quick: a few shapes and the per-call rows, no networks)

BatchNormAct2d rows (leaky 0.1 and SiLU, ACT_SHAPES): dbt.BatchNormAct2d against torch.nn.BatchNorm2d
followed by the activation module (inplace=True, torch's fastest eager form), and against our
BatchNorm2d followed by the same activation module ("fusion gain"), called as above.

Both libraries allocate their outputs (and input gradients) on every call, as torch does for its users;
above glibc's mmap threshold (32 MiB at most) every such allocation is fresh memory, whose page faults
can cost more than the pass itself (on this VM ~5 us a 4 KiB page). Running with
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large> makes glibc reuse freed memory for both libraries.
darknet_bn.torch itself reuses the memory of its own freed outputs of 8 MiB and more (its output
cache, on by default: what users get; its passes stream their stores into such reused blocks);
--no-output-cache turns it off (dbt.set_output_cache(0): plain stores, as glibc's memory may be
fresh), for the comparison with both libraries allocating the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time

import torch  # before darknet_bn: one OpenMP runtime
import torch.nn as nn
import torch.nn.functional as F

import darknet_bn.torch as dbt

SHAPES = [
    (1, 16, 416, 416),
    (8, 32, 208, 208),
    (16, 128, 52, 52),
    (32, 256, 26, 26),
    (64, 64, 56, 56),
    (64, 512, 7, 7),
    (256, 32, 1, 1),
    (128, 1024, 1, 1),
    (64, 64, 112, 112),
]  # darknet_bn.bench.DEFAULT_SHAPES
QUICK = [(16, 128, 52, 52), (64, 512, 7, 7), (256, 32, 1, 1), (128, 1024, 1, 1)]
MIN_SAMPLE_S = 0.2  # a sample of a fast call repeats it until it lasts this long (--sample-s)


def _repeats(f) -> int:
    """Calls per sample: enough for MIN_SAMPLE_S (from the median of 5 calls after warm-up calls)."""
    f()
    t = time.perf_counter()
    f()
    if time.perf_counter() - t > 4 * MIN_SAMPLE_S:
        return 1
    f()
    dts = []
    for _ in range(5):
        t = time.perf_counter()
        f()
        dts.append(time.perf_counter() - t)
    return max(1, min(100_000, math.ceil(MIN_SAMPLE_S / max(statistics.median(dts), 1e-7))))


def interleaved(variants: dict, rounds: int) -> dict:
    """{name: [seconds per call, one per round]}: each round runs each variant (one untimed call, then
    one timed sample of `reps` calls), the order rotating from round to round."""
    names = list(variants)
    reps = {n: _repeats(variants[n]) for n in names}
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            f = variants[n]
            f()
            times[n].append(_sample(f, reps[n]))
    return times


def _sample(f, k: int) -> float:
    """Seconds per call over k calls of f -- or over the calls made until the sample has lasted
    4 x MIN_SAMPLE_S, when calls run far slower than their first ones (outside load: the same rule for
    every variant, so that a loaded machine cannot stretch a run by orders of magnitude). The clock is
    read after 1, 2, 4, ... calls (log2(k) reads: no cost per call), so a sample ends at most about
    twice past that bound."""
    done, chunk = 0, 1
    t = time.perf_counter()
    while done < k:
        m = min(chunk, k - done)
        for _ in range(m):
            f()
        done += m
        chunk *= 2
        if time.perf_counter() - t > 4 * MIN_SAMPLE_S:
            break
    return (time.perf_counter() - t) / done


def ratio(times: dict, a: str, b: str) -> float:
    """Median over rounds of times[a] / times[b]."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def gmean(v):
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else float("nan")


# ------------------------------------------------------------------------------------------------
# One BN module, as users call it


def _bn_calls(shape, layout, torch_cls, ours_cls):
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(shape, generator=g) * 2 + 0.5).contiguous(memory_format=fmt)
    gy = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    c = shape[1]
    mods = {"torch": torch_cls(c), "ours": ours_cls(c)}
    calls = {}
    for name, m in mods.items():
        xg = x.clone().requires_grad_()
        xe = x.clone()

        def train(m=m, xg=xg):
            xg.grad = m.weight.grad = m.bias.grad = None
            y = m(xg)
            y.backward(gy)

        def train_fwd(m=m, xg=xg):
            return m(xg)

        def infer(m=m, xe=xe):
            with torch.no_grad():
                return m(xe)

        calls[name] = (m, train, train_fwd, infer)
    return calls


def bench_shapes(shapes, layouts, rounds):
    rows = []
    for shape in shapes:
        for layout in layouts:
            if layout == "channels_last" and shape[2] * shape[3] == 1:
                continue  # a 1x1 plane: NCHW and channels_last are the same memory
            calls = _bn_calls(shape, layout, nn.BatchNorm2d, dbt.BatchNorm2d)
            row = {"shape": "x".join(map(str, shape)), "layout": layout}
            for pss, idx, mode in (("train", 1, True), ("eval", 3, False)):
                for m, *_ in calls.values():
                    m.train(mode)
                t = interleaved({n: c[idx] for n, c in calls.items()}, rounds)
                row[pss] = {
                    "torch_ms": 1e3 * statistics.median(t["torch"]),
                    "ours_ms": 1e3 * statistics.median(t["ours"]),
                    "ratio": ratio(t, "torch", "ours"),
                    "torch_min_ms": 1e3 * min(t["torch"]),
                    "ours_min_ms": 1e3 * min(t["ours"]),
                }
            rows.append(row)
            for pss in ("train", "eval"):
                r = row[pss]
                r["ratio_of_mins"] = r["torch_min_ms"] / r["ours_min_ms"]
            print(
                f"{row['shape']:>16} {layout:>13}"
                + "".join(
                    f"  {pss} {row[pss]['torch_ms']:8.3f} / {row[pss]['ours_ms']:8.3f} ms = {row[pss]['ratio']:5.2f}x"
                    f" (mins {row[pss]['torch_min_ms']:8.3f} / {row[pss]['ours_min_ms']:8.3f} = "
                    f"{row[pss]['ratio_of_mins']:5.2f}x)"
                    for pss in ("train", "eval")
                ),
                flush=True,
            )
            del calls
    return rows


def bench_per_call(rounds):
    """BatchNorm1d(32) at batch 256: microseconds per call."""
    calls = _bn_calls((256, 32), "contiguous", nn.BatchNorm1d, dbt.BatchNorm1d)
    out = {}
    for pss, idx, mode in (("train fwd+bwd", 1, True), ("train fwd", 2, True), ("eval", 3, False)):
        for m, *_ in calls.values():
            m.train(mode)
        t = interleaved({n: c[idx] for n, c in calls.items()}, rounds)
        out[pss] = {
            "torch_us": 1e6 * statistics.median(t["torch"]),
            "ours_us": 1e6 * statistics.median(t["ours"]),
            "ratio": ratio(t, "torch", "ours"),
            "torch_min_us": 1e6 * min(t["torch"]),
            "ours_min_us": 1e6 * min(t["ours"]),
        }
        print(
            f"BatchNorm1d(32) @ 256, {pss:>13}: torch {out[pss]['torch_us']:7.2f} us, "
            f"ours {out[pss]['ours_us']:7.2f} us, {out[pss]['ratio']:5.2f}x (mins {out[pss]['torch_min_us']:7.2f} / "
            f"{out[pss]['ours_min_us']:7.2f} us)",
            flush=True,
        )
    # Why eager calls skip the custom operators: the same inference pass three ways, under no_grad.
    from darknet_bn.torch import _ops

    x = torch.randn(256, 32)
    m = calls["ours"][0].eval()
    rm, rv, w, b = m.running_mean, m.running_var, m.weight, m.bias

    def run(f):
        def g():
            with torch.no_grad():
                f()

        return g

    t = interleaved(
        {
            "F.batch_norm": run(lambda: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)),
            "dbt.batch_norm": run(lambda: dbt.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)),
            "custom op": run(lambda: _ops.batch_norm_infer(x, w, b, rm, rv, 1e-5)),
        },
        rounds,
    )
    out["dispatch_us"] = {k: 1e6 * statistics.median(v) for k, v in t.items()}
    print(
        "256x32 inference, functional: " + ", ".join(f"{k} {v:.2f} us" for k, v in out["dispatch_us"].items()),
        flush=True,
    )
    return out


# ------------------------------------------------------------------------------------------------
# BatchNorm2d + activation: BatchNormAct2d against torch.nn's BN then the activation module

ACT_SHAPES = [(8, 32, 208, 208), (16, 128, 52, 52), (64, 512, 7, 7), (256, 32, 1, 1), (128, 1024, 1, 1)]
ACTS = {
    "leaky": (
        lambda: nn.LeakyReLU(0.1, inplace=True),
        {"act_layer": nn.LeakyReLU, "act_kwargs": {"negative_slope": 0.1}},
    ),
    "silu": (lambda: nn.SiLU(inplace=True), {"act_layer": nn.SiLU}),
}


def _act_calls(shape, layout, act):
    """torch: nn.Sequential(nn.BatchNorm2d, the activation with inplace=True -- torch's fastest eager
    form); ours: dbt.BatchNormAct2d (fused); ours-unfused: dbt.BatchNorm2d then the same activation."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(shape, generator=g) * 2 + 0.5).contiguous(memory_format=fmt)
    gy = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    c = shape[1]
    make_act, kw = ACTS[act]
    mods = {
        "torch": nn.Sequential(nn.BatchNorm2d(c), make_act()),
        "ours": dbt.BatchNormAct2d(c, **kw),
        "ours-unfused": nn.Sequential(dbt.BatchNorm2d(c), make_act()),
    }
    calls = {}
    for name, m in mods.items():
        xg = x.clone().requires_grad_()
        xe = x.clone()
        params = list(m.parameters())

        def train(m=m, xg=xg, params=params):
            xg.grad = None
            for p in params:
                p.grad = None
            y = m(xg)
            y.backward(gy)

        def infer(m=m, xe=xe):
            with torch.no_grad():
                return m(xe)

        calls[name] = (m, train, infer)
    return calls


def bench_act(shapes, layouts, rounds):
    rows = []
    for act in ACTS:
        for shape in shapes:
            for layout in layouts:
                if layout == "channels_last" and shape[2] * shape[3] == 1:
                    continue
                calls = _act_calls(shape, layout, act)
                row = {"act": act, "shape": "x".join(map(str, shape)), "layout": layout}
                for pss, idx, mode in (("train", 1, True), ("eval", 2, False)):
                    for m, *_ in calls.values():
                        m.train(mode)
                    t = interleaved({n: c[idx] for n, c in calls.items()}, rounds)
                    row[pss] = {
                        "torch_ms": 1e3 * statistics.median(t["torch"]),
                        "ours_ms": 1e3 * statistics.median(t["ours"]),
                        "unfused_ms": 1e3 * statistics.median(t["ours-unfused"]),
                        "ratio": ratio(t, "torch", "ours"),
                        "fusion_gain": ratio(t, "ours-unfused", "ours"),
                    }
                rows.append(row)
                print(
                    f"BatchNormAct2d {act:>5} {row['shape']:>14} {layout:>13}"
                    + "".join(
                        f"  {pss} torch {row[pss]['torch_ms']:8.3f} / ours {row[pss]['ours_ms']:8.3f} ms = "
                        f"{row[pss]['ratio']:5.2f}x (ours unfused {row[pss]['unfused_ms']:8.3f}: "
                        f"{row[pss]['fusion_gain']:4.2f}x)"
                        for pss in ("train", "eval")
                    ),
                    flush=True,
                )
                del calls
    return rows


# ------------------------------------------------------------------------------------------------
# Whole training steps


def _conv_bn(cin, cout, k=3, stride=1, groups=1):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Sequential(*_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *_conv_bn(cout, cout))
        self.short = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.a(x) + self.short(x))


def resnet_style(classes=10):
    """ResNet-18's layout at half width: stem, 4 stages of 2 basic blocks (32-64-128-256)."""
    layers = [*_conv_bn(3, 32, 3, 1), nn.ReLU(inplace=True)]
    cin = 32
    for i, cout in enumerate((32, 64, 128, 256)):
        layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def mobilenet_style(classes=10):
    """MobileNet-v1's layout at half width: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU."""
    cfg = [
        (32, 64, 1),
        (64, 128, 2),
        (128, 128, 1),
        (128, 256, 2),
        (256, 256, 1),
        (256, 512, 2),
        (512, 512, 1),
        (512, 512, 1),
    ]
    layers = [*_conv_bn(3, 32, 3, 2), nn.ReLU(inplace=True)]
    for cin, cout, s in cfg:
        layers += [
            *_conv_bn(cin, cin, 3, s, groups=cin),
            nn.ReLU(inplace=True),
            *_conv_bn(cin, cout, 1),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def _no_bn(model):
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                parent._modules[name] = nn.Identity()
    return model


def bench_steps(rounds, layouts, batch=16, hw=112):
    out = []
    for net_name, make in (("ResNet-style", resnet_style), ("MobileNet-style", mobilenet_style)):
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            torch.manual_seed(0)
            base = make().to(memory_format=fmt)
            models = {"torch": base, "ours": dbt.convert(copy.deepcopy(base)), "no BN": _no_bn(copy.deepcopy(base))}
            g = torch.Generator().manual_seed(1)
            x = torch.randn(batch, 3, hw, hw, generator=g).contiguous(memory_format=fmt)
            y = torch.randint(0, 10, (batch,), generator=g)
            steps = {}
            for name, m in models.items():
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

                def step(m=m, opt=opt, x=x, y=y):
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(m(x), y).backward()
                    opt.step()

                steps[name] = step
            t = interleaved(steps, rounds)
            med = {n: statistics.median(v) for n, v in t.items()}
            share = {n: statistics.median((a - c) / a for a, c in zip(t[n], t["no BN"])) for n in ("torch", "ours")}
            row = {
                "net": net_name,
                "layout": layout,
                "batch": batch,
                "hw": hw,
                "torch_ms": 1e3 * med["torch"],
                "ours_ms": 1e3 * med["ours"],
                "no_bn_ms": 1e3 * med["no BN"],
                "speedup": ratio(t, "torch", "ours"),
                "bn_share_torch": share["torch"],
                "bn_share_ours": share["ours"],
            }
            out.append(row)
            print(
                f"{net_name:>16} {layout:>13} batch {batch} {hw}x{hw}: step torch {row['torch_ms']:8.1f} ms, "
                f"ours {row['ours_ms']:8.1f} ms ({row['speedup']:.3f}x), no BN {row['no_bn_ms']:8.1f} ms; "
                f"BN share torch {100 * share['torch']:.1f}%, ours {100 * share['ours']:.1f}%",
                flush=True,
            )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: torch's default)")
    ap.add_argument("--quick", action="store_true", help="a few shapes, the per-call rows, no networks")
    ap.add_argument("--no-nets", action="store_true", help="skip the whole-network training steps")
    ap.add_argument("--nets-only", action="store_true", help="only the whole-network training steps")
    ap.add_argument("--no-act", action="store_true", help="skip the BatchNormAct2d rows")
    ap.add_argument("--act-only", action="store_true", help="only the BatchNormAct2d rows")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--no-output-cache", action="store_true", help="darknet_bn.torch without its output cache")
    ap.add_argument(
        "--sample-s", type=float, default=MIN_SAMPLE_S, help=f"seconds a sample lasts at least (default {MIN_SAMPLE_S})"
    )
    a = ap.parse_args(argv)
    if a.sample_s <= 0:
        ap.error(f"--sample-s: expected seconds > 0, got {a.sample_s}")
    globals()["MIN_SAMPLE_S"] = a.sample_s
    if a.no_output_cache:
        dbt.set_output_cache(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    env = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "THP_", "OMP_"))}
    print(
        f"torch {torch.__version__}, {threads} threads (both), {a.rounds} interleaved rounds of "
        f"{MIN_SAMPLE_S:g} s samples, "
        f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}; env {env}; "
        f"darknet_bn output cache {'off' if a.no_output_cache else 'on'}",
        flush=True,
    )
    layouts = ("contiguous", "channels_last")
    res = {
        "torch": torch.__version__,
        "threads": threads,
        "rounds": a.rounds,
        "sample_s": MIN_SAMPLE_S,
        "env": env,
        "output_cache": not a.no_output_cache,
        "load_before": os.getloadavg()[0],
    }
    if a.nets_only:
        res["steps"] = bench_steps(max(3, a.rounds // 2), layouts)
        res["load_after"] = os.getloadavg()[0]
        print(f"load average {res['load_after']:.1f}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    if a.act_only:
        res["act"] = bench_act(ACT_SHAPES[2:] if a.quick else ACT_SHAPES, layouts, a.rounds)
        res["load_after"] = os.getloadavg()[0]
        print(f"load average {res['load_after']:.1f}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    res["per_call"] = bench_per_call(max(a.rounds, 7))
    res["shapes"] = bench_shapes(QUICK if a.quick else SHAPES, layouts, a.rounds)
    for pss in ("train", "eval"):
        r = [row[pss]["ratio"] for row in res["shapes"]]
        rm = [row[pss]["ratio_of_mins"] for row in res["shapes"]]
        res[f"geomean_{pss}"], res[f"lowest_{pss}"] = gmean(r), min(r)
        res[f"geomean_of_mins_{pss}"], res[f"lowest_of_mins_{pss}"] = gmean(rm), min(rm)
        print(
            f"geometric mean torch/ours, {pss}: {gmean(r):.2f} (lowest {min(r):.2f}); "
            f"of the minimum times: {gmean(rm):.2f} (lowest {min(rm):.2f})"
        )
    if not a.no_act:
        res["act"] = bench_act(ACT_SHAPES[2:] if a.quick else ACT_SHAPES, layouts, a.rounds)
        for pss in ("train", "eval"):
            r = [row[pss]["ratio"] for row in res["act"]]
            res[f"act_geomean_{pss}"] = gmean(r)
            print(f"BatchNormAct2d geometric mean torch/ours, {pss}: {gmean(r):.2f} (lowest {min(r):.2f})")
    if not a.quick and not a.no_nets:
        res["steps"] = bench_steps(max(3, a.rounds // 2), layouts)
    res["load_after"] = os.getloadavg()[0]
    print(f"load average {res['load_after']:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
