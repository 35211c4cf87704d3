"""The implementations the bench times: darknet_bn (``ours``) and its peers.

Peers (``PEERS``; by default every installed one of ``DEFAULT_PEERS``), each called the fastest way
its documentation offers, with the same thread count, on the same input and parameters:

- ``plain``: Darknet's layer code structure -- forward_batchnorm_layer / backward_batchnorm_layer as
  Darknet writes them, a sequence of the plain kernels with Darknet's copies -- on darknet_bn's plain
  reference kernels (csrc/reference.c: one channel at a time, double sums, one thread); in the +ACT
  rows with activate_array / gradient_array as passes of their own;
- ``darknet``: Darknet's training structure on darknet_bn's fast kernels, for the +ACT rows only
  (``train+ACT``, ``backward+ACT``): our training BN, then ``activate_array`` over the output as a
  separate pass; our BN backward after ``gradient_array`` over the delta -- what fusing the
  activation into BN's passes saves;
- ``numpy``: a straightforward numpy implementation of the same math;
- ``torch``: ``torch.nn.functional.batch_norm``, allocating its outputs as it does for its users
  (the backward: autograd's, of a training forward); in the +ACT rows followed by the activation
  (``F.leaky_relu``, ``F.silu``, ``F.mish``, ...; the backward autograd's through both);
- ``torch-out``: ``torch.ops.aten.native_batch_norm.out`` / ``native_batch_norm_backward.out`` into
  preallocated outputs;
- ``ort``: ONNX Runtime, a one-node BatchNormalization model, io_binding to a preallocated output
  (inference passes only);
- ``openvino``: OpenVINO with f32 inference precision forced and shared-memory tensors (inference
  passes only);
- ``jax``: ``jax.jit`` functions compiled before the timing, outputs into donated buffers; in the +ACT
  rows with the activation of ``jax.nn`` in the same function (XLA fuses them), the backward their vjp.

Before a peer is timed on a shape, each pass it offers runs once and is compared with ours; a peer
whose output differs beyond float32 rounding (``CHECK_RTOL``), or that fails, is reported and not
timed in that row.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any

import numpy as np

from .. import kernels
from .._capi import c_flavor, ffi, lib
from ..layer import ACTIVATIONS, Layer
from .cases import PASSES, PEER_PASS, RENORM_PASSES, Impl, Setup, peer_passes, split_act_pass

PEERS = ("plain", "numpy", "torch", "torch-out", "ort", "openvino", "jax", "darknet")
#: compared by default, each when installed: the libraries a user would pick instead (plain and numpy,
#: darknet_bn's own references, only when asked for)
DEFAULT_PEERS = ("torch", "torch-out", "ort", "openvino", "jax")


# ------------------------------------------------------------------------------------------------
# The implementations. Each maker gets the shape's Setup and returns an Impl: one callable per pass it
# offers (one call as its users make it), a callable per pass that runs it once and returns its output
# as numpy (for the check against ours), and the untimed preparation a pass needs.


def _numpy_of(f: Callable[[], Any]) -> Callable[[], np.ndarray]:
    """A call of f whose result (a torch tensor) is returned as numpy (no copy)."""
    return lambda: f().numpy()


def _first(f: Callable[[], Any]) -> Any:
    """f()[0] (autograd.grad's gradient of the input)."""
    return f()[0]


def _run_then(f: Callable[[], None], state: dict, key: str) -> Callable[[], np.ndarray]:
    """A call of f, then ``state[key]`` as numpy."""

    def run() -> np.ndarray:
        f()
        return np.asarray(state[key])

    return run


#: the activations whose derivative gradient_array takes from the activation's INPUT (the others from
#: its output; csrc/darknet_bn.h): a Darknet-style layer keeps a copy of the pre-activation for them
#: (Darknet's l.activation_input)
GRADIENT_FROM_INPUT = frozenset(("gelu", "swish", "mish", "hard_mish", "hardswish", "gelu_erf"))
LEAKY_ALPHA = 0.1  # Darknet's leaky slope (Layer.forward's "leaky")
#: the activations PyTorch has a function for (Darknet's gelu: its tanh approximation; selu: torch's
#: exact constants, Darknet's rounded ones 4e-5 apart -- within CHECK_RTOL; hard_mish: none)
TORCH_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "hard_mish")


def _torch_activation(act: str) -> tuple[Callable, Callable]:
    """PyTorch's functions for ``act``: (out of place, in place -- the out-of-place one where torch has
    no in-place form)."""
    import torch
    import torch.nn.functional as F

    return {
        "linear": (lambda t: t, lambda t: t),
        "leaky": (lambda t: F.leaky_relu(t, LEAKY_ALPHA), lambda t: F.leaky_relu(t, LEAKY_ALPHA, inplace=True)),
        "relu": (F.relu, lambda t: F.relu(t, inplace=True)),
        "relu6": (F.relu6, lambda t: F.relu6(t, inplace=True)),
        "logistic": (torch.sigmoid, torch.sigmoid_),
        "tanh": (torch.tanh, torch.tanh_),
        "elu": (F.elu, lambda t: F.elu(t, inplace=True)),
        "selu": (F.selu, lambda t: F.selu(t, inplace=True)),
        "gelu": (lambda t: F.gelu(t, approximate="tanh"),) * 2,
        "swish": (F.silu, lambda t: F.silu(t, inplace=True)),
        "mish": (F.mish, lambda t: F.mish(t, inplace=True)),
        "hardswish": (F.hardswish, lambda t: F.hardswish(t, inplace=True)),
        "gelu_erf": (F.gelu, F.gelu),
    }[act]


#: the activations jax.nn has (gelu: its tanh approximation, gelu_erf: approximate=False; selu: its exact
#: constants, as torch's; hard_mish: none)
JAX_ACTIVATIONS = TORCH_ACTIVATIONS


def _jax_activation(act: str) -> Callable:
    """jax.nn's function for ``act`` (jax.numpy's tanh)."""
    import jax
    import jax.numpy as jnp

    nn = jax.nn
    table: dict[str, Callable] = {
        "linear": lambda y: y,
        "leaky": lambda y: nn.leaky_relu(y, LEAKY_ALPHA),
        "relu": nn.relu,
        "relu6": nn.relu6,
        "logistic": nn.sigmoid,
        "tanh": jnp.tanh,
        "elu": nn.elu,
        "selu": nn.selu,
        "gelu": partial(nn.gelu, approximate=True),
        "swish": nn.silu,
        "mish": nn.mish,
        "hardswish": nn.hard_swish,
        "gelu_erf": partial(nn.gelu, approximate=False),
    }
    return table[act]


def _acts(passes: Collection[str]) -> list[str]:
    """The activations of the +ACT passes among ``passes``, in order."""
    return list(dict.fromkeys(sp[1] for sp in map(split_act_pass, passes) if sp))


def _timed_layer(s: Setup, **kw: Any) -> Layer:
    """A Layer of the shape in the bench's flavor for the timed calls, after one training forward,
    ``delta`` = dy.

    The backward runs in place, call after call, on its own output. So that the values neither shrink
    into subnormals (slow) nor grow, each channel's scale makes the training backward's map
    norm-preserving (scale * r / sigma = 1): it is then a projection (it removes the delta's mean and
    its x_hat component), so from its first (untimed) call on it maps delta to itself. Values do not
    change the work otherwise. (Through an activation's derivative the map is no longer a projection:
    the +ACT rows restore delta before each sample, ``Impl.reset``.)"""
    b, c, h, w = s.shape
    ly = Layer(b, w, h, c, s.flavor, **kw)
    fl = s.flavor
    ly.rolling_variance[:] = 1.0
    ly.forward(s.x, True)
    v = ly.variance.astype(np.float64)
    sigma = np.sqrt(v + fl.eps) if fl.eps_in_sqrt else np.sqrt(v) + fl.eps
    ly.scales[:] = sigma / ly.r
    ly.delta[...] = s.dy
    return ly


def _restore(buf: np.ndarray, value: np.ndarray) -> Callable[[], None]:
    """A call that copies ``value`` into ``buf`` (same size)."""
    src = value.reshape(buf.shape)
    return lambda: np.copyto(buf, src)


def _ours(s: Setup) -> Impl:
    x = s.x
    layer = _timed_layer(s)
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
    reset = {}
    if any(p in RENORM_PASSES for p in s.passes):
        rn = _timed_layer(s, renorm=True, rmax=3.0, dmax=5.0)
        calls["train+renorm"] = lambda: rn.forward(x, True)
        calls["backward+renorm"] = lambda: rn.backward(rn.delta)
        prepare["backward+renorm"] = lambda: rn.forward(x, True)
    # +ACT: a layer of its own (its rows also time ours:train / ours:backward on `layer`, each in its
    # own state); the backward after a training forward with the activation, from the delta of the
    # activation's output (dy), restored before each sample
    for act in _acts(s.passes):
        la = _timed_layer(s)
        calls[f"train+{act}"] = partial(la.forward, x, True, act)
        calls[f"backward+{act}"] = partial(la.backward, la.delta)
        prepare[f"backward+{act}"] = partial(la.forward, x, True, act)
        reset[f"backward+{act}"] = _restore(la.delta, s.dy)
    return Impl(calls, prepare=prepare, reset=reset)


def reference_outputs(s: Setup, passes: Collection[str]) -> dict:
    """Ours, once per pass, on the peers' math (a torch-flavored Layer) with the shared parameters:
    the outputs each peer's output is checked against (pass -> (output, its max |value|)). The
    backward follows a training forward; backward+ACT a train+ACT forward."""
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
    for act in _acts(passes):  # train+ACT, and backward+ACT after it (dy: the activation output's delta)
        inference_stats()
        y = ly.forward(s.x, True, act)
        if f"train+{act}" in passes:
            out[f"train+{act}"] = y.copy()
        if f"backward+{act}" in passes:
            ly.delta[...] = s.dy
            out[f"backward+{act}"] = ly.backward(ly.delta).copy()
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
        lib.forward_batchnorm_layer_ref(
            px, p["out"], p["x"], p["x_norm"], ps, pb, p["mean"], p["var"], p["rm"], p["rv"], b, c, sp, cf, train
        )

    def infer_leaky():  # Darknet: the BN, then activate_array over the output
        forward(0)
        lib.dbn_activate_ref(p["out"], b * c * sp, lib.DBN_ACT_LEAKY)

    def backward(pd=pd):  # Darknet's backward reads x, x_norm and the batch statistics of the last training forward
        lib.backward_batchnorm_layer_ref(
            p["x"],
            p["x_norm"],
            pd,
            p["net_delta"],
            ps,
            p["mean"],
            p["var"],
            p["su"],
            p["bu"],
            p["md"],
            p["vd"],
            b,
            c,
            sp,
            cf,
        )

    forward(1)
    calls = {"train": lambda: forward(1), "infer": lambda: forward(0), "infer+leaky": infer_leaky, "backward": backward}
    prepare = {"backward": lambda: forward(1)}
    reset = {}
    # +ACT: Darknet's activate_array over l.output after the BN (a copy of the pre-activation kept first
    # for the kinds differentiated from the input), and gradient_array over l.delta before its backward;
    # their plain kernels (one value at a time), a delta buffer of its own, restored before each sample
    n = b * c * sp
    for act in _acts(s.passes):
        pa = ffi.new("dbn_act *", {"kind": ACTIVATIONS[act], "alpha": LEAKY_ALPHA})
        keep = np.zeros_like(x) if act in GRADIENT_FROM_INPUT else None
        pk = ffi.from_buffer("float[]", keep) if keep is not None else p["out"]
        delta_a = s.dy.copy()
        pda = ffi.from_buffer("float[]", delta_a)

        def forward_act(pa=pa, keep=keep):
            forward(1)
            if keep is not None:
                np.copyto(keep, bufs["out"])
            lib.activate_array_ref(p["out"], n, pa)
            return bufs["out"]

        def backward_act(pa=pa, pk=pk, pda=pda):
            lib.gradient_array_ref(pk, n, pa, pda)
            backward(pda)
            return bufs["net_delta"]

        calls[f"train+{act}"], calls[f"backward+{act}"] = forward_act, backward_act
        prepare[f"backward+{act}"] = forward_act
        reset[f"backward+{act}"] = _restore(delta_a, s.dy)
    return Impl(calls, prepare=prepare, reset=reset)


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

    def backward():  # from the training forward's statistics m, inv
        xhat = (x - m) * inv
        dg = dy * g
        return inv * (dg - dg.mean(axis=axes, keepdims=True) - xhat * (dg * xhat).mean(axis=axes, keepdims=True))

    calls = {"train": train, "infer": infer, "infer+leaky": infer_leaky, "backward": backward}
    return Impl(calls, outputs=dict(calls), version=np.__version__)


def _torch(s: Setup) -> Impl:
    """``torch.nn.functional.batch_norm`` as its users call it: allocating its output on every call
    (inference and training forward under no_grad; the backward is autograd's, of a training forward
    with grad); the fused leaky pass is BN then ``F.leaky_relu(..., inplace=True)``. The +ACT rows: the
    training BN then the activation's function (:data:`TORCH_ACTIVATIONS`; in place on BN's output
    where torch has an in-place form), and autograd's backward through both, of such a training
    forward with grad (the activation out of place, as autograd needs for most kinds)."""
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(s.x)
    xg = xt.clone().requires_grad_(True)
    wt = torch.from_numpy(s.gamma.copy()).requires_grad_(True)
    bt = torch.from_numpy(s.beta.copy()).requires_grad_(True)
    rm, rv = torch.from_numpy(s.rm.copy()), torch.from_numpy(s.rv.copy())  # inference
    trm, trv = rm.clone(), rv.clone()  # updated by training
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
            return F.leaky_relu(
                F.batch_norm(xt, rm, rv, wt, bt, training=False, momentum=mom, eps=eps), 0.1, inplace=True
            )

    y = F.batch_norm(xg, trm.clone(), trv.clone(), wt, bt, training=True, momentum=mom, eps=eps)

    def grad_of(y):
        return lambda: torch.autograd.grad(y, (xg, wt, bt), go, retain_graph=True)

    calls = {"train": train, "infer": infer, "infer+leaky": infer_leaky, "backward": grad_of(y)}
    grads = {"backward"}
    # +ACT: BN then the activation, under no_grad in place on BN's output where torch has an in-place
    # form; the backward autograd's through both, of a training forward with grad (out of place)
    for act in _acts(s.passes):
        if act not in TORCH_ACTIVATIONS:
            continue
        f, f_ = _torch_activation(act)

        def train_act(f_=f_):
            with torch.no_grad():
                return f_(F.batch_norm(xt, trm, trv, wt, bt, training=True, momentum=mom, eps=eps))

        ya = f(F.batch_norm(xg, trm.clone(), trv.clone(), wt, bt, training=True, momentum=mom, eps=eps))
        calls[f"train+{act}"], calls[f"backward+{act}"] = train_act, grad_of(ya)
        grads.add(f"backward+{act}")
    outputs = {p: _numpy_of(f) for p, f in calls.items() if p not in grads}
    for p in grads:
        outputs[p] = _numpy_of(partial(_first, calls[p]))
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

    def infer():  # in eval mode save_mean/save_invstd are not written (empty): separate buffers
        aten.native_batch_norm.out(xt, g, bt, rm, rv, False, mom, eps, out=y, save_mean=sm0, save_invstd=si0)

    def infer_leaky():
        infer()
        aten.leaky_relu_(y, 0.1)

    def backward():
        aten.native_batch_norm_backward.out(
            go, xt, g, trm, trv, sm, si, True, eps, [True, True, True], out0=dx, out1=dg, out2=db
        )

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
        nodes = [
            helper.make_node("BatchNormalization", ["x", "g", "b", "rm", "rv"], ["bn" if leaky else "y"], epsilon=s.eps)
        ]
        if leaky:
            nodes.append(helper.make_node("LeakyRelu", ["bn"], ["y"], alpha=0.1))
        graph = helper.make_graph(
            nodes,
            "bn",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        io = sess.io_binding()
        io.bind_ortvalue_input("x", xin)
        io.bind_ortvalue_output("y", yout)
        return lambda: sess.run_with_iobinding(io)

    calls = {p: session(p == "infer+leaky") for p in ("infer", "infer+leaky") if p in peer_passes(s.passes)}
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

    calls = {p: request(p == "infer+leaky") for p in ("infer", "infer+leaky") if p in peer_passes(s.passes)}
    outputs = {p: (lambda f=f: (f(), y)[1]) for p, f in calls.items()}
    return Impl(calls, outputs, version=ov.__version__)


def _jax(s: Setup) -> Impl:
    """JAX on the CPU: each pass one ``jax.jit`` function, compiled before the timing
    (``.lower(...).compile()``), its output written into a donated buffer (``donate_argnums`` with
    ``keep_unused=True``: without it XLA drops the unused argument and donation is ignored), the result
    awaited (``block_until_ready``). The training forward returns the new running statistics (donated
    too); the backward is ``jax.vjp``'s function of a training forward (its saved residuals), jitted.
    Threads: XLA's own pool (one thread per core; it has no per-call setting). The +ACT rows: the
    activation of ``jax.nn`` (:data:`JAX_ACTIVATIONS`) applied to the training BN in the same jitted
    function, the backward the vjp of both."""
    import jax
    import jax.numpy as jnp

    b, c, h, w = s.shape
    eps, mom = s.eps, s.momentum
    n = b * h * w
    col = lambda v: v[:, None, None]  # noqa: E731  (c,) -> (c, 1, 1), broadcast over (b, c, h, w)
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
    calls: dict[str, Callable[[], None]] = {}
    outputs: dict[str, Callable[[], np.ndarray]] = {}
    want = peer_passes(s.passes)
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
    dy = jnp.asarray(s.dy)
    state["dx"] = jnp.zeros(s.shape, jnp.float32)

    def vjp_call(forward: Callable) -> Callable[[], None]:
        """The backward of ``forward`` (x, g, beta -> y): the vjp function of a training forward (its
        residuals), made by a jitted forward, applied by a compiled function into a donated buffer."""
        _, vjp_fn = jax.jit(lambda x, g, beta: jax.vjp(forward, x, g, beta))(x, g, beta)
        fb = compiled(lambda f, dy, buf: f(dy), (vjp_fn, dy, state["dx"]), (2,))

        def call_backward():
            state["dx"] = fb(vjp_fn, dy, state["dx"])[0]
            state["dx"].block_until_ready()

        return call_backward

    if "backward" in want:
        calls["backward"] = vjp_call(lambda *a: bn_train(*a)[0])
    # +ACT: the activation of jax.nn after the training BN, in the same jitted function (XLA fuses
    # them); the backward the vjp of both
    for act in _acts(s.passes):
        if act not in JAX_ACTIVATIONS:
            continue
        fa = _jax_activation(act)

        def train_act(x, g, beta, rm, rv, buf, fa=fa):
            y, rm, rv = train(x, g, beta, rm, rv, buf)
            return fa(y), rm, rv

        fta = compiled(train_act, (x, g, beta, state["rm"], state["rv"], state["y"]), (3, 4, 5))

        def call_train_act(fta=fta):
            state["y"], state["rm"], state["rv"] = fta(x, g, beta, state["rm"], state["rv"], state["y"])
            state["y"].block_until_ready()

        calls[f"train+{act}"] = call_train_act
        calls[f"backward+{act}"] = vjp_call(lambda *a, fa=fa: fa(bn_train(*a)[0]))
    for p, call in calls.items():
        outputs[p] = _run_then(call, state, "dx" if p.startswith("backward") else "y")
    return Impl(calls, outputs, version=jax.__version__)


def _separate_passes(ly: Layer, x: np.ndarray, act: str) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray]]:
    """Darknet's training forward and backward for a BN layer followed by ``act``, each activation pass
    on its own: (forward, backward) on ``ly`` (plain BN) with the kernels activate_array and
    gradient_array. The backward is in place on ``ly.delta`` (the delta of the activation's output)."""
    out = ly.output
    n = out.size
    keep = np.empty_like(out) if act in GRADIENT_FROM_INPUT else None  # Darknet's l.activation_input
    grad_x = out if keep is None else keep

    def forward() -> np.ndarray:
        ly.forward(x, True)
        if keep is not None:
            np.copyto(keep, out)
        kernels.activate_array(out, n, act)
        return out

    def backward() -> np.ndarray:
        kernels.gradient_array(grad_x, n, act, ly.delta)
        return ly.backward(ly.delta)

    return forward, backward


def _darknet(s: Setup) -> Impl:
    """Darknet's training code structure on darknet_bn's fast kernels, for the +ACT rows only (what
    fusing the activation into BN's passes saves): forward_batchnorm_layer, then activate_array over
    ``l.output`` as a pass of its own; the backward gradient_array over ``l.delta``, then
    backward_batchnorm_layer -- our training forward and backward (``Layer``, in place) with
    ``kernels.activate_array`` / ``kernels.gradient_array`` between, in the bench's flavor. For the
    activations differentiated from the input (:data:`GRADIENT_FROM_INPUT`) the forward first copies the
    pre-activation into a buffer of its own (Darknet's ``l.activation_input``; Darknet writes it in its
    activation pass, so the copy -- numpy's, one thread -- reads the tensor once more than Darknet does;
    leaky and the other kinds differentiated from the output need no copy). Checked against ours
    on the peers' math: the same passes on a torch-flavored layer with the shared parameters."""
    b, c, h, w = s.shape
    x = s.x
    calls: dict[str, Callable[[], Any]] = {}
    outputs: dict[str, Callable[[], np.ndarray]] = {}
    prepare: dict[str, Callable[[], Any]] = {}
    reset: dict[str, Callable[[], None]] = {}

    def checked(act: str, backward: bool) -> np.ndarray:
        ly = Layer(b, w, h, c, "torch")
        ly.scales[:], ly.biases[:] = s.gamma, s.beta
        ly.rolling_mean[:], ly.rolling_variance[:] = s.rm, s.rv
        fwd, bwd = _separate_passes(ly, x, act)
        y = fwd()
        if not backward:
            return y
        ly.delta[...] = s.dy
        return bwd()

    for act in _acts(s.passes):
        ly = _timed_layer(s)
        fwd, bwd = _separate_passes(ly, x, act)
        calls[f"train+{act}"], calls[f"backward+{act}"] = fwd, bwd
        prepare[f"backward+{act}"] = fwd
        reset[f"backward+{act}"] = _restore(ly.delta, s.dy)
        outputs[f"train+{act}"] = partial(checked, act, False)
        outputs[f"backward+{act}"] = partial(checked, act, True)
    return Impl(calls, outputs, prepare, reset)


MAKERS = {
    "ours": _ours,
    "plain": _plain,
    "numpy": _numpy,
    "torch": _torch,
    "torch-out": _torch_out,
    "ort": _ort,
    "openvino": _openvino,
    "jax": _jax,
    "darknet": _darknet,
}
#: the module each peer needs (the peer is compared only when it imports)
PEER_MODULES = {
    "torch": ("torch",),
    "torch-out": ("torch",),
    "ort": ("onnxruntime", "onnx"),
    "openvino": ("openvino",),
    "jax": ("jax",),
}
PEER_INSTALL = {
    "torch": "pip install torch",
    "torch-out": "pip install torch",
    "ort": "pip install onnxruntime onnx",
    "openvino": "pip install openvino",
    "jax": "pip install jax",
}
#: the passes of PASSES each peer offers (the others are not timed for it; see each maker's docstring)
PEER_OFFERS = {"ort": ("infer", "infer+leaky"), "openvino": ("infer", "infer+leaky"), "darknet": ()}
#: the peers of the +ACT rows (train+ACT, backward+ACT): torch and jax for the activations they have
ACT_PEERS = ("plain", "torch", "jax", "darknet")
CHECK_RTOL = 1e-4  # a peer's output must be within CHECK_RTOL * max(1, max|ours|) of ours, everywhere


def offers(peer: str, pass_: str) -> bool:
    """Whether ``peer`` offers ``pass_`` (a +renorm pass: its plain pass; a +ACT pass: ACT_PEERS)."""
    split = split_act_pass(pass_)
    if split:
        return peer in ACT_PEERS and split[1] in {"torch": TORCH_ACTIVATIONS, "jax": JAX_ACTIVATIONS}.get(
            peer, ACTIVATIONS
        )
    return PEER_PASS.get(pass_, pass_) in PEER_OFFERS.get(peer, PASSES)


def available(peer: str) -> bool:
    """Whether the peer's packages import."""
    return all(importlib.util.find_spec(m) is not None for m in PEER_MODULES.get(peer, ()))


def check_peer(impl: Impl, ref: dict, passes: Sequence[str], scratch: np.ndarray) -> tuple[dict, dict]:
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
        except Exception as e:  # a peer that fails is reported and not timed
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
