"""``darknet-bn bench``: how fast darknet_bn's passes are, against the memory roofline and against peers.

For each shape and pass (training forward, inference forward, backward) it times darknet_bn's
``Layer`` as users call it, and each peer in the same rounds (interleaved: round r runs every
implementation once, in an order that rotates from round to round, so a slow moment of the machine
hits all of them). Each timed sample follows one untimed call of the same implementation: the state
a loop over the layer sees (tensors that fit the last-level cache are in it). Peers:

- ``plain``: Darknet's layer code structure -- forward_batchnorm_layer / backward_batchnorm_layer as
  Darknet writes them, a sequence of the plain kernels with Darknet's copies -- on darknet_bn's plain
  reference kernels (csrc/reference.c: one channel at a time, double sums, one thread);
- ``numpy``: a straightforward numpy implementation of the same math;
- ``torch``: ``torch.nn.functional.batch_norm`` (training forward; autograd's backward of it), with
  the same thread count, allocating its outputs as it does for its users.

The roofline: each pass must move at least 12 (training forward: read x twice, write y), 8 (inference)
or 20 (backward: read x and delta twice, write the input's delta) bytes per element; the bandwidth is a
STREAM-style triad (csrc/stream.c) timed in the same rounds. ``roofline`` = minimum bytes / triad
bandwidth / our time: 1.0 means running at the triad's bandwidth (more is possible from cache, or with
non-temporal stores, which the triad does not use).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import kernels
from ._dbn import ffi, lib
from .flavors import Flavor, get_flavor
from .layer import Layer, _c_flavor

DEFAULT_SHAPES = [(1, 16, 416, 416), (8, 32, 208, 208), (16, 128, 52, 52), (32, 256, 26, 26),
                  (64, 64, 56, 56), (64, 512, 7, 7), (256, 32, 1, 1), (128, 1024, 1, 1),
                  (64, 64, 112, 112)]
PASSES = ("train", "infer", "infer+leaky", "backward")   # infer+leaky: BN and Darknet's leaky in one pass
RENORM_PASSES = ("train+renorm", "backward+renorm")   # --renorm: ours with batch renormalization
BYTES_PER_ELEMENT = {"train": 12, "infer": 8, "infer+leaky": 8, "backward": 20, "train+renorm": 12,
                     "backward+renorm": 20}
PEER_PASS = {"train+renorm": "train", "backward+renorm": "backward"}   # peers have no renorm: plain BN
# passes that also time our plain pass in their rounds ("ours:<pass>"), to report what their extra costs
OURS_BASELINE = {"infer+leaky": "ours:infer", "train+renorm": "ours:train", "backward+renorm": "ours:backward"}
PEERS = ("plain", "numpy", "torch")
TRIAD_N = 1 << 24              # 3 arrays of 64 MiB: well beyond the last-level cache
MIN_SAMPLE_S = 200e-6          # a sample of a tiny pass repeats the call until it lasts this long


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'BxCxHxW' -> (B, C, H, W), each >= 1."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shape {text!r}: expected BxCxHxW with four positive integers, e.g. 8x32x52x52") from None
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"shape {text!r}: expected BxCxHxW with four positive integers, e.g. 8x32x52x52")
    return dims  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# The implementations: each returns {pass: callable} for one shape, with its data prepared.

def _ours(shape, flavor: Flavor, x: np.ndarray, dy: np.ndarray):
    b, c, h, w = shape
    layer = Layer(b, w, h, c, flavor)
    rn = Layer(b, w, h, c, flavor, renorm=True, rmax=3.0, dmax=5.0)
    # The backward runs in place, call after call, on its own output. So that the values neither shrink
    # into subnormals (slow) nor grow, each channel's scale makes the backward map norm-preserving
    # (scale * r / sigma = 1) and the delta starts in the subspace it preserves (zero mean, orthogonal
    # to x_hat). Values do not change the work otherwise.
    x64 = x.astype(np.float64).reshape(b, c, h * w)
    for ly in (layer, rn):
        ly.rolling_variance[:] = 1.0
        ly.forward(x, True)
        sigma = np.sqrt(ly.variance.astype(np.float64) + flavor.eps)
        ly.scales[:] = sigma / ly.r
        xhat = (x64 - x64.mean(axis=(0, 2), keepdims=True)) / sigma[None, :, None]
        g = dy.astype(np.float64).reshape(b, c, h * w)
        g = g - g.mean(axis=(0, 2), keepdims=True)
        g = g - xhat * (g * xhat).sum(axis=(0, 2), keepdims=True) / (xhat * xhat).sum(axis=(0, 2), keepdims=True)
        ly.delta[...] = g.reshape(shape)
        ly.forward(x, True)
    calls = {
        "train": lambda: layer.forward(x, True),
        "infer": lambda: layer.forward(x, False),
        "infer+leaky": lambda: layer.forward(x, False, "leaky"),
        # delta is consumed in place (layer.backward(layer.delta): one write); its values do not
        # change the work, so the same buffer is reused from call to call.
        "backward": lambda: layer.backward(layer.delta),
        "train+renorm": lambda: rn.forward(x, True),
        "backward+renorm": lambda: rn.backward(rn.delta),
    }
    return calls, layer


def _plain(shape, flavor: Flavor, x: np.ndarray, dy: np.ndarray):
    """Darknet's layer code structure on the plain kernels: forward_batchnorm_layer_ref and
    backward_batchnorm_layer_ref (csrc/reference.c), with Darknet's copies, one thread."""
    b, c, h, w = shape
    s = h * w
    bufs = {k: np.zeros_like(x) for k in ("out", "x", "x_norm", "net_delta")}
    delta = dy.copy()
    per = {k: np.zeros(c, np.float32) for k in ("mean", "var", "rm", "rv", "su", "bu", "md", "vd")}
    scales, biases = np.ones(c, np.float32), np.zeros(c, np.float32)
    p = {k: ffi.from_buffer("float[]", v) for k, v in {**per, **bufs}.items()}
    px, pd = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", delta)
    ps, pb = ffi.from_buffer("float[]", scales), ffi.from_buffer("float[]", biases)
    cf = _c_flavor(flavor)

    def forward(train):
        lib.forward_batchnorm_layer_ref(px, p["out"], p["x"], p["x_norm"], ps, pb, p["mean"], p["var"], p["rm"],
                                        p["rv"], b, c, s, cf, train)
    def infer_leaky():   # Darknet: the BN, then activate_array over the output
        forward(0)
        lib.dbn_activate_ref(p["out"], b * c * s, lib.DBN_ACT_LEAKY)
    forward(1)
    return {
        "train": lambda: forward(1),
        "infer": lambda: forward(0),
        "infer+leaky": infer_leaky,
        "backward": lambda: lib.backward_batchnorm_layer_ref(p["x"], p["x_norm"], pd, p["net_delta"], ps, p["mean"],
                                                             p["var"], p["su"], p["bu"], p["md"], p["vd"],
                                                             b, c, s, cf),
    }, None


def _numpy(shape, flavor: Flavor, x: np.ndarray, dy: np.ndarray):
    b, c, h, w = shape
    eps = np.float32(flavor.eps)
    g = np.ones((1, c, 1, 1), np.float32)
    beta = np.zeros((1, c, 1, 1), np.float32)
    rm, rv = np.zeros((1, c, 1, 1), np.float32), np.ones((1, c, 1, 1), np.float32)
    axes = (0, 2, 3)

    def train():
        m = x.mean(axis=axes, keepdims=True)
        v = x.var(axis=axes, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * g + beta

    def infer():
        return (x - rm) / np.sqrt(rv + eps) * g + beta

    def infer_leaky():
        y = infer()
        return np.where(y > 0, y, np.float32(0.1) * y)

    m = x.mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)

    def backward():
        xhat = (x - m) * inv
        dg = dy * g
        return inv * (dg - dg.mean(axis=axes, keepdims=True) - xhat * (dg * xhat).mean(axis=axes, keepdims=True))

    return {"train": train, "infer": infer, "infer+leaky": infer_leaky, "backward": backward}, None


def _torch(shape, flavor: Flavor, x: np.ndarray, dy: np.ndarray):
    import torch
    import torch.nn.functional as F

    b, c, h, w = shape
    xt = torch.from_numpy(x)
    xg = xt.clone().requires_grad_(True)
    wt, bt = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    rm, rv = torch.zeros(c), torch.ones(c)
    go = torch.from_numpy(dy)
    eps, mom = flavor.eps, flavor.momentum
    with torch.no_grad():
        def train():
            return F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=mom, eps=eps)

        def infer():
            return F.batch_norm(xt, rm, rv, wt, bt, training=False, momentum=mom, eps=eps)

        def infer_leaky():
            return F.leaky_relu(infer(), 0.1)
    y = F.batch_norm(xg, rm, rv, wt, bt, training=True, momentum=mom, eps=eps)

    def backward():
        return torch.autograd.grad(y, (xg, wt, bt), go, retain_graph=True)

    def no_grad(f):
        def g():
            with torch.no_grad():
                return f()
        return g
    return {"train": no_grad(train), "infer": no_grad(infer), "infer+leaky": no_grad(infer_leaky),
            "backward": backward}, None


MAKERS = {"ours": _ours, "plain": _plain, "numpy": _numpy, "torch": _torch}


# ------------------------------------------------------------------------------------------------

@dataclass
class Result:
    shape: tuple
    pass_: str
    median_ms: dict = field(default_factory=dict)      # implementation -> median ms
    q1_ms: dict = field(default_factory=dict)
    q3_ms: dict = field(default_factory=dict)
    triad_gbs: float = 0.0
    bytes_min: int = 0

    @property
    def ours_ms(self) -> float:
        return self.median_ms["ours"]

    @property
    def gbs(self) -> float:
        return self.bytes_min / (self.ours_ms * 1e-3) / 1e9

    @property
    def roofline(self) -> float:
        return self.gbs / self.triad_gbs if self.triad_gbs else float("nan")

    def ratio(self, peer: str) -> float:
        """peer time / our time (above 1: we are faster)."""
        return self.median_ms[peer] / self.ours_ms

    def as_dict(self) -> dict:
        d = asdict(self)
        d["pass"] = d.pop("pass_")
        d["gbs"], d["roofline"] = self.gbs, self.roofline
        d["ratios"] = {p: self.ratio(p) for p in self.median_ms if p != "ours" and not p.startswith("ours:")}
        return d


class Triad:
    """A STREAM-style triad over arrays far larger than the cache; one call = one sample (GB/s)."""

    def __init__(self, n: int = TRIAD_N):
        self.n = n
        self.a, self.b, self.c = (np.full(n, v, np.float32) for v in (0.0, 1.0, 2.0))
        self.p = [ffi.from_buffer("float[]", v) for v in (self.a, self.b, self.c)]

    def sample(self) -> float:
        t = time.perf_counter()
        lib.dbn_triad(self.p[0], self.p[1], self.p[2], self.n, 3.0, kernels._exec)
        return 12.0 * self.n / (time.perf_counter() - t) / 1e9


def _time(f: Callable[[], object], reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def _reps_for(f: Callable[[], object]) -> int:
    """How many calls make one sample last at least MIN_SAMPLE_S."""
    t = _time(f, 1)
    return max(1, min(10000, math.ceil(MIN_SAMPLE_S / max(t, 1e-7))))


def default_rounds(shape) -> int:
    n = math.prod(shape)
    return 5 if n > 20_000_000 else 9 if n > 2_000_000 else 15


def run(shapes: Sequence[tuple], peers: Sequence[str], rounds: int | None = None, flavor: str | Flavor = "torch",
        progress: Callable[[int], None] | None = None, triad: Triad | None = None,
        passes: Sequence[str] = PASSES) -> list[Result]:
    """Time every (shape, pass) for darknet_bn and the peers, interleaved round by round. A pass of
    RENORM_PASSES times darknet_bn with batch renormalization against the peers' plain pass."""
    fl = get_flavor(flavor)
    triad = triad or Triad()
    results = []
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        impls = {name: MAKERS[name](shape, fl, x, dy)[0] for name in ("ours", *peers)}
        n_rounds = rounds or default_rounds(shape)
        for p in passes:
            call = {name: calls[p if name == "ours" else PEER_PASS.get(p, p)] for name, calls in impls.items()}
            if p in OURS_BASELINE:   # our pass without its extra, in the same rounds: their ratio is fair
                call[OURS_BASELINE[p]] = impls["ours"][OURS_BASELINE[p].split(":", 1)[1]]
            reps = {name: _reps_for(f) for name, f in call.items()}
            samples: dict[str, list[float]] = {name: [] for name in call}
            bw = []
            names = list(call)
            for rnd in range(n_rounds):
                # each sample follows one untimed call of the same implementation (the state a loop
                # over the layer sees), and the order rotates, so no implementation always follows
                # another (or the triad, which flushes the cache)
                for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                    f = call[name]
                    f()
                    samples[name].append(_time(f, reps[name]))
                bw.append(triad.sample())
                if progress:
                    progress(1)
            r = Result(shape=tuple(shape), pass_=p, triad_gbs=statistics.median(bw),
                       bytes_min=BYTES_PER_ELEMENT[p] * math.prod(shape))
            for name, ts in samples.items():
                q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
                r.median_ms[name] = statistics.median(ts) * 1e3
                r.q1_ms[name], r.q3_ms[name] = q[0] * 1e3, q[2] * 1e3
            results.append(r)
        del impls
    return results


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_table(results: list[Result], peers: Sequence[str]) -> str:
    head = f"{'shape':>18} {'pass':>8} {'ours ms':>9} {'spread':>15} {'GB/s':>6} {'roofline':>8}"
    head += "".join(f" {('x ' + p):>8}" for p in peers)
    lines = [head, "-" * len(head)]
    for r in results:
        shape = "x".join(map(str, r.shape))
        spread = f"{r.q1_ms['ours']:.3f}-{r.q3_ms['ours']:.3f}"
        line = f"{shape:>18} {r.pass_:>8} {r.ours_ms:9.3f} {spread:>15} {r.gbs:6.1f} {r.roofline:8.2f}"
        line += "".join(f" {r.ratio(p):8.2f}" for p in peers)
        lines.append(line)
    lines.append("")
    lines.append("peer time / our time, geometric mean over the shapes (above 1: darknet_bn is faster):")
    for p in peers:
        per = ", ".join(f"{ps} {geomean([r.ratio(p) for r in results if r.pass_ == ps]):.2f}"
                        for ps in dict.fromkeys(r.pass_ for r in results))
        worst = min(results, key=lambda r: r.ratio(p))
        lines.append(f"  {p:>6}: {per}; lowest {worst.ratio(p):.2f} ({'x'.join(map(str, worst.shape))} {worst.pass_})")
    for p, base in OURS_BASELINE.items():
        extra = [(r.ours_ms / r.median_ms[base], r.shape) for r in results if r.pass_ == p and base in r.median_ms]
        if extra:
            worst = max(extra)
            lines.append(f"ours, {p} / {base.split(':')[1]}, timed in the same rounds: geometric mean "
                         f"{geomean([f for f, _ in extra]):.2f}, highest {worst[0]:.2f} ({'x'.join(map(str, worst[1]))})")
    return "\n".join(lines)


def machine_info(threads: int) -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "threads": threads, "isa": kernels.get_isa(), "openmp": kernels.has_openmp()}


def write_json(path: str, results: list[Result], info: dict) -> None:
    with open(path, "w") as f:
        json.dump({"machine": info, "results": [r.as_dict() for r in results]}, f, indent=1)


def plot(path: str, results: list[Result], peers: Sequence[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in results))
    passes = list(dict.fromkeys(r.pass_ for r in results))
    fig, axes = plt.subplots(1, len(passes) + 1, figsize=(5 * (len(passes) + 1), 0.45 * len(shapes) + 2),
                             sharey=True)
    labels = ["x".join(map(str, s)) for s in shapes]
    ys = np.arange(len(shapes))
    for ax, p in zip(axes, passes):
        rs = {r.shape: r for r in results if r.pass_ == p}
        width = 0.8 / max(1, len(peers))
        for i, peer in enumerate(peers):
            ax.barh(ys + i * width, [rs[s].ratio(peer) for s in shapes], height=width, label=peer)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{p}: peer time / darknet_bn time")
    axes[0].set_yticks(ys + 0.4 - 0.4 / max(1, len(peers)))
    axes[0].set_yticklabels(labels)
    axes[0].legend()
    ax = axes[-1]
    height = 0.8 / len(passes)
    for i, p in enumerate(passes):
        rs = {r.shape: r for r in results if r.pass_ == p}
        ax.barh(ys + i * height, [rs[s].roofline for s in shapes], height=height, label=p)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_title("fraction of the triad roofline")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
