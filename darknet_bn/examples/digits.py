"""Example code, not library API: the same small network trained with and without batch normalization,
on darknet_bn's public API (:class:`darknet_bn.Layer`). ``darknet-bn demo`` runs it
(:mod:`darknet_bn.cli.demo`); nothing in darknet_bn imports or re-exports it. It ships in the wheel so
that the command works; read it as a worked example of using the layer in a numpy training loop.

Data: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1,797 images of 8x8
pixels, values 0..16, 10 classes; shipped inside scikit-learn, no download), scaled to [0, 1] and split
into train (1,438) and validation (359: a fifth of each class) images with a fixed seed
(:data:`SPLIT_SEED`: the same split whatever ``--seed``).

Model: an MLP 64 -> 32 -> 32 -> 10 with ReLU and softmax cross-entropy, in numpy (float32). It is trained
twice, from the same initial weights and with the same batch order (both drawn from ``--seed``):

- **no BN**: ``linear(+bias) -> ReLU -> linear(+bias) -> ReLU -> linear(+bias) -> softmax``;
- **BN**: ``linear -> BN -> ReLU -> linear -> BN -> ReLU -> linear(+bias) -> softmax``, the BN being
  darknet_bn :class:`~darknet_bn.Layer` objects of ``batch x 32 x 1 x 1``. As in Darknet's connected
  layer with ``batch_normalize=1``, a hidden linear layer followed by BN has no bias of its own: the BN
  layer's ``biases`` (beta) are its biases.

Everything follows Darknet's conventions: a *delta* is the negative gradient of the loss (of the *sum* of
the per-image losses of the batch), ``*_updates`` accumulate deltas, and one SGD step is Darknet's
``update_connected_layer``: for weights ``updates += -decay*batch * W; W += lr/batch * updates;
updates *= momentum``, for biases (and BN's scales and biases, through :meth:`Layer.update`) the same
without decay. Weights start as Darknet's connected layer's: uniform in +-sqrt(2/inputs); biases 0.

Evaluation is in inference mode (rolling statistics), on the whole training set and the whole
validation set after each epoch. A Layer's batch size is fixed at creation, so the model keeps one
training Layer per BN (which owns the parameters and the rolling statistics) and makes, on demand, one
evaluation Layer per (BN, batch size), into which it copies ``scales``, ``biases``, ``rolling_mean`` and
``rolling_variance`` before each evaluation (4 x 32 floats). The same copies serve the line that shows
what evaluating in *training* mode on 4-image batches gives (batch statistics of 4 images instead of the
rolling statistics); their rolling statistics change then, the model's do not.

Why float32: the BN layers compute in float32 (Darknet's type), so the whole network does, with no
conversion at the BN boundaries, as Darknet does. The numpy helpers keep the dtype they are given and
:class:`MLP` takes ``dtype=np.float64`` without BN, so the finite-difference tests run the same code in
float64.

Optional packages (``pip install 'darknet_bn[demo]'``): scikit-learn is always needed (the data);
matplotlib only for :func:`plot`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from darknet_bn import Layer

__all__ = [
    "SPLIT_SEED",
    "HIDDEN",
    "DemoConfig",
    "EpochStats",
    "RunHistory",
    "DemoResult",
    "StepCache",
    "MLP",
    "load_digits_split",
    "init_weights",
    "batch_orders",
    "train_run",
    "run_demo",
    "evaluate",
    "evaluate_train_mode",
    "format_table",
    "train_mode_line",
    "result_dict",
    "write_json",
    "plot",
    "linear_forward",
    "linear_backward",
    "relu",
    "relu_backward",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_delta",
]

SPLIT_SEED = 0
"""The seed of the train/validation split (fixed: the same split whatever ``--seed``)."""

HIDDEN = 32
"""Units of each hidden layer (64 -> 32 -> 32 -> 10)."""

# ---------------------------------------------------------------------------------------------------
# The numpy pieces (any float dtype: float32 in the demo, float64 in the finite-difference tests).
# Deltas are Darknet's: negative gradients.


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T (+ b)``: x (batch, inputs), w (outputs, inputs), b (outputs,) or None -> (batch, outputs),
    in the dtype of x (Darknet's connected layer: ``gemm(0,1,...)``)."""
    z = x @ w.T
    if b is not None:
        z += b
    return z


def linear_backward(
    delta: np.ndarray, x: np.ndarray, w: np.ndarray, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The backward of :func:`linear_forward` from the output's delta (batch, outputs).

    Returns ``(dx, dw, db)``: the input's delta (batch, inputs) (None when ``need_dx`` is false), the
    weights' delta ``delta.T @ x`` (outputs, inputs) and the bias delta ``delta.sum(0)`` (outputs,): sums
    over the batch, as Darknet accumulates them into ``weight_updates`` and ``bias_updates``."""
    dw = delta.T @ x
    db = delta.sum(axis=0)
    dx = delta @ w if need_dx else None
    return dx, dw, db


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0), a new array of x's shape and dtype."""
    return np.maximum(x, 0)


def relu_backward(delta: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The input's delta of a ReLU from the output's delta and the ReLU's output (Darknet's
    ``gradient_array``: the delta where the output is > 0, else 0); same shape and dtype."""
    return np.where(out > 0, delta, np.zeros((), dtype=delta.dtype))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (batch, classes), shifted by the row maximum; same dtype."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean over the batch of ``-log softmax(logits)[label]``, and the probabilities.

    Args:
        logits: (batch, classes) float. labels: (batch,) ints in [0, classes).
    Returns:
        (mean loss as a Python float, probabilities (batch, classes) in the dtype of logits).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    idx = np.arange(len(labels))
    loss = float(np.mean(log_z - shifted[idx, labels]))
    return loss, np.exp(shifted - log_z[:, None])


def softmax_cross_entropy_delta(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Darknet's softmax-layer delta ``truth - probs`` (batch, classes): the negative gradient, with
    respect to the logits, of the *sum* over the batch of the cross-entropy losses."""
    delta = -probs
    delta[np.arange(len(labels)), labels] += 1
    return delta


# ---------------------------------------------------------------------------------------------------
# Data


def load_digits_split(
    val_fraction: float = 0.2,
    split_seed: int = SPLIT_SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits, scaled to [0, 1], split by class with a fixed seed.

    Returns ``(x_train, y_train, x_val, y_val)``: x float32 (n, 64), C-contiguous; y int64 (n,).
    Each class puts ``round(val_fraction * its count)`` images into validation (359 of 1,797 at 0.2),
    in the data set's order (the training batches are shuffled, the evaluations take whole sets).

    Raises:
        ImportError: scikit-learn is not installed.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (np.asarray(x, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(split_seed)
    val_idx = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        idx = idx[rng.permutation(len(idx))]
        val_idx.append(idx[: int(round(val_fraction * len(idx)))])
    val_mask = np.zeros(len(y), dtype=bool)
    val_mask[np.concatenate(val_idx)] = True
    return (np.ascontiguousarray(x[~val_mask]), y[~val_mask], np.ascontiguousarray(x[val_mask]), y[val_mask])


# ---------------------------------------------------------------------------------------------------
# The model


def init_weights(seed: int, sizes: Sequence[int] = (64, HIDDEN, HIDDEN, 10)) -> list[np.ndarray]:
    """Darknet's connected-layer initialisation: weights (outputs, inputs) float32, uniform in
    ``+-sqrt(2/inputs)``, one per pair of consecutive ``sizes``, from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return [
        (math.sqrt(2.0 / n_in) * rng.uniform(-1.0, 1.0, size=(n_out, n_in))).astype(np.float32)
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]


def batch_orders(n: int, batch: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Per epoch, the image indices of its batches: (n // batch, batch) int64 arrays, a fresh shuffle of
    range(n) each epoch (the last n % batch images of each shuffle are left out: a Layer's batch size is
    fixed). Drawn from ``numpy.random.default_rng([seed, 1])`` (a stream apart from the weights')."""
    rng = np.random.default_rng([seed, 1])
    steps = n // batch
    return [rng.permutation(n)[: steps * batch].reshape(steps, batch) for _ in range(epochs)]


@dataclass
class StepCache:
    """What one forward keeps for the backward (arrays of the model's dtype, one row per image).

    Attributes:
        x: the input (batch, 64). z: the hidden linear layers' outputs, (batch, 32) each (with BN: the BN
        layers' inputs). a: the hidden ReLUs' outputs, (batch, 32) each. probs: (batch, 10).
    """

    x: np.ndarray
    z: list[np.ndarray]
    a: list[np.ndarray]
    probs: np.ndarray


class MLP:
    """The demo's network 64 -> 32 -> 32 -> 10, with or without darknet_bn layers after the two hidden
    linear layers (see the module docstring), and Darknet's SGD.

    Args:
        weights: the initial weights, (outputs, inputs) each (copied).
        use_bn: put a :class:`Layer` (``batch x 32 x 1 x 1``, ``flavor``) after each hidden linear layer.
        batch: the training batch size (a Layer's batch size is fixed at creation).
        dtype: float32 (the demo; required with BN, whose layers are float32) or float64.

    Attributes:
        weights, weight_updates: (outputs, inputs) arrays of ``dtype``, one per linear layer.
        biases, bias_updates: (outputs,) arrays of ``dtype``; with BN the first two stay 0, unused (the BN
            layers' ``biases`` take their place, as in Darknet's connected layer with batch_normalize).
        bn: the two training Layers (they own scales, biases and the rolling statistics), or [].

    Evaluation (``forward`` with ``train=False``) never runs the training Layers: it runs, per BN and
    per number of rows, an evaluation Layer made on first use, into which the training Layer's
    ``scales``, ``biases``, ``rolling_mean`` and ``rolling_variance`` are copied before each forward.
    """

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        use_bn: bool,
        batch: int,
        flavor: str = "pjreddie",
        dtype: type = np.float32,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: float32 or float64, got {self.dtype}")
        if use_bn and self.dtype != np.float32:
            raise ValueError("dtype: the BN layers are float32, so a network with BN is float32")
        self.weights = [np.array(w, dtype=self.dtype, order="C") for w in weights]  # copies
        self.biases = [np.zeros(w.shape[0], dtype=self.dtype) for w in self.weights]
        self.weight_updates = [np.zeros_like(w) for w in self.weights]
        self.bias_updates = [np.zeros_like(b) for b in self.biases]
        self.use_bn = bool(use_bn)
        self.batch = int(batch)
        self.flavor = flavor
        n_hidden = len(self.weights) - 1
        self.bn: list[Layer] = (
            [Layer(self.batch, 1, 1, w.shape[0], flavor) for w in self.weights[:n_hidden]] if self.use_bn else []
        )
        self._eval_bn: dict[tuple[int, int], Layer] = {}

    def _eval_layer(self, i: int, rows: int) -> Layer:
        """The evaluation Layer of BN ``i`` for ``rows`` rows (made once per size), holding a fresh copy
        of the training Layer's parameters and rolling statistics."""
        layer = self._eval_bn.get((i, rows))
        if layer is None:
            layer = self._eval_bn[(i, rows)] = Layer(rows, 1, 1, self.bn[i].c, self.bn[i].flavor)
        src = self.bn[i]
        for name in ("scales", "biases", "rolling_mean", "rolling_variance"):
            getattr(layer, name)[:] = getattr(src, name)
        return layer

    # -- passes --------------------------------------------------------------------------------------

    def forward(
        self, x: np.ndarray, labels: np.ndarray | None = None, train: bool = False, bn_train_mode: bool | None = None
    ) -> tuple[float, StepCache]:
        """Forward ``x`` (rows, 64) (converted to the model's dtype).

        Args:
            train: a training step: the rows must be ``batch``; BN runs in training mode through the
                training layers (updating their rolling statistics), ready for :meth:`backward`.
            bn_train_mode: outside training, run the BN copies in training mode (batch statistics of
                these rows) instead of inference mode; the model's own statistics are not changed.
        Returns:
            (mean cross-entropy over the rows, or nan without labels; the :class:`StepCache`).
        """
        x = np.ascontiguousarray(x, dtype=self.dtype)
        rows = x.shape[0]
        if train and rows != self.batch:
            raise ValueError(f"x: a training step takes {self.batch} rows, got {rows}")
        bn_mode = train if bn_train_mode is None or train else bool(bn_train_mode)
        zs, acts = [], []
        a = x
        for i in range(len(self.weights) - 1):
            if self.use_bn:
                z = linear_forward(a, self.weights[i])
                layer = self.bn[i] if train else self._eval_layer(i, rows)
                y = layer.forward(z, train=bn_mode)
            else:
                z = linear_forward(a, self.weights[i], self.biases[i])
                y = z
            a = relu(y)  # a new array: the BN layer's output buffer is not kept
            zs.append(z)
            acts.append(a)
        logits = linear_forward(a, self.weights[-1], self.biases[-1])
        if labels is None:
            return float("nan"), StepCache(x, zs, acts, softmax(logits))
        loss, probs = softmax_cross_entropy(logits, labels)
        return loss, StepCache(x, zs, acts, probs)

    def backward(self, cache: StepCache, labels: np.ndarray) -> None:
        """Accumulate the deltas of the last training forward into the ``*_updates`` (Darknet's
        backward): the loss is the sum of the batch's cross-entropies."""
        delta = softmax_cross_entropy_delta(cache.probs, labels)
        n = len(self.weights)
        for i in range(n - 1, -1, -1):
            inp = cache.a[i - 1] if i > 0 else cache.x
            dx, dw, db = linear_backward(delta, inp, self.weights[i], need_dx=i > 0)
            self.weight_updates[i] += dw
            if i == n - 1 or not self.use_bn:
                self.bias_updates[i] += db
            if i == 0:
                break
            assert dx is not None  # need_dx for i > 0
            delta = relu_backward(dx, cache.a[i - 1])
            if self.use_bn:
                layer = self.bn[i - 1]
                layer.delta.reshape(delta.shape)[...] = delta
                delta = layer.backward().reshape(delta.shape)  # adds into scale_updates, bias_updates

    def update(self, learning_rate: float, momentum: float, decay: float) -> None:
        """Darknet's SGD step (``update_connected_layer``) for every weight and bias, and
        :meth:`Layer.update` for the BN layers."""
        b, t = self.batch, self.dtype.type
        for w, wu, bias, bu in zip(self.weights, self.weight_updates, self.biases, self.bias_updates):
            wu += t(-decay * b) * w  # axpy(-decay*batch, weights, weight_updates)
            w += t(learning_rate / b) * wu  # axpy(learning_rate/batch, weight_updates, weights)
            wu *= t(momentum)  # scal(momentum, weight_updates)
            bias += t(learning_rate / b) * bu  # axpy(learning_rate/batch, bias_updates, biases)
            bu *= t(momentum)  # scal(momentum, bias_updates)
        for layer in self.bn:
            layer.update(learning_rate, momentum, decay, b)

    def train_step(
        self, x: np.ndarray, labels: np.ndarray, learning_rate: float, momentum: float, decay: float
    ) -> tuple[float, StepCache]:
        """One training step on a batch (forward, backward, update); returns the batch's mean loss and
        the forward's cache."""
        loss, cache = self.forward(x, labels, train=True)
        self.backward(cache, labels)
        self.update(learning_rate, momentum, decay)
        return loss, cache


def evaluate(model: MLP, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on all of ``x`` (n, 64) at once, BN in inference mode."""
    loss, cache = model.forward(x, y)
    return loss, float(np.mean(cache.probs.argmax(axis=1) == y))


def evaluate_train_mode(model: MLP, x: np.ndarray, y: np.ndarray, batch: int = 4) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``x`` evaluated the wrong way: BN in *training* mode on
    consecutive chunks of about ``batch`` rows (``np.array_split`` into ``len(x) // batch`` chunks, so
    every chunk has at least ``batch`` rows), each normalized with its own batch statistics. The
    model's rolling statistics are not changed.

    Raises:
        ValueError: ``batch`` < 2 or fewer than 2 rows (a batch variance needs 2 values).
    """
    if batch < 2 or len(x) < 2:
        raise ValueError(f"batch: training mode needs batches of >= 2 rows, got batch={batch} for {len(x)} rows")
    chunks = max(1, len(x) // batch)
    losses, correct = 0.0, 0
    for xs, ys in zip(np.array_split(x, chunks), np.array_split(y, chunks)):
        loss, cache = model.forward(xs, ys, bn_train_mode=True)
        losses += loss * len(ys)
        correct += int(np.sum(cache.probs.argmax(axis=1) == ys))
    return losses / len(y), correct / len(y)


# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class EpochStats:
    """One epoch of one run: loss and accuracy (in [0, 1]) on the training and validation sets, both
    evaluated in inference mode after the epoch; ``batch_loss`` is the mean of the epoch's training-batch
    losses (measured during training, BN in training mode, the weights changing)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    batch_loss: float


@dataclass
class RunHistory:
    """One run: ``bn`` (with or without BN), its per-epoch :class:`EpochStats`, the final model."""

    bn: bool
    epochs: list[EpochStats] = field(default_factory=list)
    model: MLP | None = None


@dataclass
class DemoConfig:
    """The demo's settings (the command's options)."""

    epochs: int = 20
    batch: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.9
    decay: float = 0.0005
    seed: int = 0
    flavor: str = "pjreddie"
    train_mode_batch: int = 4


@dataclass
class DemoResult:
    """Both runs (:class:`RunHistory`), the numbers of images, the training-mode evaluation of the BN
    network (``train_mode``: batch, val_loss, val_accuracy, and the inference-mode inference_val_loss,
    inference_val_accuracy of the last epoch) and ``seconds``: the wall time of both trainings and all
    evaluations (not of loading the data)."""

    config: DemoConfig
    n_train: int
    n_val: int
    no_bn: RunHistory
    bn: RunHistory
    train_mode: dict
    seconds: float


def train_run(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    use_bn: bool,
    weights: Sequence[np.ndarray],
    orders: Sequence[np.ndarray],
    config: DemoConfig,
    on_step: Callable[[MLP, StepCache, np.ndarray], None] | None = None,
) -> RunHistory:
    """Train one model from ``weights`` over the batches of ``orders`` (see :func:`batch_orders`),
    evaluating after each epoch.

    Args:
        x_train, x_val: float32 (n, 64). y_train, y_val: int (n,).
        on_step: called after each training step with (model, the step's cache, the step's image
            indices): e.g. a progress bar, or a test recording the BN layers' inputs (``cache.z``).
    """
    model = MLP(weights, use_bn, config.batch, config.flavor)
    hist = RunHistory(bn=use_bn, model=model)
    for epoch, order in enumerate(orders, start=1):
        batch_losses = []
        for idx in order:
            loss, cache = model.train_step(
                x_train[idx], y_train[idx], config.learning_rate, config.momentum, config.decay
            )
            batch_losses.append(loss)
            if on_step is not None:
                on_step(model, cache, idx)
        tl, ta = evaluate(model, x_train, y_train)
        vl, va = evaluate(model, x_val, y_val)
        hist.epochs.append(EpochStats(epoch, tl, ta, vl, va, float(np.mean(batch_losses))))
    return hist


def run_demo(
    config: DemoConfig | None = None,
    data: tuple[np.ndarray, ...] | None = None,
    on_step: Callable[[bool, MLP, StepCache, np.ndarray], None] | None = None,
) -> DemoResult:
    """Train the network without BN, then with BN, from the same initial weights (:func:`init_weights`)
    and the same batch order (:func:`batch_orders`), both from ``config.seed``; then evaluate the BN
    network on the validation set in training mode on ``config.train_mode_batch``-image batches.

    Args:
        config: the settings (default :class:`DemoConfig`).
        data: ``(x_train, y_train, x_val, y_val)``, x float32 (n, features), y int (n,) (default:
            :func:`load_digits_split`, which needs scikit-learn).
        on_step: called after each training step of either run with (use_bn, model, the step's
            :class:`StepCache`, the step's image indices) (a progress bar; a test's recorder).
    """
    config = config or DemoConfig()
    x_train, y_train, x_val, y_val = data if data is not None else load_digits_split()
    t0 = time.perf_counter()
    if len(x_train) < config.batch:
        raise ValueError(f"batch: {config.batch} is more than the {len(x_train)} training images")
    classes = int(max(y_train.max(), y_val.max())) + 1
    weights = init_weights(config.seed, (x_train.shape[1], HIDDEN, HIDDEN, classes))
    orders = batch_orders(len(x_train), config.batch, config.epochs, config.seed)
    runs = {}
    for use_bn in (False, True):
        step = None if on_step is None else (lambda m, c, i, b=use_bn: on_step(b, m, c, i))
        runs[use_bn] = train_run(
            x_train, y_train, x_val, y_val, use_bn=use_bn, weights=weights, orders=orders, config=config, on_step=step
        )
    bn_model = runs[True].model
    assert bn_model is not None  # set by train_run
    tm_loss, tm_acc = evaluate_train_mode(bn_model, x_val, y_val, config.train_mode_batch)
    last = runs[True].epochs[-1]
    train_mode = {
        "batch": config.train_mode_batch,
        "val_loss": tm_loss,
        "val_accuracy": tm_acc,
        "inference_val_loss": last.val_loss,
        "inference_val_accuracy": last.val_accuracy,
    }
    return DemoResult(config, len(x_train), len(x_val), runs[False], runs[True], train_mode, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------
# Output


def format_table(result: DemoResult) -> str:
    """The per-epoch table: loss and accuracy (%) on train and validation, without and with BN."""
    head = (
        f"{'':>5} | {'without BN':^35} | {'with BN (' + result.config.flavor + ')':^35}\n"
        f"{'epoch':>5} | " + " | ".join([f"{'train loss':>10} {'acc':>6} {'val loss':>9} {'acc':>6}"] * 2)
    )
    lines = [head, "-" * len(head.splitlines()[1])]
    for a, b in zip(result.no_bn.epochs, result.bn.epochs):
        lines.append(
            f"{a.epoch:>5} | "
            + " | ".join(
                f"{e.train_loss:>10.4f} {100 * e.train_accuracy:>5.1f}% "
                f"{e.val_loss:>9.4f} {100 * e.val_accuracy:>5.1f}%"
                for e in (a, b)
            )
        )
    return "\n".join(lines)


def train_mode_line(result: DemoResult) -> str:
    """The one line on evaluating the BN network in training mode on small batches."""
    t = result.train_mode
    return (
        f"with BN, validation evaluated in training mode on {t['batch']}-image batches (each normalized "
        f"by its own batch statistics) instead of inference mode (rolling statistics): accuracy "
        f"{100 * t['val_accuracy']:.1f}% instead of {100 * t['inference_val_accuracy']:.1f}%, loss "
        f"{t['val_loss']:.4f} instead of {t['inference_val_loss']:.4f}"
    )


def result_dict(result: DemoResult) -> dict:
    """The result as JSON-ready data (accuracies in [0, 1])."""
    return {
        "config": asdict(result.config),
        "data": {
            "name": "sklearn.datasets.load_digits",
            "n_train": result.n_train,
            "n_val": result.n_val,
            "split_seed": SPLIT_SEED,
        },
        "runs": {"no_bn": [asdict(e) for e in result.no_bn.epochs], "bn": [asdict(e) for e in result.bn.epochs]},
        "train_mode_eval": result.train_mode,
        "seconds": result.seconds,
    }


def write_json(path: str, result: DemoResult) -> None:
    """Write :func:`result_dict` to ``path``."""
    with open(path, "w") as f:
        json.dump(result_dict(result), f, indent=1)
        f.write("\n")


def plot(path: str, result: DemoResult) -> None:
    """Four panels (train loss, train accuracy, validation loss, validation accuracy) per epoch, with BN
    and without; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    c = result.config
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        ("train_loss", "train loss"),
        ("train_accuracy", "train accuracy"),
        ("val_loss", "validation loss"),
        ("val_accuracy", "validation accuracy"),
    ]
    for ax, (key, title) in zip(axes.flat, panels):
        for run, label, style in ((result.bn, f"with BN ({c.flavor})", "-o"), (result.no_bn, "without BN", "-s")):
            xs = [e.epoch for e in run.epochs]
            ys = [getattr(e, key) * (100 if "accuracy" in key else 1) for e in run.epochs]
            ax.plot(xs, ys, style, ms=3, label=label)
        ax.set_title(title)
        ax.set_ylabel("%" if "accuracy" in key else "cross-entropy")
        if "loss" in key:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend()
    fig.suptitle(
        f"digits MLP 64-32-32-10, SGD lr {c.learning_rate:g} momentum {c.momentum:g} decay {c.decay:g}, "
        f"batch {c.batch}, seed {c.seed}; evaluated in inference mode after each epoch",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
