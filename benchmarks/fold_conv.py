"""Every convolution with batch_normalize of a Darknet cfg (batch 1), timed as
  conv      : conv2d without bias (the convolution alone)
  folded    : conv2d with the folded bias, then the layer's activation   -- what a folded network runs
  torch     : conv2d, F.batch_norm (eval), the activation                 -- BN as a separate pass
  darknet_bn: conv2d, then darknet_bn's one-pass inference BN + activation (Layer.forward(train=False, activation=...))
torch conv2d float32 on the CPU, 1 thread for both libraries; rounds interleaved (the order of the four
variants rotates from round to round); per-layer medians summed.
usage: python benchmarks/fold_conv.py CFG [--flavor F] [--rounds R] [--layers]   (needs torch)"""

import argparse
import statistics
import time

import torch

import darknet_bn
from darknet_bn import kernels
from darknet_bn.darknet import load_network

F = torch.nn.functional
ACT = {
    "leaky": lambda y: F.leaky_relu(y, 0.1),
    "swish": F.silu,
    "linear": lambda y: y,
    "mish": F.mish,
    "logistic": torch.sigmoid,
    "relu": F.relu,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cfg", help="a Darknet .cfg")
    ap.add_argument("--flavor", default="alexeyab")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--layers", action="store_true", help="also print each layer's medians")
    args = ap.parse_args()
    cfg, flavor, ROUNDS = args.cfg, args.flavor, args.rounds
    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    net = load_network(cfg, batch=1, flavor=flavor)
    layers = [l for l in net.layers if l.type == "convolutional" and l.batch_normalize]
    g = torch.Generator().manual_seed(0)
    cases = []
    for l in layers:
        act = net.cfg.sections[l.index].get_str("activation", "logistic")
        x = torch.randn(1, l.c, l.h, l.w, generator=g)
        w = torch.randn(l.n, l.c // l.groups, l.size, l.size, generator=g) * 0.05
        n = l.n
        rm, rv = torch.randn(n, generator=g), torch.rand(n, generator=g) + 0.5
        ga, be, bias = torch.rand(n, generator=g) + 0.5, torch.randn(n, generator=g), torch.randn(n, generator=g)
        lyr = darknet_bn.Layer(1, l.out_w, l.out_h, n, "torch")
        lyr.scales[:], lyr.biases[:], lyr.rolling_mean[:], lyr.rolling_variance[:] = (
            ga.numpy(),
            be.numpy(),
            rm.numpy(),
            rv.numpy(),
        )
        kw = dict(stride=(l.stride_y or l.stride, l.stride_x or l.stride), padding=l.pad, groups=l.groups)
        a = ACT[act]
        fns = {
            "conv": lambda x=x, w=w, kw=kw: F.conv2d(x, w, None, **kw),
            "folded": lambda x=x, w=w, kw=kw, b=bias, a=a: a(F.conv2d(x, w, b, **kw)),
            "torch": lambda x=x, w=w, kw=kw, rm=rm, rv=rv, ga=ga, be=be, a=a: a(
                F.batch_norm(F.conv2d(x, w, None, **kw), rm, rv, ga, be, False, 0.0, 1e-5)
            ),
            "darknet_bn": lambda x=x, w=w, kw=kw, lyr=lyr, act=act: lyr.forward(
                F.conv2d(x, w, None, **kw).numpy(), train=False, activation=act
            ),
        }
        cases.append((l, act, fns))
    with torch.no_grad():
        for _, _, fns in cases:
            for f in fns.values():
                f()
                f()
        times = [{k: [] for k in fns} for _, _, fns in cases]
        names = list(cases[0][2])
        for r in range(ROUNDS):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no variant always runs first
            for (_lyr, _act, fns), t in zip(cases, times):
                for k in order:
                    f = fns[k]
                    t0 = time.perf_counter()
                    f()
                    t[k].append(time.perf_counter() - t0)
    groups = {"all": lambda l: True, "depthwise": lambda l: l.groups > 1, "dense": lambda l: l.groups == 1}
    elems = 0
    tot = {gname: {k: 0.0 for k in cases[0][2]} for gname in groups}
    for (l, act, _), t in zip(cases, times):
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        elems += l.out_c * l.out_h * l.out_w
        for gname, pred in groups.items():
            if pred(l):
                for k in med:
                    tot[gname][k] += med[k]
        if args.layers:
            print(
                f"layer {l.index:3d} {l.c:4d}->{l.n:4d}/{l.groups} {l.size}x{l.size}/{l.stride} "
                f"-> {l.out_w}x{l.out_h} {act}: " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()),
                flush=True,
            )
    print(
        f"{cfg.split('/')[-1]}: {len(cases)} convolutions with BN, {elems} normalized values "
        f"({elems * 4 / 1e6:.1f} MB; a separate BN pass reads and writes {elems * 8 / 1e6:.1f} MB)"
    )
    for gname, t in tot.items():
        if t["conv"] == 0:
            continue
        print(
            f"  {gname:9s} sums of medians (ms): "
            + ", ".join(f"{k} {v:.2f}" for k, v in t.items())
            + f";  torch/folded {t['torch'] / t['folded']:.3f}, darknet_bn/folded {t['darknet_bn'] / t['folded']:.3f}"
        )


if __name__ == "__main__":
    main()
