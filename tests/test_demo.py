"""The demo (darknet_bn.examples.digits, its command darknet_bn.cli.demo): its numpy gradients against
finite differences, Darknet's SGD, the evaluation Layers, a short real run on the digits (both runs
learn; the BN layers' rolling statistics are what the training activations make them), and the command
(output, JSON, plot, missing packages).

Expected values come from independent float64 numpy computations written here from the math (the BN
formulas from the README's flavor table), never from the code under test."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types

import numpy as np
import pytest
import reference as ref
from helpers import assert_close

from darknet_bn.cli import demo as demo_cli
from darknet_bn.examples import digits as demo

SKLEARN = "scikit-learn is not installed (pip install 'darknet_bn[demo]')"

# Per flavor, from the README's table: rolling momentum (weight of the batch statistic), the initial
# rolling variance, and the training-mode normalization.
MOMENTUM = {"pjreddie": 0.01, "alexeyab": 0.1, "torch": 0.1}
INIT_ROLLING_VARIANCE = {"pjreddie": 0.0, "alexeyab": 0.0, "torch": 1.0}


def bn_normalize_train(z: np.ndarray, flavor: str) -> np.ndarray:
    """float64 training-mode normalization of z (rows, channels) by its batch statistics."""
    f = ref.FLAVORS[flavor]
    v = z.var(0, ddof=1 if f["unbiased"] else 0)
    return (z - z.mean(0)) / ref.denominator(v, f["eps"], f["eps_in_sqrt"])


def bn_normalize_infer(z: np.ndarray, rm: np.ndarray, rv: np.ndarray, flavor: str) -> np.ndarray:
    return (z - rm) / ref.ref_denominator(rv, flavor)


def ref_forward(x, weights, biases, bn=None, flavor="pjreddie", mode="train", rolling=None):
    """float64 forward of the demo's MLP. bn: per hidden layer (scales, biases) or None (no BN).
    Returns (z per hidden layer, logits)."""
    a = np.asarray(x, np.float64)
    zs = []
    for i in range(2):
        w = np.asarray(weights[i], np.float64)
        if bn is None:
            z = a @ w.T + biases[i]
            y = z
        else:
            z = a @ w.T
            n = (
                bn_normalize_train(z, flavor)
                if mode == "train"
                else bn_normalize_infer(z, *[np.asarray(r, np.float64) for r in rolling[i]], flavor)
            )
            y = n * np.asarray(bn[i][0], np.float64) + np.asarray(bn[i][1], np.float64)
        zs.append(z)
        a = np.maximum(y, 0)
    return zs, a @ np.asarray(weights[2], np.float64).T + np.asarray(biases[2], np.float64)


def ref_loss(logits, labels):
    """float64 mean cross-entropy, from log-sum-exp written out."""
    logits = np.asarray(logits, np.float64)
    mx = logits.max(1)
    lse = mx + np.log(np.exp(logits - mx[:, None]).sum(1))
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def synthetic(n_train=96, n_val=40, seed=0):
    """Small separable data shaped like the digits' (64 features in [0, 1], 10 classes)."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1, size=(10, 64))

    def draw(n):
        y = rng.integers(0, 10, n)
        return np.clip(centers[y] + 0.15 * rng.standard_normal((n, 64)), 0, 1).astype(np.float32), y

    return (*draw(n_train), *draw(n_val))


# ---------------------------------------------------------------------------------------------------
# Gradients: finite differences


def central_diff(f, p, h):
    """d f / d p, element by element, by central differences (p is modified and restored)."""
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        old = p[i]
        p[i] = old + h
        fp = f()
        p[i] = old - h
        fm = f()
        p[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def test_helpers_backward_match_finite_differences():
    """linear, ReLU and softmax cross-entropy deltas (negative gradients) in float64, every element."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    g = rng.standard_normal((5, 4))  # L = sum(g * linear(x)): the output's delta is -g

    def loss():
        return float(np.sum(g * demo.linear_forward(x, w, b)))

    dx, dw, db = demo.linear_backward(-g, x, w)
    assert dx.dtype == np.float64
    assert_close(-dx, central_diff(loss, x, 1e-6), 1e-8, name="linear dx")
    assert_close(-dw, central_diff(loss, w, 1e-6), 1e-8, name="linear dw")
    assert_close(-db, central_diff(loss, b, 1e-6), 1e-8, name="linear db")
    assert demo.linear_backward(-g, x, w, need_dx=False)[0] is None

    z = rng.standard_normal((6, 5))
    z[np.abs(z) < 1e-3] = 0.5  # no value within h of the kink
    g = rng.standard_normal(z.shape)
    out = demo.relu(z)
    assert_close(out, np.where(z > 0, z, 0.0), 0, name="relu")
    assert_close(
        -demo.relu_backward(-g, out),
        central_diff(lambda: float(np.sum(g * demo.relu(z))), z, 1e-6),
        1e-8,
        name="relu backward",
    )

    logits = 3 * rng.standard_normal((6, 10))
    labels = rng.integers(0, 10, 6)

    def loss_sum():
        return len(labels) * demo.softmax_cross_entropy(logits, labels)[0]

    loss, probs = demo.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(ref_loss(logits, labels), rel=1e-12)
    assert_close(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1e-12, name="probs")
    assert_close(demo.softmax(logits), probs, 1e-12, name="softmax")
    delta = demo.softmax_cross_entropy_delta(probs.copy(), labels)
    assert_close(-delta, central_diff(loss_sum, logits, 1e-6), 1e-7, name="softmax-CE delta")
    # large logits: no overflow
    big_loss, big_p = demo.softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    assert np.isfinite(big_loss) and big_loss == pytest.approx(500.0) and np.all(np.isfinite(big_p))


def test_mlp_backward_without_bn_matches_finite_differences():
    """The demo's whole backward (MLP.backward, as training runs it) in float64 against central
    differences of the batch's summed loss, for every weight and bias."""
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (6, 64)), rng.integers(0, 10, 6)
    model = demo.MLP(demo.init_weights(3), use_bn=False, batch=6, dtype=np.float64)
    for b in model.biases:
        b[:] = 0.1 * rng.standard_normal(b.shape)
    _, cache = model.forward(x, y, train=True)
    model.backward(cache, y)

    def loss_sum():
        return 6 * model.forward(x, y)[0]

    for i in range(3):
        assert_close(
            -model.weight_updates[i], central_diff(loss_sum, model.weights[i], 1e-6), 1e-7, name=f"weights[{i}]"
        )
        assert_close(-model.bias_updates[i], central_diff(loss_sum, model.biases[i], 1e-6), 1e-7, name=f"biases[{i}]")


def test_mlp_backward_with_bn_matches_finite_differences():
    """The BN network (flavor torch, whose backward is the exact gradient of its training forward):
    the demo's wiring of the layers (delta sign, shapes) gives the gradient of the training-mode loss.
    float32, so directional derivatives along random directions, with no ReLU crossing its kink."""
    rng = np.random.default_rng(2)
    B = 8
    x, y = rng.uniform(0, 1, (B, 64)).astype(np.float32), rng.integers(0, 10, B)
    model = demo.MLP(demo.init_weights(5), use_bn=True, batch=B, flavor="torch")
    for layer in model.bn:
        layer.scales[:] = rng.uniform(0.5, 1.5, 32)
        layer.biases[:] = 0.2 * rng.standard_normal(32)
    model.biases[2][:] = 0.1 * rng.standard_normal(10)
    _, cache = model.forward(x, y, train=True)
    model.backward(cache, y)
    params = model.weights + [model.biases[2]] + [p for layer in model.bn for p in (layer.scales, layer.biases)]
    grads = (
        model.weight_updates
        + [model.bias_updates[2]]
        + [p for layer in model.bn for p in (layer.scale_updates, layer.bias_updates)]
    )
    grads = [-g.astype(np.float64) for g in grads]

    def loss_and_masks():
        loss, c = model.forward(x, y, train=True)
        return B * loss, [a > 0 for a in c.a]

    h, checked = 2e-3, 0
    for trial in range(20):
        dirs = [rng.standard_normal(p.shape) for p in params]
        norm = math.sqrt(sum(float(np.sum(d * d)) for d in dirs))
        dirs = [(d / norm).astype(np.float32) for d in dirs]
        base = [p.copy() for p in params]
        results = []
        for s in (h, -h):
            for p, b0, d in zip(params, base, dirs):
                p[:] = b0 + np.float32(s) * d
            results.append(loss_and_masks())
        for p, b0 in zip(params, base):
            p[:] = b0
        _, masks0 = loss_and_masks()
        if any((m1 != m0).any() or (m2 != m0).any() for m1, m2, m0 in zip(results[0][1], results[1][1], masks0)):
            continue  # a ReLU crossed its kink: the difference is not a derivative
        fd = (results[0][0] - results[1][0]) / (2 * h)
        analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs))
        assert fd == pytest.approx(analytic, rel=1e-2, abs=1.5e-3), (trial, fd, analytic)
        checked += 1
    assert checked >= 5, f"only {checked} directions without a kink crossing"


# ---------------------------------------------------------------------------------------------------
# SGD, evaluation


def test_update_is_darknets_sgd():
    """One step: W += lr/B * (U - decay*B*W), then U = momentum * that; biases without decay; BN
    parameters through Layer.update (also without decay)."""
    rng = np.random.default_rng(3)
    lr, mom, decay, B = 0.05, 0.9, 0.001, 16
    model = demo.MLP(demo.init_weights(0), use_bn=True, batch=B)
    w0 = [w.astype(np.float64) for w in model.weights]
    u0 = [rng.standard_normal(w.shape) for w in model.weights]
    bu0 = [rng.standard_normal(b.shape) for b in model.biases]
    for u, v in zip(model.weight_updates + model.bias_updates, u0 + bu0):
        u[:] = v
    su0, sbu0 = rng.standard_normal(32), rng.standard_normal(32)
    model.bn[0].scale_updates[:] = su0
    model.bn[0].bias_updates[:] = sbu0
    model.update(lr, mom, decay)
    for i in range(3):
        u = u0[i] - decay * B * w0[i]
        assert_close(model.weights[i], w0[i] + lr / B * u, 1e-6, name=f"weights[{i}]")
        assert_close(model.weight_updates[i], mom * u, 1e-6, name=f"weight_updates[{i}]")
        assert_close(model.biases[i], lr / B * bu0[i], 1e-6, name=f"biases[{i}]")
        assert_close(model.bias_updates[i], mom * bu0[i], 1e-6, name=f"bias_updates[{i}]")
    assert_close(model.bn[0].scales, 1 + lr / B * su0, 1e-6, name="bn scales")
    assert_close(model.bn[0].biases, lr / B * sbu0, 1e-6, name="bn biases")
    assert_close(model.bn[0].scale_updates, mom * su0, 1e-6, name="bn scale_updates")


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab", "torch"])
def test_evaluation_uses_rolling_statistics_and_leaves_the_model_alone(flavor):
    """evaluate(): inference mode with the training Layers' rolling statistics, on any number of rows;
    evaluate_train_mode(): batch statistics per chunk. Neither changes the training Layers."""
    xt, yt, xv, yv = synthetic()
    cfg = demo.DemoConfig(epochs=2, batch=16, learning_rate=0.05, flavor=flavor)
    model = demo.run_demo(cfg, (xt, yt, xv, yv)).bn.model
    state = {
        (i, k): getattr(l, k).copy()
        for i, l in enumerate(model.bn)
        for k in ("scales", "biases", "rolling_mean", "rolling_variance", "mean", "variance")
    }
    bn = [(l.scales, l.biases) for l in model.bn]
    rolling = [(l.rolling_mean, l.rolling_variance) for l in model.bn]

    loss, acc = demo.evaluate(model, xv, yv)
    _, logits = ref_forward(xv, model.weights, model.biases, bn, flavor, mode="infer", rolling=rolling)
    assert loss == pytest.approx(ref_loss(logits, yv), rel=1e-4)
    assert acc == np.mean(logits.argmax(1) == yv)

    loss4, acc4 = demo.evaluate_train_mode(model, xv, yv, batch=4)  # 40 rows: 10 chunks of 4
    ref_l, ref_c = 0.0, 0
    for idx in np.split(np.arange(40), 10):
        _, lg = ref_forward(xv[idx], model.weights, model.biases, bn, flavor, mode="train")
        ref_l += ref_loss(lg, yv[idx]) * len(idx)
        ref_c += int(np.sum(lg.argmax(1) == yv[idx]))
    assert loss4 == pytest.approx(ref_l / 40, rel=1e-4) and acc4 == ref_c / 40

    demo.evaluate_train_mode(model, xv[:39], yv[:39], batch=4)  # uneven: chunks of 4 and 5
    with pytest.raises(ValueError, match="batch"):
        demo.evaluate_train_mode(model, xv, yv, batch=1)  # no batch variance of 1 row
    for (i, k), v in state.items():
        assert np.array_equal(getattr(model.bn[i], k), v), (i, k)


def test_both_runs_start_from_the_same_weights_and_see_the_same_batches():
    xt, yt, xv, yv = synthetic()
    cfg = demo.DemoConfig(epochs=3, batch=16, seed=7)
    seen = {False: [], True: []}
    first_z = {}

    def on_step(use_bn, model, cache, idx):
        seen[use_bn].append(idx.copy())
        first_z.setdefault(use_bn, cache.z[0].copy())

    demo.run_demo(cfg, (xt, yt, xv, yv), on_step=on_step)
    assert len(seen[False]) == len(seen[True]) == 3 * (96 // 16)
    assert all(np.array_equal(a, b) for a, b in zip(seen[False], seen[True]))
    assert not all(np.array_equal(a, b) for a, b in zip(seen[True][:6], seen[True][6:12])), "reshuffled per epoch"
    for e in range(3):  # each epoch: every image at most once
        assert len(np.unique(np.concatenate(seen[True][6 * e : 6 * e + 6]))) == 96
    w1 = demo.init_weights(7)[0].astype(np.float64)
    for use_bn in (False, True):  # the first step's z1 = x @ W1.T with the initial W1 (biases start at 0)
        assert_close(first_z[use_bn], xt[seen[use_bn][0]].astype(np.float64) @ w1.T, 1e-6, name=str(use_bn))


# ---------------------------------------------------------------------------------------------------
# The real run: a short demo on the digits


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason=SKLEARN)
    return demo.load_digits_split()


def test_digits_split(digits):
    xt, yt, xv, yv = digits
    assert xt.shape == (1438, 64) and xv.shape == (359, 64) and xt.dtype == xv.dtype == np.float32
    assert xt.min() >= 0 and xt.max() <= 1 and xt.max() == 1
    assert np.array_equal(np.bincount(yt) + np.bincount(yv), np.bincount(np.concatenate([yt, yv])))
    assert np.all(np.abs(np.bincount(yv) / (np.bincount(yt) + np.bincount(yv)) - 0.2) < 0.01)  # by class
    again = demo.load_digits_split()
    assert all(np.array_equal(a, b) for a, b in zip(digits, again)), "the split is fixed"


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab", "torch"])
def test_short_demo_learns_and_rolling_statistics_follow_the_training_activations(digits, flavor):
    """A short demo (480 training images, 4 epochs of 30 batches of 16), with every BN training step
    recorded.

    1. Both runs learn: validation accuracy well above chance (10%).
    2. The rolling statistics are *exactly* what they were accumulated from: the exponential moving
       average, with the flavor's momentum m and initial value r0, of the per-batch mean and unbiased
       variance of the activations the layers were given (recomputed here in float64):
       r_T = (1-m)^T r0 + sum_t m (1-m)^(T-t) s_t.
    3. And they estimate the statistics of the training activations: each s_t is one batch's estimate
       of S_t, the statistic over the whole epoch's batches of the activations that the network of
       step t (weights snapshotted each step, forward recomputed in float64 by the flavor's formulas)
       produces. So r_T must match (1-m)^T r0 + sum_t m (1-m)^(T-t) S_t within a few standard errors,
       SE^2 = sum_t (m (1-m)^(T-t))^2 Var_t, Var_t the spread of the statistic between the epoch's
       batches. That accounts for the momentum (the weight of old batches; after T = 120 steps
       pjreddie's rolling statistics still hold 0.99^120 = 30% of their initial 0) and for the changing
       weights (an old batch's activations came from old weights). Two naive references fail the same
       bound, which shows that it discriminates: the statistics of the final network alone, and the
       average with the wrong momentum.
    """
    xt, yt, xv, yv = digits
    xt, yt = xt[:480], yt[:480]
    cfg = demo.DemoConfig(epochs=4, batch=16, learning_rate=0.03, flavor=flavor)
    steps = []

    def on_step(use_bn, model, cache, idx):
        if use_bn:  # after the step's update: the state the next step starts from
            steps.append(
                {
                    "idx": idx.copy(),
                    "z": [z.astype(np.float64) for z in cache.z],
                    "w": [w.astype(np.float64) for w in model.weights[:2]],
                    "bn0": (model.bn[0].scales.astype(np.float64), model.bn[0].biases.astype(np.float64)),
                }
            )

    result = demo.run_demo(cfg, (xt, yt, xv, yv), on_step=on_step)

    # 1. both learn
    for run in (result.no_bn, result.bn):
        assert len(run.epochs) == 4
        assert run.epochs[-1].val_accuracy > 0.6, (run.bn, [e.val_accuracy for e in run.epochs])
        assert run.epochs[-1].train_loss < 0.5 * math.log(10), (run.bn, run.epochs[-1])

    m, r0 = MOMENTUM[flavor], np.array([0.0, INIT_ROLLING_VARIANCE[flavor]])[:, None]
    T = len(steps)
    assert T == 120
    age = T - 1 - np.arange(T)
    w_ema, w_init = m * (1 - m) ** age, (1 - m) ** T
    layers = result.bn.model.bn
    rolling = [np.stack([l.rolling_mean, l.rolling_variance]).astype(np.float64) for l in layers]

    # 2. exactly the moving average of the recorded batches' statistics
    for k in range(2):
        s = np.array([[st["z"][k].mean(0), st["z"][k].var(0, ddof=1)] for st in steps])  # (T, 2, 32)
        ema = w_init * r0 + np.tensordot(w_ema, s, 1)
        for j, name in enumerate(("rolling_mean", "rolling_variance")):
            assert_close(rolling[k][j], ema[j], 1e-5, name=f"layer {k} {name}")

    # 3. estimates of the training activations' statistics, step by step
    orders = demo.batch_orders(len(xt), cfg.batch, cfg.epochs, cfg.seed)
    per_epoch = len(orders[0])
    x64 = xt.astype(np.float64)
    w0 = demo.init_weights(cfg.seed)
    state = {"w": [w.astype(np.float64) for w in w0[:2]], "bn0": (np.ones(32), np.zeros(32))}
    S, V = np.zeros((2, T, 2, 32)), np.zeros((2, T, 2, 32))
    for t, st in enumerate(steps):
        stats = []
        for idx in orders[t // per_epoch]:
            z1 = x64[idx] @ state["w"][0].T
            z2 = np.maximum(bn_normalize_train(z1, flavor) * state["bn0"][0] + state["bn0"][1], 0) @ state["w"][1].T
            stats.append([[z.mean(0), z.var(0, ddof=1)] for z in (z1, z2)])
            if np.array_equal(idx, st["idx"]):  # the batch this step trained on: the same activations
                for k, z in enumerate((z1, z2)):
                    assert_close(st["z"][k], z, 1e-5, name=f"step {t} z{k + 1}")
        stats = np.array(stats)  # (batches, layer, stat, channel)
        S[:, t], V[:, t] = stats.mean(0), stats.var(0, ddof=1)
        state = st
    for k in range(2):
        expected = w_init * r0 + np.tensordot(w_ema, S[k], 1)
        se = np.sqrt(np.tensordot(w_ema**2, V[k], 1))
        dev = np.abs(rolling[k] - expected) / se
        assert dev.max() < 5, (k, dev.max(axis=1))
        # the bound discriminates: the final network's statistics alone ...
        naive = np.abs(rolling[k] - S[k, -1]) / se
        # ... and the wrong momentum's average (SE the larger of the two) both miss it
        m2 = 0.1 if m == 0.01 else 0.01
        w2 = m2 * (1 - m2) ** age
        wrong = np.abs(rolling[k] - ((1 - m2) ** T * r0 + np.tensordot(w2, S[k], 1)))
        wrong /= np.maximum(se, np.sqrt(np.tensordot(w2**2, V[k], 1)))
        assert naive.max() > 5 and wrong.max() > 5, (k, naive.max(), wrong.max())


# ---------------------------------------------------------------------------------------------------
# The command


def run_main(argv, capsys):
    code = demo_cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_command_output_json_and_plot(digits, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'darknet_bn[demo]')")
    js, png = tmp_path / "d.json", tmp_path / "d.png"
    code, out, err = run_main(
        [
            "--epochs",
            "3",
            "--batch",
            "64",
            "--lr",
            "0.05",
            "--seed",
            "1",
            "--flavor",
            "alexeyab",
            "--json",
            str(js),
            "--plot",
            str(png),
        ],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert "1438 train, 359 validation" in lines[0] and "flavor alexeyab" in lines[0]
    rows = [l for l in lines if l.lstrip()[:1].isdigit() and "|" in l]
    assert [int(r.split("|")[0]) for r in rows] == [1, 2, 3]
    assert sum("training mode on 4-image batches" in l for l in lines) == 1
    data = json.loads(js.read_text())
    assert data["config"] == {
        "epochs": 3,
        "batch": 64,
        "learning_rate": 0.05,
        "momentum": 0.9,
        "decay": 0.0005,
        "seed": 1,
        "flavor": "alexeyab",
        "train_mode_batch": 4,
    }
    assert data["data"]["n_train"] == 1438 and data["data"]["n_val"] == 359
    for run in ("no_bn", "bn"):
        assert [e["epoch"] for e in data["runs"][run]] == [1, 2, 3]
        for e in data["runs"][run]:
            assert 0 <= e["val_accuracy"] <= 1 and e["train_loss"] > 0
    # the table shows the JSON's figures
    bn3 = data["runs"]["bn"][2]
    assert f"{100 * bn3['val_accuracy']:.1f}%" in rows[2].split("|")[2]
    tm = data["train_mode_eval"]
    assert tm["batch"] == 4 and tm["inference_val_accuracy"] == bn3["val_accuracy"]
    assert f"accuracy {100 * tm['val_accuracy']:.1f}% instead of {100 * bn3['val_accuracy']:.1f}%" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (700, 1000)


def test_default_run_is_under_a_minute(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    code, out, err = run_main([], capsys)
    took = time.perf_counter() - t0
    assert code == 0, err
    assert took < 60, took
    data = json.loads((tmp_path / "demo.json").read_text())  # the default JSON path
    assert len(data["runs"]["bn"]) == demo.DemoConfig().epochs
    for run in ("no_bn", "bn"):
        assert data["runs"][run][-1]["val_accuracy"] > 0.8, (run, data["runs"][run][-1])


def test_add_demo_parser_wires_a_subcommand(digits, capsys):
    parser = argparse.ArgumentParser(prog="darknet-bn")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_cli.add_demo_parser(sub)
    args = parser.parse_args(["demo", "--epochs", "1", "--json", ""])
    assert args.func is demo_cli.main and args.parser.prog == "darknet-bn demo"
    assert args.func(args) == 0
    assert "training and evaluation took" in capsys.readouterr().out


def test_missing_scikit_learn_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    code, out, err = run_main(["--epochs", "1", "--json", ""], capsys)
    assert code == 2 and out == ""
    assert "scikit-learn" in err and "pip install 'darknet_bn[demo]'" in err


def test_missing_matplotlib_exits_2_only_with_plot(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))  # present (never used here)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_main(["--epochs", "1", "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2 and out == "" and not (tmp_path / "p.png").exists()
    assert "--plot needs matplotlib" in err and "pip install 'darknet_bn[demo]'" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch", "1"], "--batch"),
        (["--lr", "-1"], "--lr"),
        (["--momentum", "nan"], "--momentum"),
        (["--decay", "inf"], "--decay"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    code, out, err = run_main(argv + ["--json", ""], capsys)
    assert code == 2 and out == "" and message in err


def test_batch_larger_than_the_training_set_exits_2(digits, capsys):
    code, _, err = run_main(["--batch", "5000", "--json", ""], capsys)
    assert code == 2 and "--batch" in err
