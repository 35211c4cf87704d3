"""The timing harness: :func:`run` times every (shape, pass) for darknet_bn and the peers.

For each shape and pass (training forward, inference forward, inference + leaky, backward; with ``--renorm`` /
``--activation`` also the renorm and the +ACT training passes) it times darknet_bn's ``Layer`` as users call
it, and each peer in the same rounds (interleaved: round r runs every implementation once, in an order that
changes from round to round, so a slow moment of the machine hits all of them and no implementation always
runs after the same one; in a row with a baseline, ours and the baseline each follow the other and a peer
equally often: :func:`round_order`). Each timed sample follows one untimed call of the same implementation:
the state a loop over the layer sees (tensors that fit the last-level cache are in it). The triad that gives
the roofline's bandwidth runs after a row's rounds, never between them (``TRIAD_SAMPLES`` samples), and a row
starts with one untimed call of every implementation: a triad sweeps 192 MiB through the caches, and on the
shared VM it was measured on the two calls after it ran 1.4-2x slower than the third (1x16x416x416's training
forward: 1.05-1.29, 0.80, then 0.57 ms), so a triad ending every round put that cost into the first samples of
the next (docs/performance.md section 18). Each pass runs in the state users call it in: the backward rows
time the training backward, after a training forward (one untimed training forward before the row's rounds;
backward calls do not change the mode), and a ``backward+ACT`` row the backward after a ``train+ACT`` forward
(the activation's derivative applied), its delta restored, untimed, before each sample (:attr:`Impl.reset`: an
in-place backward through an activation's derivative would shrink or grow it from call to call). A row with a
baseline (``infer+leaky``, the ``+renorm`` and ``+ACT`` rows) also times our plain pass in its rounds
(``"ours:<pass>"``).

Before a peer is timed on a shape, each pass it offers runs once and is compared with ours; a peer
whose output differs beyond float32 rounding (``CHECK_RTOL``), or that fails, is reported and not
timed in that row.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .._capi import get_num_threads
from ..flavors import Flavor, get_flavor
from .cases import PASSES, PEER_PASS, Setup, default_rounds, make_data, make_params, ours_baseline, peer_passes
from .peers import MAKERS, check_peer, offers, reference_outputs
from .roofline import Triad, bytes_per_element

DEFAULT_BUDGET_S = 40.0  # what the default run aims at, setup included (each row still gets MIN_ROUNDS)
MIN_ROUNDS = 3
MIN_SAMPLE_S = 200e-6  # a sample of a tiny pass repeats the call until it lasts this long
TRIAD_SAMPLES = 3  # triad samples after each row's rounds (their median is the row's bandwidth)


@dataclass
class Result:
    shape: tuple
    pass_: str
    median_ms: dict = field(default_factory=dict)  # implementation -> median ms
    q1_ms: dict = field(default_factory=dict)
    q3_ms: dict = field(default_factory=dict)
    triad_gbs: float = 0.0
    bytes_min: int = 0
    rounds: int = 0
    check_error: dict = field(default_factory=dict)  # peer -> max |peer - ours| of the check
    not_timed: dict = field(default_factory=dict)  # peer -> why it was not timed in this row
    setup_s: dict = field(default_factory=dict)  # the shape's setup and checks (its first row only)
    rounds_s: float = 0.0  # the time the row took: its first untimed calls, its rounds and its triad samples

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
        base = ours_baseline(self.pass_)
        if base in self.median_ms:  # what the pass's extra costs: ours / our plain pass, in the same rounds
            d["baseline"], d["over_baseline"] = base, self.ours_ms / self.median_ms[base]
        return d


def _time(f: Callable[[], object], reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def round_order(names: Sequence[str], rnd: int, pair: bool = False) -> list[str]:
    """The order the implementations run in round ``rnd``. The rounds follow each other without a pause,
    so the last of a round and the first of the next count as neighbours too.

    ``pair`` (a row with a baseline: ``names[0]`` is ``ours`` and ``names[1]`` our plain pass,
    ``ours:<pass>``, whose ratio to ours the row reports): the peers, rotated by one each round, then
    ``ours`` and its baseline, in one order in even rounds and the other in odd ones. In every two
    rounds each of the two runs once right after the other and once right after a peer (whose threads
    may still hold the cores, and which leaves ours' threads asleep), so their ratio does not measure
    the order. (A rotation of the whole list ran the baseline after ``ours`` in every round and ``ours``
    after a peer: infer+leaky / infer read 1.34 where both medians were equal.)

    Without ``pair``: rounds 2j and 2j + 1 run the list rotated by j, one forward and one reversed
    (forward first for even j): every implementation follows each of its two neighbours in the list."""
    if pair and len(names) >= 2:
        duo, peers = list(names[:2]), list(names[2:])
        if peers:
            k = rnd % len(peers)
            peers = peers[k:] + peers[:k]
        return peers + (duo if rnd % 2 == 0 else duo[::-1])
    k = (rnd // 2) % len(names)
    order = list(names[k:]) + list(names[:k])
    return order[::-1] if (rnd % 4) in (1, 2) else order


def _reps_for(f: Callable[[], object]) -> tuple[int, float]:
    """How many calls make one sample last at least MIN_SAMPLE_S, and one call's time (s)."""
    t = _time(f, 1)
    return max(1, min(10000, math.ceil(MIN_SAMPLE_S / max(t, 1e-7)))), t


def run(
    shapes: Sequence[tuple],
    peers: Sequence[str],
    rounds: int | None = None,
    flavor: str | Flavor = "torch",
    progress: Callable[[int], None] | None = None,
    triad: Triad | None = None,
    passes: Sequence[str] = PASSES,
    budget_s: float | None = None,
) -> list[Result]:
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
    threads = get_num_threads()
    n_rows = len(shapes) * len(passes)
    results: list[Result] = []
    start = time.perf_counter()
    setup_total = 0.0
    for i_shape, shape in enumerate(shapes):
        shape = tuple(shape)
        t0 = time.perf_counter()
        x, dy = make_data(shape)
        gamma, beta, rm, rv = make_params(shape[1])
        s = Setup(shape, fl, x, dy, gamma, beta, rm, rv, threads, passes)
        setup_s = {"data": time.perf_counter() - t0}
        t0 = time.perf_counter()
        impls = {"ours": MAKERS["ours"](s)}
        setup_s["ours"] = time.perf_counter() - t0
        errors: dict = {}
        not_timed: dict = {}  # peer -> {pass: reason} (pass "*": every pass)
        ref: dict | None = None
        scratch: np.ndarray | None = None
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
                    ref, scratch = reference_outputs(s, peer_passes(passes)), np.empty_like(x)
                assert scratch is not None
                errors[name], not_timed[name] = check_peer(impl, ref, passes, scratch)
                setup_s[name + " check"] = time.perf_counter() - t0
        ref = scratch = None
        setup_total += sum(setup_s.values())
        setup_left = setup_total / (i_shape + 1) * (len(shapes) - i_shape - 1)
        n_rounds = rounds or default_rounds(shape)
        for p in passes:
            pp = PEER_PASS.get(p, p)
            entries = {"ours": ("ours", p)}
            base = ours_baseline(p)
            if base:  # our pass without its extra, in the same rounds: their ratio is fair
                entries[base] = ("ours", base.split(":", 1)[1])
            r = Result(shape=shape, pass_=p, bytes_min=bytes_per_element(p) * math.prod(shape))
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
            for owner, q in entries.values():
                prep = impls[owner].prepare.get(q)
                if prep is not None:
                    prep()
            call = {name: impls[owner].calls[q] for name, (owner, q) in entries.items()}
            reset = {name: impls[owner].reset.get(q) for name, (owner, q) in entries.items()}
            samples: dict[str, list[float]] = {name: [] for name in call}
            reps: dict[str, int] = {}
            names = list(call)
            this_rounds = n_rounds
            t0 = time.perf_counter()
            # one untimed call of each: after the last row's triad (or setup), every implementation's
            # buffers are back in the cache before the first timed sample
            for name in names:
                undo = reset[name]
                if undo is not None:
                    undo()
                call[name]()
            rnd = 0
            while rnd < this_rounds:
                # each sample follows one untimed call of the same implementation (the state a loop
                # over the layer sees; in round 0 it also tells how many calls make a sample), and the
                # order rotates and reverses (round_order), so no implementation always follows another
                for name in round_order(names, rnd, pair=bool(base)):
                    f = call[name]
                    undo = reset[name]
                    if undo is not None:
                        undo()
                    if rnd == 0:
                        reps[name], one = _reps_for(f)
                        est[name] = (reps[name], one)
                    else:
                        f()
                    samples[name].append(_time(f, reps[name]))
                if rnd == 0 and rounds is None and budget_s is not None:
                    per_round = sum((k + 1) * t for k, t in est.values())
                    rows_left = n_rows - len(results)
                    triad_s = TRIAD_SAMPLES * 12.0 * triad.n / 30e9  # a row's triad samples, at ~30 GB/s
                    share = (budget_s - (time.perf_counter() - start) - setup_left) / rows_left - triad_s
                    this_rounds = max(MIN_ROUNDS, min(n_rounds, int(share / per_round) + 1))
                if progress:
                    progress(1)
                rnd += 1
            if progress and this_rounds < n_rounds:
                progress(n_rounds - this_rounds)
            bw = [triad.sample() for _ in range(TRIAD_SAMPLES)]
            r.triad_gbs, r.rounds = statistics.median(bw), this_rounds
            r.setup_s, setup_s = setup_s, {}  # the shape's setup, on its first row
            r.rounds_s = time.perf_counter() - t0
            for name, ts in samples.items():
                qs = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
                r.median_ms[name] = statistics.median(ts) * 1e3
                r.q1_ms[name], r.q3_ms[name] = qs[0] * 1e3, qs[2] * 1e3
            results.append(r)
        del impls, call
    return results
