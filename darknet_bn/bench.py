"""``darknet-bn bench``: how fast darknet_bn's passes are, against the memory roofline and against peers.

For each shape and pass (training forward, inference forward, inference + leaky, backward) it times
darknet_bn's ``Layer`` as users call it, and each peer in the same rounds (interleaved: round r runs
every implementation once, in an order that rotates from round to round, so a slow moment of the
machine hits all of them). Each timed sample follows one untimed call of the same implementation: the
state a loop over the layer sees (tensors that fit the last-level cache are in it). Each pass runs in
the state users call it in: the backward rows time the training backward, after a training forward
(one untimed training forward before the row's rounds; backward calls do not change the mode).

Peers (``PEERS``; by default every installed one of ``DEFAULT_PEERS``), each called the fastest way
its documentation offers, with the same thread count, on the same input and parameters:

- ``plain``: Darknet's layer code structure -- forward_batchnorm_layer / backward_batchnorm_layer as
  Darknet writes them, a sequence of the plain kernels with Darknet's copies -- on darknet_bn's plain
  reference kernels (csrc/reference.c: one channel at a time, double sums, one thread);
- ``numpy``: a straightforward numpy implementation of the same math;
- ``torch``: ``torch.nn.functional.batch_norm``, allocating its outputs as it does for its users
  (the backward: autograd's, of a training forward);
- ``torch-out``: ``torch.ops.aten.native_batch_norm.out`` / ``native_batch_norm_backward.out`` into
  preallocated outputs;
- ``ort``: ONNX Runtime, a one-node BatchNormalization model, io_binding to a preallocated output
  (inference passes only);
- ``openvino``: OpenVINO with f32 inference precision forced and shared-memory tensors (inference
  passes only);
- ``jax``: ``jax.jit`` functions compiled before the timing, outputs into donated buffers.

Before a peer is timed on a shape, each pass it offers runs once and is compared with ours; a peer
whose output differs beyond float32 rounding (``CHECK_RTOL``), or that fails, is reported and not
timed in that row.

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
from ._capi import EXEC, c_flavor, ffi, lib
from .flavors import Flavor, get_flavor
from .layer import Layer

DEFAULT_SHAPES = [(1, 16, 416, 416), (8, 32, 208, 208), (16, 128, 52, 52), (32, 256, 26, 26),
                  (64, 64, 56, 56), (64, 512, 7, 7), (256, 32, 1, 1), (128, 1024, 1, 1)]
#: --large adds it: 205 MB per tensor (beyond most last-level caches; the run's longest shape)
LARGE_SHAPES = [(64, 64, 112, 112)]
PASSES = ("train", "infer", "infer+leaky", "backward")   # infer+leaky: BN and Darknet's leaky in one pass
RENORM_PASSES = ("train+renorm", "backward+renorm")   # --renorm: ours with batch renormalization
BYTES_PER_ELEMENT = {"train": 12, "infer": 8, "infer+leaky": 8, "backward": 20, "train+renorm": 12,
                     "backward+renorm": 20}
PEER_PASS = {"train+renorm": "train", "backward+renorm": "backward"}   # peers have no renorm: plain BN
# passes that also time our plain pass in their rounds ("ours:<pass>"), to report what their extra costs
OURS_BASELINE = {"infer+leaky": "ours:infer", "train+renorm": "ours:train", "backward+renorm": "ours:backward"}
PEERS = ("plain", "numpy", "torch", "torch-out", "ort", "openvino", "jax")
#: compared by default, each when installed: the libraries a user would pick instead (plain and numpy,
#: darknet_bn's own references, only when asked for)
DEFAULT_PEERS = ("torch", "torch-out", "ort", "openvino", "jax")
DEFAULT_BUDGET_S = 40.0       # what the default run aims at, setup included (each row still gets MIN_ROUNDS)
MIN_ROUNDS = 3
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
# The implementations. Each maker gets the shape's Setup and returns an Impl: one callable per pass it
# offers (one call as its users make it), a callable per pass that runs it once and returns its output
# as numpy (for the check against ours), and the untimed preparation a pass needs.

@dataclass
class Setup:
    """What every implementation of one shape gets: the data, the per-channel parameters the peers and
    the check share (``gamma``, ``beta``, running ``rm``/``rv`` for inference), the flavor darknet_bn
    and ``plain`` follow (the peers follow PyTorch's math: eps 1e-5, momentum 0.1), the thread count
    and the passes to time."""
    shape: tuple
    flavor: Flavor
    x: np.ndarray
    dy: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    rm: np.ndarray
    rv: np.ndarray
    threads: int
    passes: tuple
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass
class Impl:
    calls: dict                                       # pass -> one call
    outputs: dict = field(default_factory=dict)       # pass -> run once, return the output (numpy)
    prepare: dict = field(default_factory=dict)       # pass -> untimed, once before the pass's rounds
    version: str = ""


def _ours(s: Setup) -> Impl:
    b, c, h, w = s.shape
    x = s.x
    layer = Layer(b, w, h, c, s.flavor)
    layers = [layer]
    rn = None
    if any(p in RENORM_PASSES for p in s.passes):
        rn = Layer(b, w, h, c, s.flavor, renorm=True, rmax=3.0, dmax=5.0)
        layers.append(rn)
    # The backward runs in place, call after call, on its own output. So that the values neither shrink
    # into subnormals (slow) nor grow, each channel's scale makes the training backward's map
    # norm-preserving (scale * r / sigma = 1): it is then a projection (it removes the delta's mean and
    # its x_hat component), so from its first (untimed) call on it maps delta to itself. Values do not
    # change the work otherwise.
    fl = s.flavor
    for ly in layers:
        ly.rolling_variance[:] = 1.0
        ly.forward(x, True)
        v = ly.variance.astype(np.float64)
        sigma = np.sqrt(v + fl.eps) if fl.eps_in_sqrt else np.sqrt(v) + fl.eps
        ly.scales[:] = sigma / ly.r
        ly.delta[...] = s.dy
    calls = {
        "train": lambda: layer.forward(x, True),
        "infer": lambda: layer.forward(x, False),
        "infer+leaky": lambda: layer.forward(x, False, "leaky"),
        # delta is consumed in place (layer.backward(layer.delta): one write); its values do not
        # change the work, so the same buffer is reused from call to call.
        "backward": lambda: layer.backward(layer.delta),
    }
    # Every backward row times the training backward, after a training forward, as users run it
    # (a backward after an inference forward is the cheaper inference-mode one: no mean_delta or
    # variance_delta). Backward calls do not change the layer's mode, so one training forward before
    # the pass's rounds puts the layer in that state for all of them.
    prepare = {"backward": lambda: layer.forward(x, True)}
    if rn is not None:
        calls["train+renorm"] = lambda: rn.forward(x, True)
        calls["backward+renorm"] = lambda: rn.backward(rn.delta)
        prepare["backward+renorm"] = lambda: rn.forward(x, True)
    return Impl(calls, prepare=prepare)


def _reference(s: Setup, passes: Sequence[str]) -> dict:
    """Ours, once per pass, on the peers' math (a torch-flavored Layer) with the shared parameters:
    the outputs each peer's output is checked against (pass -> (output, its max |value|)). The
    backward follows a training forward."""
    b, c, h, w = s.shape
    ly = Layer(b, w, h, c, "torch")
    ly.scales[:], ly.biases[:] = s.gamma, s.beta
    out = {}

    def inference_stats():
        ly.rolling_mean[:], ly.rolling_variance[:] = s.rm, s.rv
    if "train" in passes or "backward" in passes:
        inference_stats()
        y = ly.forward(s.x, True)
        if "train" in passes:
            out["train"] = y.copy()
        if "backward" in passes:
            ly.delta[...] = s.dy
            out["backward"] = ly.backward(ly.delta).copy()
    for p, act in (("infer", None), ("infer+leaky", "leaky")):
        if p in passes:
            inference_stats()
            out[p] = ly.forward(s.x, False, act).copy()
    return {p: (v, float(max(v.max(), -v.min()))) for p, v in out.items()}


def _plain(s: Setup) -> Impl:
    """Darknet's layer code structure on the plain kernels: forward_batchnorm_layer_ref and
    backward_batchnorm_layer_ref (csrc/reference.c), with Darknet's copies, one thread. Follows the
    bench's flavor (so it is not checked against the peers' math; tests/test_kernels.py checks it)."""
    b, c, h, w = s.shape
    x = s.x
    sp = h * w
    bufs = {k: np.zeros_like(x) for k in ("out", "x", "x_norm", "net_delta")}
    delta = s.dy.copy()
    per = {k: np.zeros(c, np.float32) for k in ("mean", "var", "rm", "rv", "su", "bu", "md", "vd")}
    scales, biases = np.ones(c, np.float32), np.zeros(c, np.float32)
    p = {k: ffi.from_buffer("float[]", v) for k, v in {**per, **bufs}.items()}
    px, pd = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", delta)
    ps, pb = ffi.from_buffer("float[]", scales), ffi.from_buffer("float[]", biases)
    cf = c_flavor(s.flavor)

    def forward(train):
        lib.forward_batchnorm_layer_ref(px, p["out"], p["x"], p["x_norm"], ps, pb, p["mean"], p["var"], p["rm"],
                                        p["rv"], b, c, sp, cf, train)

    def infer_leaky():   # Darknet: the BN, then activate_array over the output
        forward(0)
        lib.dbn_activate_ref(p["out"], b * c * sp, lib.DBN_ACT_LEAKY)

    def backward():      # Darknet's backward reads x, x_norm and the batch statistics of the last training forward
        lib.backward_batchnorm_layer_ref(p["x"], p["x_norm"], pd, p["net_delta"], ps, p["mean"], p["var"], p["su"],
                                         p["bu"], p["md"], p["vd"], b, c, sp, cf)
    forward(1)
    return Impl({"train": lambda: forward(1), "infer": lambda: forward(0), "infer+leaky": infer_leaky,
                 "backward": backward}, prepare={"backward": lambda: forward(1)})


def _numpy(s: Setup) -> Impl:
    """The same math in straightforward numpy (allocating as numpy does)."""
    x, dy = s.x, s.dy
    c = s.shape[1]
    eps = np.float32(s.eps)
    g, beta = s.gamma.reshape(1, c, 1, 1), s.beta.reshape(1, c, 1, 1)
    rm, rv = s.rm.reshape(1, c, 1, 1), s.rv.reshape(1, c, 1, 1)
    trm, trv = rm.copy(), rv.copy()
    axes = (0, 2, 3)
    n = x.size // c
    mom = np.float32(s.momentum)

    def train():
        m = x.mean(axis=axes, keepdims=True)
        v = x.var(axis=axes, keepdims=True)
        trm[...] = (1 - mom) * trm + mom * m
        trv[...] = (1 - mom) * trv + mom * v * (n / (n - 1))
        return (x - m) / np.sqrt(v + eps) * g + beta

    def infer():
        return (x - rm) / np.sqrt(rv + eps) * g + beta

    def infer_leaky():
        y = infer()
        return np.where(y > 0, y, np.float32(0.1) * y)

    m = x.mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)

    def backward():      # from the training forward's statistics m, inv
        xhat = (x - m) * inv
        dg = dy * g
        return inv * (dg - dg.mean(axis=axes, keepdims=True) - xhat * (dg * xhat).mean(axis=axes, keepdims=True))

    calls = {"train": train, "infer": infer, "infer+leaky": infer_leaky, "backward": backward}
    return Impl(calls, outputs=dict(calls), version=np.__version__)


def _torch(s: Setup) -> Impl:
    """``torch.nn.functional.batch_norm`` as its users call it: allocating its output on every call
    (inference and training forward under no_grad; the backward is autograd's, of a training forward
    with grad); the fused leaky pass is BN then ``F.leaky_relu(..., inplace=True)``."""
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(s.x)
    xg = xt.clone().requires_grad_(True)
    wt = torch.from_numpy(s.gamma.copy()).requires_grad_(True)
    bt = torch.from_numpy(s.beta.copy()).requires_grad_(True)
    rm, rv = torch.from_numpy(s.rm.copy()), torch.from_numpy(s.rv.copy())        # inference
    trm, trv = rm.clone(), rv.clone()                                              # updated by training
    go = torch.from_numpy(s.dy)
    eps, mom = s.eps, s.momentum

    def train():
        with torch.no_grad():
            return F.batch_norm(xt, trm, trv, wt, bt, training=True, momentum=mom, eps=eps)

    def infer():
        with torch.no_grad():
            return F.batch_norm(xt, rm, rv, wt, bt, training=False, momentum=mom, eps=eps)

    def infer_leaky():
        with torch.no_grad():
            return F.leaky_relu(F.batch_norm(xt, rm, rv, wt, bt, training=False, momentum=mom, eps=eps), 0.1,
                                inplace=True)
    y = F.batch_norm(xg, trm.clone(), trv.clone(), wt, bt, training=True, momentum=mom, eps=eps)

    def backward():
        return torch.autograd.grad(y, (xg, wt, bt), go, retain_graph=True)

    calls = {"train": train, "infer": infer, "infer+leaky": infer_leaky, "backward": backward}
    outputs = {p: (lambda f=f: f().numpy()) for p, f in calls.items() if p != "backward"}
    outputs["backward"] = lambda: backward()[0].numpy()
    return Impl(calls, outputs, version=torch.__version__)


def _torch_out(s: Setup) -> Impl:
    """PyTorch into preallocated outputs: ``torch.ops.aten.native_batch_norm.out`` (the forwards; its
    ``save_mean``/``save_invstd`` too) and ``native_batch_norm_backward.out`` (the backward, from the
    saved statistics of a training forward); leaky: ``leaky_relu_`` on the output."""
    import torch

    aten = torch.ops.aten
    c = s.shape[1]
    xt, go = torch.from_numpy(s.x), torch.from_numpy(s.dy)
    g, bt = torch.from_numpy(s.gamma.copy()), torch.from_numpy(s.beta.copy())
    rm, rv = torch.from_numpy(s.rm.copy()), torch.from_numpy(s.rv.copy())
    trm, trv = rm.clone(), rv.clone()
    y, dx = torch.empty_like(xt), torch.empty_like(xt)
    sm, si, sm0, si0, dg, db = (torch.empty(c) for _ in range(6))
    eps, mom = s.eps, s.momentum

    def train():
        aten.native_batch_norm.out(xt, g, bt, trm, trv, True, mom, eps, out=y, save_mean=sm, save_invstd=si)

    def infer():   # in eval mode save_mean/save_invstd are not written (empty): separate buffers
        aten.native_batch_norm.out(xt, g, bt, rm, rv, False, mom, eps, out=y, save_mean=sm0, save_invstd=si0)

    def infer_leaky():
        infer()
        aten.leaky_relu_(y, 0.1)

    def backward():
        aten.native_batch_norm_backward.out(go, xt, g, trm, trv, sm, si, True, eps, [True, True, True],
                                            out0=dx, out1=dg, out2=db)
    calls = {"train": train, "infer": infer, "infer+leaky": infer_leaky, "backward": backward}
    outputs = {p: (lambda f=f, o=(dx if p == "backward" else y): (f(), o.numpy())[1]) for p, f in calls.items()}
    return Impl(calls, outputs, prepare={"backward": train}, version=torch.__version__)


def _ort(s: Setup) -> Impl:
    """ONNX Runtime, a one-node BatchNormalization model (inference mode; with LeakyRelu after it for
    the leaky pass) on the CPU provider, with ``threads`` intra-op threads, input and preallocated
    output bound once with io_binding (``run_with_iobinding``: no copy, no allocation). Only the
    inference passes: ORT's inference build has no backward, and its training_mode=1 BatchNormalization
    updates the running variance with the biased batch variance (not PyTorch's or Darknet's)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    shape = list(s.shape)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = s.threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    inits = [numpy_helper.from_array(a, n) for a, n in ((s.gamma, "g"), (s.beta, "b"), (s.rm, "rm"), (s.rv, "rv"))]
    xin = ort.OrtValue.ortvalue_from_numpy(s.x)
    y = np.empty_like(s.x)
    yout = ort.OrtValue.ortvalue_from_numpy(y)

    def session(leaky: bool):
        nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "rm", "rv"], ["bn" if leaky else "y"],
                                  epsilon=s.eps)]
        if leaky:
            nodes.append(helper.make_node("LeakyRelu", ["bn"], ["y"], alpha=0.1))
        graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        io = sess.io_binding()
        io.bind_ortvalue_input("x", xin)
        io.bind_ortvalue_output("y", yout)
        return lambda: sess.run_with_iobinding(io)
    calls = {p: session(p == "infer+leaky") for p in ("infer", "infer+leaky") if p in _peer_passes(s.passes)}
    outputs = {p: (lambda f=f: (f(), y)[1]) for p, f in calls.items()}
    return Impl(calls, outputs, version=f"{ort.__version__} (onnx {onnx.__version__})")


def _openvino(s: Setup) -> Impl:
    """OpenVINO, a BatchNormInference model (then PRelu with slope 0.1 for the leaky pass: OpenVINO has
    no LeakyRelu), compiled for the CPU with f32 inference precision forced (its default on CPUs with
    bf16 is bf16) and ``threads`` threads, input and output as shared-memory tensors set once
    (``infer()`` then neither copies nor allocates). Only the inference passes: OpenVINO has no training
    BatchNorm and no backward."""
    import openvino as ov
    import openvino.opset13 as ops

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": s.threads, "PERFORMANCE_HINT": "LATENCY"}
    y = np.empty_like(s.x)
    xin, yout = ov.Tensor(s.x, shared_memory=True), ov.Tensor(y, shared_memory=True)

    def request(leaky: bool):
        p = ops.parameter(list(s.shape), np.float32, name="x")
        node = ops.batch_norm_inference(p, s.gamma, s.beta, s.rm, s.rv, s.eps)
        if leaky:
            node = ops.prelu(node, np.array([0.1], np.float32))
        compiled = core.compile_model(ov.Model([node], [p], "bn"), "CPU", cfg)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        if precision != ov.Type.f32:
            raise RuntimeError(f"OpenVINO compiled with inference precision {precision}, not f32")
        req = compiled.create_infer_request()
        req.set_input_tensor(xin)
        req.set_output_tensor(yout)
        return req.infer
    calls = {p: request(p == "infer+leaky") for p in ("infer", "infer+leaky") if p in _peer_passes(s.passes)}
    outputs = {p: (lambda f=f: (f(), y)[1]) for p, f in calls.items()}
    return Impl(calls, outputs, version=ov.__version__)


def _jax(s: Setup) -> Impl:
    """JAX on the CPU: each pass one ``jax.jit`` function, compiled before the timing
    (``.lower(...).compile()``), its output written into a donated buffer (``donate_argnums`` with
    ``keep_unused=True``: without it XLA drops the unused argument and donation is ignored), the result
    awaited (``block_until_ready``). The training forward returns the new running statistics (donated
    too); the backward is ``jax.vjp``'s function of a training forward (its saved residuals), jitted.
    Threads: XLA's own pool (one thread per core; it has no per-call setting)."""
    import jax
    import jax.numpy as jnp

    b, c, h, w = s.shape
    eps, mom = s.eps, s.momentum
    n = b * h * w
    col = lambda v: v[:, None, None]   # noqa: E731  (c,) -> (c, 1, 1), broadcast over (b, c, h, w)
    axes = (0, 2, 3)
    x = jnp.asarray(s.x)
    g, beta = jnp.asarray(s.gamma), jnp.asarray(s.beta)
    rm, rv = jnp.asarray(s.rm), jnp.asarray(s.rv)

    def bn_train(x, g, beta):
        m = jnp.mean(x, axis=axes)
        v = jnp.mean(jnp.square(x - col(m)), axis=axes)
        return (x - col(m)) * col(g * jax.lax.rsqrt(v + eps)) + col(beta), m, v

    def train(x, g, beta, rm, rv, buf):
        y, m, v = bn_train(x, g, beta)
        return y, (1 - mom) * rm + mom * m, (1 - mom) * rv + mom * v * (n / (n - 1))

    def infer(x, g, beta, rm, rv, buf):
        return (x - col(rm)) * col(g * jax.lax.rsqrt(rv + eps)) + col(beta)

    def infer_leaky(x, g, beta, rm, rv, buf):
        y = infer(x, g, beta, rm, rv, buf)
        return jnp.where(y > 0, y, 0.1 * y)

    def compiled(f, args, donate):
        return jax.jit(f, donate_argnums=donate, keep_unused=True).lower(*args).compile()

    state = {"y": jnp.zeros(s.shape, jnp.float32), "rm": jnp.array(rm), "rv": jnp.array(rv)}
    calls, outputs = {}, {}
    want = _peer_passes(s.passes)
    if "train" in want:
        ft = compiled(train, (x, g, beta, state["rm"], state["rv"], state["y"]), (3, 4, 5))

        def call_train():
            state["y"], state["rm"], state["rv"] = ft(x, g, beta, state["rm"], state["rv"], state["y"])
            state["y"].block_until_ready()
        calls["train"] = call_train
    for p, f in (("infer", infer), ("infer+leaky", infer_leaky)):
        if p in want:
            fc = compiled(f, (x, g, beta, rm, rv, state["y"]), (5,))

            def call_infer(fc=fc):
                state["y"] = fc(x, g, beta, rm, rv, state["y"])
                state["y"].block_until_ready()
            calls[p] = call_infer
    if "backward" in want:
        # the training forward's vjp function (its residuals), made by a jitted forward
        _, vjp_fn = jax.jit(lambda x, g, beta: jax.vjp(lambda *a: bn_train(*a)[0], x, g, beta))(x, g, beta)
        dy = jnp.asarray(s.dy)
        state["dx"] = jnp.zeros(s.shape, jnp.float32)
        fb = compiled(lambda f, dy, buf: f(dy), (vjp_fn, dy, state["dx"]), (2,))

        def call_backward():
            state["dx"] = fb(vjp_fn, dy, state["dx"])[0]
            state["dx"].block_until_ready()
        calls["backward"] = call_backward
    for p, f in calls.items():
        key = "dx" if p == "backward" else "y"
        outputs[p] = lambda f=f, key=key: (f(), np.asarray(state[key]))[1]
    return Impl(calls, outputs, version=jax.__version__)


def _peer_passes(passes: Sequence[str]) -> set:
    return {PEER_PASS.get(p, p) for p in passes}


MAKERS = {"ours": _ours, "plain": _plain, "numpy": _numpy, "torch": _torch, "torch-out": _torch_out,
          "ort": _ort, "openvino": _openvino, "jax": _jax}
#: the module each peer needs (the peer is compared only when it imports)
PEER_MODULES = {"torch": ("torch",), "torch-out": ("torch",), "ort": ("onnxruntime", "onnx"),
                "openvino": ("openvino",), "jax": ("jax",)}
PEER_INSTALL = {"torch": "pip install torch", "torch-out": "pip install torch", "ort": "pip install onnxruntime onnx",
                "openvino": "pip install openvino", "jax": "pip install jax"}
#: the passes each peer offers (the others are not timed for it; see each maker's docstring)
PEER_OFFERS = {"ort": ("infer", "infer+leaky"), "openvino": ("infer", "infer+leaky")}
CHECK_RTOL = 1e-4   # a peer's output must be within CHECK_RTOL * max(1, max|ours|) of ours, everywhere


def offers(peer: str, pass_: str) -> bool:
    """Whether ``peer`` offers ``pass_`` (a +renorm pass: its plain pass)."""
    return PEER_PASS.get(pass_, pass_) in PEER_OFFERS.get(peer, PASSES)


def available(peer: str) -> bool:
    """Whether the peer's packages import."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in PEER_MODULES.get(peer, ()))


def _check(impl: Impl, ref: dict, passes: Sequence[str], scratch: np.ndarray) -> tuple[dict, dict]:
    """Run each pass of a peer once and compare its output with ours (``ref``: pass -> (output, its
    max |value|)): (max |error| per pass, reason per pass that differs or failed). ``scratch``: a
    float32 buffer of the output's size."""
    errors, bad = {}, {}
    for p in dict.fromkeys(PEER_PASS.get(q, q) for q in passes):
        if p not in impl.outputs or p not in ref:
            continue
        want, top = ref[p]
        try:
            out = np.asarray(impl.outputs[p]()).reshape(want.shape)
        except Exception as e:   # a peer that fails is reported and not timed
            bad[p] = f"failed: {type(e).__name__}: {e}"
            continue
        scale = max(1.0, top)
        np.subtract(out, want, out=scratch)
        np.abs(scratch, out=scratch)
        err = float(scratch.max())
        errors[p] = err
        if not err <= CHECK_RTOL * scale:
            bad[p] = f"differs from ours: max |error| {err:.3g} > {CHECK_RTOL:g} * {scale:.3g}"
    return errors, bad


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
    rounds: int = 0
    check_error: dict = field(default_factory=dict)    # peer -> max |peer - ours| of the check
    not_timed: dict = field(default_factory=dict)      # peer -> why it was not timed in this row
    setup_s: dict = field(default_factory=dict)        # the shape's setup and checks (its first row only)
    rounds_s: float = 0.0                              # the time the row's rounds took

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
        """peer time / our time (above 1: we are faster); NaN when the peer was not timed in this row."""
        return self.median_ms[peer] / self.ours_ms if peer in self.median_ms else float("nan")

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
        lib.dbn_triad(self.p[0], self.p[1], self.p[2], self.n, 3.0, EXEC)
        return 12.0 * self.n / (time.perf_counter() - t) / 1e9


def _time(f: Callable[[], object], reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def _reps_for(f: Callable[[], object]) -> tuple[int, float]:
    """How many calls make one sample last at least MIN_SAMPLE_S, and one call's time (s)."""
    t = _time(f, 1)
    return max(1, min(10000, math.ceil(MIN_SAMPLE_S / max(t, 1e-7)))), t


def default_rounds(shape) -> int:
    """The most rounds per shape and pass (fewer when a time budget asks for it)."""
    n = math.prod(shape)
    return 5 if n > 20_000_000 else 9 if n > 2_000_000 else 15


def _data(shape) -> tuple[np.ndarray, np.ndarray]:
    """x and dy: uniform with mean 0 and variance 1 (the values do not change the work; uniform draws
    cost a third of normal ones)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        a = rng.random(shape, dtype=np.float32)
        a -= np.float32(0.5)
        a *= np.float32(math.sqrt(12.0))
        out.append(a)
    return out[0], out[1]


def _params(c: int) -> tuple[np.ndarray, ...]:
    """The peers' (and the check's) gamma, beta, running mean and running variance: fixed, distinct
    per channel (the data is standard normal, so the outputs are of order 1)."""
    lin = np.linspace(0.0, 1.0, c, dtype=np.float32)
    return (0.5 + lin, (lin - 0.5) * 0.4, (lin - 0.5) * 0.2, 0.8 + 0.4 * lin)


def run(shapes: Sequence[tuple], peers: Sequence[str], rounds: int | None = None, flavor: str | Flavor = "torch",
        progress: Callable[[int], None] | None = None, triad: Triad | None = None,
        passes: Sequence[str] = PASSES, budget_s: float | None = None) -> list[Result]:
    """Time every (shape, pass) for darknet_bn and the peers, interleaved round by round. A pass of
    RENORM_PASSES times darknet_bn with batch renormalization against the peers' plain pass.

    Before a peer is timed on a shape, each pass it offers runs once and its output is compared with
    ours (the same input and parameters, PyTorch's math): a peer that differs, or fails, is not timed
    in that row, and the row says why (``Result.not_timed``; ``Result.check_error`` has the errors).

    rounds: rounds per row (``None``: :func:`default_rounds`, or fewer -- down to MIN_ROUNDS -- when
    ``budget_s`` is given: the seconds the whole run aims at, setup included; each row gets an equal
    share of what is left, after the setup the remaining shapes are expected to need, and as many
    rounds as its estimated round time allows). ``progress`` is called with the count of rounds done (or
    skipped by the budget), summing to ``sum(len(passes) * default_rounds(shape))`` (or ``rounds``).
    """
    fl = get_flavor(flavor)
    triad = triad or Triad()
    passes = tuple(passes)
    threads = kernels.get_num_threads()
    n_rows = len(shapes) * len(passes)
    results = []
    start = time.perf_counter()
    setup_total = 0.0
    for i_shape, shape in enumerate(shapes):
        shape = tuple(shape)
        t0 = time.perf_counter()
        x, dy = _data(shape)
        gamma, beta, rm, rv = _params(shape[1])
        s = Setup(shape, fl, x, dy, gamma, beta, rm, rv, threads, passes)
        setup_s = {"data": time.perf_counter() - t0}
        t0 = time.perf_counter()
        impls = {"ours": _ours(s)}
        setup_s["ours"] = time.perf_counter() - t0
        errors: dict = {}
        not_timed: dict = {}   # peer -> {pass: reason} (pass "*": every pass)
        ref = None
        for name in peers:
            t0 = time.perf_counter()
            try:
                impl = MAKERS[name](s)
            except Exception as e:
                not_timed[name] = {"*": f"failed to set up: {type(e).__name__}: {e}"}
                continue
            impls[name] = impl
            setup_s[name] = time.perf_counter() - t0
            if impl.outputs:
                t0 = time.perf_counter()
                if ref is None:
                    ref, scratch = _reference(s, _peer_passes(passes)), np.empty_like(x)
                errors[name], not_timed[name] = _check(impl, ref, passes, scratch)
                setup_s[name + " check"] = time.perf_counter() - t0
        ref = scratch = None
        setup_total += sum(setup_s.values())
        setup_left = setup_total / (i_shape + 1) * (len(shapes) - i_shape - 1)
        n_rounds = rounds or default_rounds(shape)
        for p in passes:
            pp = PEER_PASS.get(p, p)
            entries = {"ours": ("ours", p)}
            if p in OURS_BASELINE:   # our pass without its extra, in the same rounds: their ratio is fair
                entries[OURS_BASELINE[p]] = ("ours", OURS_BASELINE[p].split(":", 1)[1])
            r = Result(shape=shape, pass_=p, bytes_min=BYTES_PER_ELEMENT[p] * math.prod(shape))
            for name in peers:
                why = not_timed.get(name, {})
                why = why.get("*") or why.get(pp)
                if why is None and (name not in impls or pp not in impls[name].calls):
                    why = "does not offer this pass" if not offers(name, p) else "not available"
                if why is None:
                    entries[name] = (name, pp)
                    if pp in errors.get(name, {}):
                        r.check_error[name] = errors[name][pp]
                else:
                    r.not_timed[name] = why
            est: dict[str, tuple[int, float]] = {}
            # the state each pass is called in (e.g. the backward after a training forward)
            for name, (impl, q) in entries.items():
                prep = impls[impl].prepare.get(q)
                if prep is not None:
                    prep()
            call = {name: impls[impl].calls[q] for name, (impl, q) in entries.items()}
            samples: dict[str, list[float]] = {name: [] for name in call}
            reps: dict[str, int] = {}
            bw = []
            names = list(call)
            this_rounds = n_rounds
            t0 = time.perf_counter()
            rnd = 0
            while rnd < this_rounds:
                # each sample follows one untimed call of the same implementation (the state a loop
                # over the layer sees; in round 0 it also tells how many calls make a sample), and the
                # order rotates, so no implementation always follows another (or the triad, which
                # flushes the cache)
                for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                    f = call[name]
                    if rnd == 0:
                        reps[name], one = _reps_for(f)
                        est[name] = (reps[name], one)
                    else:
                        f()
                    samples[name].append(_time(f, reps[name]))
                bw.append(triad.sample())
                if rnd == 0 and rounds is None and budget_s is not None:
                    per_round = sum((k + 1) * t for k, t in est.values()) + 12.0 * triad.n / 30e9
                    rows_left = n_rows - len(results)
                    share = (budget_s - (time.perf_counter() - start) - setup_left) / rows_left
                    this_rounds = max(MIN_ROUNDS, min(n_rounds, int(share / per_round) + 1))
                if progress:
                    progress(1)
                rnd += 1
            if progress and this_rounds < n_rounds:
                progress(n_rounds - this_rounds)
            r.triad_gbs, r.rounds = statistics.median(bw), this_rounds
            r.setup_s, setup_s = setup_s, {}   # the shape's setup, on its first row
            r.rounds_s = time.perf_counter() - t0
            for name, ts in samples.items():
                q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
                r.median_ms[name] = statistics.median(ts) * 1e3
                r.q1_ms[name], r.q3_ms[name] = q[0] * 1e3, q[2] * 1e3
            results.append(r)
        del impls, call
    return results


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
    lines.append("peer time / our time, geometric mean over the shapes (above 1: darknet_bn is faster; "
                 "- : not timed):")
    all_passes = list(dict.fromkeys(r.pass_ for r in results))
    for p in peers:
        timed = [r for r in results if p in r.median_ms]
        if not timed:
            lines.append(f"  {p:>9}: not timed")
            continue
        per = ", ".join(f"{ps} {geomean([r.ratio(p) for r in timed if r.pass_ == ps]):.2f}"
                        for ps in all_passes if any(r.pass_ == ps for r in timed))
        worst = min(timed, key=lambda r: r.ratio(p))
        lines.append(f"  {p:>9}: {per}; lowest {worst.ratio(p):.2f} ({'x'.join(map(str, worst.shape))} {worst.pass_})")
    for p, base in OURS_BASELINE.items():
        extra = [(r.ours_ms / r.median_ms[base], r.shape) for r in results if r.pass_ == p and base in r.median_ms]
        if extra:
            worst = max(extra)
            lines.append(f"ours, {p} / {base.split(':')[1]}, timed in the same rounds: geometric mean "
                         f"{geomean([f for f, _ in extra]):.2f}, highest {worst[0]:.2f} ({'x'.join(map(str, worst[1]))})")
    lines.extend(check_notes(results, peers))
    return "\n".join(lines)


def check_notes(results: list[Result], peers: Sequence[str]) -> list[str]:
    """Lines saying how each peer's output compared with ours, and every row a peer was not timed in
    for a reason other than not offering the pass."""
    lines = []
    checked = [f"{p} {max(r.check_error[p] for r in results if p in r.check_error):.1e}"
               for p in peers if any(p in r.check_error for r in results)]
    if checked:
        lines.append(f"checked against ours before timing (max |error| over the rows, outputs of order 1): "
                     f"{', '.join(checked)}")
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


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_info() -> dict:
    """The CPU this runs on: model name, the cores this process may use and the machine's logical
    CPUs, and cpu0's caches (``{"L1d": "48K", "L2": ..., "L3": ...}``, from
    /sys/devices/system/cpu/cpu0/cache, else lscpu; missing where neither says)."""
    import glob
    import os
    import subprocess

    model = None
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
            model = line.split(":", 1)[1].strip()
            break
    model = model or platform.processor() or None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    caches = {}
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        level, kind, size = (_read(f"{d}/{k}") for k in ("level", "type", "size"))
        if level and kind and size and kind != "Instruction":
            caches[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    if not caches:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("L1d cache", "L2 cache", "L3 cache"):
                caches[key.split()[0]] = val.strip()
            elif key == "Model name" and not model:
                model = val.strip()
    return {"cpu": model, "cores": usable, "logical_cpus": os.cpu_count(), "caches": caches}


def describe_cpu(info: dict) -> str:
    caches = ", ".join(f"{k} {v}" for k, v in info.get("caches", {}).items())
    return f"{info.get('cpu') or 'unknown CPU'}, {info.get('cores')} core(s)" + (f", {caches}" if caches else "")


def peer_versions(peers: Sequence[str]) -> dict:
    versions = {}
    for p in peers:
        mods = PEER_MODULES.get(p, ("numpy",) if p == "numpy" else ())
        v = []
        for m in mods:
            try:
                v.append(f"{m} {__import__(m).__version__}")
            except Exception:   # noqa: BLE001 - a version is informative only
                pass
        versions[p] = ", ".join(v) if v else "darknet_bn"
    return versions


def machine_info(threads: int, peers: Sequence[str] = ()) -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "threads": threads, "isa": kernels.get_isa(), "openmp": kernels.has_openmp(), **cpu_info(),
            "peers": peer_versions(peers)}


def write_json(path: str, results: list[Result], info: dict) -> None:
    with open(path, "w") as f:
        json.dump({"machine": info, "results": [r.as_dict() for r in results]}, f, indent=1)


def plot(path: str, results: list[Result], peers: Sequence[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in results))
    passes = list(dict.fromkeys(r.pass_ for r in results))
    fig, axes = plt.subplots(1, len(passes) + 1, figsize=(5 * (len(passes) + 1), 0.6 * len(shapes) + 2),
                             sharey=True)
    labels = ["x".join(map(str, s)) for s in shapes]
    ys = np.arange(len(shapes))
    width = 0.8 / max(1, len(peers))
    for ax, p in zip(axes, passes):
        rs = {r.shape: r for r in results if r.pass_ == p}
        for i, peer in enumerate(peers):
            vals = [rs[s].ratio(peer) for s in shapes]   # NaN (not timed): no bar
            ax.barh(ys + i * width, [v if v == v else 0 for v in vals], height=width, label=peer,
                    color=f"C{i % 10}")
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
