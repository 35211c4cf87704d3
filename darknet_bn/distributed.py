"""Synchronized batch normalization over MPI (mpi4py): data-parallel training where every process holds
a slice of the batch and the batch statistics are those of the whole batch.

Per training pass, one ``Allreduce`` of one contiguous buffer:

- forward: each process computes its channels' (count, mean, M2) in C (``dbn_forward_moments``, double,
  exact and mergeable); an Allreduce with Chan's merge (a non-commutative MPI op, so every process
  merges in rank order and gets the same bits) gives the whole batch's; normalization, ``mean``,
  ``variance`` and the rolling statistics then use them (``dbn_forward_apply``).
- backward: each process computes its (sum delta, sum delta*(x - mean)); an Allreduce (sum) gives the
  global sums that the input's delta, ``mean_delta`` and ``variance_delta`` need
  (``dbn_backward_apply``). ``scale_updates`` and ``bias_updates`` keep this process's contribution, as
  every other parameter's gradient in a data-parallel step; :meth:`SyncLayer.allreduce_updates` sums
  them over the processes for users who want the global values.

Inference needs no communication. Batch sizes may differ between processes (the counts are reduced
too). A process whose layer differs (channels, height, width, flavor, renorm) raises on every process
when the layers are made; a process whose pass fails its argument checks makes the pass raise on every
process (the failure travels in the same message), so nobody waits forever.

Requires the optional extra: ``pip install 'darknet_bn[mpi]'`` (mpi4py and an MPI: the ``mpich`` wheel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._capi import EXEC, c_act, ffi, lib
from .flavors import Flavor
from .layer import Layer

try:
    from mpi4py import MPI
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("darknet_bn.distributed needs mpi4py: pip install 'darknet_bn[mpi]'") from e

__all__ = ["SyncLayer", "make_sync_batchnorm_layer", "MPI"]

_TRIPLE = MPI.DOUBLE.Create_contiguous(3).Commit()  # one channel's (count, mean, M2)


def _merge(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
    """The MPI op: inout = in (the lower ranks) merged with inout, channel by channel."""
    a = np.frombuffer(inbuf, dtype=np.float64)
    b = np.frombuffer(inoutbuf, dtype=np.float64)
    merged = a.copy()
    lib.dbn_merge_moments(ffi.from_buffer("double[]", merged), ffi.from_buffer("double[]", b), a.size // 3)
    b[...] = merged


_MERGE = MPI.Op.Create(_merge, commute=False)


class SyncLayer(Layer):
    """A :class:`~darknet_bn.Layer` whose training statistics are those of the batch over all the
    processes of ``comm``; same fields and methods. ``batch`` is this process's slice."""

    __slots__ = (
        "_comm",
        "_lmom",
        "_gmom",
        "_lsum",
        "_gsum",
        "_p_lmom",
        "_p_gmom",
        "_p_lsum",
        "_p_gsum",
        "_global_count",
    )

    def __init__(
        self,
        batch: int,
        w: int,
        h: int,
        c: int,
        comm: Any,
        flavor: str | Flavor = "pjreddie",
        *,
        renorm: bool = False,
        rmax: float = 3.0,
        dmax: float = 5.0,
    ) -> None:
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm: expected an mpi4py communicator (MPI.Comm), got {type(comm).__name__}")
        self._comm = comm
        failure: Exception | None = None
        try:
            super().__init__(batch, w, h, c, flavor, renorm=renorm, rmax=rmax, dmax=dmax)
            mine = (self.c, self.h, self.w, self.flavor.name, self.renorm)
        except (TypeError, ValueError) as e:
            mine, failure = None, e
        every = comm.allgather((mine, str(failure) if failure else ""))  # collective: every layout
        if failure is not None:
            raise failure
        bad = [(r, m, err) for r, (m, err) in enumerate(every) if err or m != mine]
        if bad:
            r, m, err = bad[0]
            raise ValueError(
                f"SyncLayer: process {r} of {comm.Get_size()} made a different layer: "
                f"{err or f'(c, h, w, flavor, renorm) = {m}'}; this process (rank {comm.Get_rank()}) "
                f"has {mine}"
            )
        c = self.c
        # One extra element per buffer carries "some process failed its checks" (its count).
        self._lmom, self._gmom = np.zeros(3 * (c + 1)), np.zeros(3 * (c + 1))
        self._lsum, self._gsum = np.zeros(2 * c + 1), np.zeros(2 * c + 1)
        self._p_lmom, self._p_gmom, self._p_lsum, self._p_gsum = (
            ffi.from_buffer("double[]", a) for a in (self._lmom, self._gmom, self._lsum, self._gsum)
        )
        self._global_count = 0.0

    @property
    def comm(self) -> Any:
        """The MPI communicator the statistics are synchronized over."""
        return self._comm

    def forward(
        self, input: np.ndarray, train: bool = True, activation: str | None = None, *, alpha: float | None = None
    ) -> np.ndarray:
        """Darknet's forward with the whole batch's statistics (training; one Allreduce), or plain
        inference (no communication), followed by the activation in the same pass. A collective call in
        training mode: every process must call it (with the same activation). See :meth:`Layer.forward`
        for the arguments: the same input checks (a bad activation on one process raises on every
        process), and a float32 input that is byte-swapped, misaligned or not C-contiguous is copied
        once into a buffer of this layer (a buffer other than the last forward's ``x``, which stays
        intact when the pass raises)."""
        if not train:
            return super().forward(input, train, activation, alpha=alpha)
        c = self.c
        try:
            act = c_act(activation, alpha)
            input, p_in, _, _ = self._take_input(input, True, 2, keep_x=True)  # the count: checked globally below
            lib.dbn_forward_moments(p_in, self.batch, c, self.h * self.w, self._p_lmom, EXEC)
            self._lmom[3 * c :] = 0.0
            failure = None
        except (TypeError, ValueError) as e:
            self._lmom[:] = 0.0
            self._lmom[3 * c] = 1.0  # "a process failed" travels with the data
            failure = e
        self._comm.Allreduce([self._lmom, c + 1, _TRIPLE], [self._gmom, c + 1, _TRIPLE], op=_MERGE)
        if failure is not None:
            raise failure
        if self._gmom[3 * c] > 0:
            raise ValueError(f"forward: {int(self._gmom[3 * c])} other process(es) failed their input checks")
        count = self._gmom[0]
        if count < 2:
            raise ValueError(
                "train: a training forward needs at least 2 values per channel over all processes "
                f"(the batch variance is undefined), the processes hold {int(count)}"
            )
        self._global_count = count
        p = self._p
        lib.dbn_forward_apply(
            p_in,
            self._p_output,
            p["scales"],
            p["biases"],
            p["mean"],
            p["variance"],
            p["rolling_mean"],
            p["rolling_variance"],
            self._p_gmom,
            self.batch,
            c,
            self.h * self.w,
            self._cflavor,
            self._renorm,
            act,
            EXEC,
        )
        self._act = act
        return self._forward_done(input, p_in, True)

    def backward(self, net_delta: np.ndarray | None = None) -> np.ndarray:
        """Darknet's backward with the whole batch's sums (after a training forward; one Allreduce), or
        the local inference gradient (no communication); ``delta`` is the activated output's delta and
        the last forward's activation is differentiated in the same passes (as :meth:`Layer.backward`).
        ``scale_updates``/``bias_updates`` receive this process's contribution. A collective call after
        a training forward. See :meth:`Layer.backward` (``net_delta`` is written: one that is not native
        float32, aligned, C-contiguous and writable raises on every process, never copied)."""
        if not self._train:
            return super().backward(net_delta)
        c = self.c
        try:
            out, p_nd = self._take_net_delta(net_delta)
            p = self._p
            r, d = (p["r"], p["d"]) if self._renorm else (ffi.NULL, ffi.NULL)
            lib.dbn_backward_sums(
                self._p_x,
                self._p_delta,
                p["scales"],
                p["biases"],
                p["mean"],
                p["variance"],
                r,
                d,
                self.batch,
                c,
                self.h * self.w,
                self._p_lsum,
                self._cflavor,
                self._act,
                EXEC,
            )
            self._lsum[2 * c] = 0.0
            failure = None
        except (TypeError, ValueError) as e:
            self._lsum[:] = 0.0
            self._lsum[2 * c] = 1.0
            failure = e
        self._comm.Allreduce(self._lsum, self._gsum, op=MPI.SUM)
        if failure is not None:
            raise failure
        if self._gsum[2 * c] > 0:
            raise ValueError(f"backward: {int(self._gsum[2 * c])} other process(es) failed their argument checks")
        lib.dbn_backward_apply(
            self._p_x,
            self._p_delta,
            p_nd,
            p["scales"],
            p["biases"],
            p["mean"],
            p["variance"],
            r,
            d,
            self._p_lsum,
            self._p_gsum,
            self._global_count,
            p["scale_updates"],
            p["bias_updates"],
            p["mean_delta"],
            p["variance_delta"],
            self.batch,
            c,
            self.h * self.w,
            self._cflavor,
            self._act,
            EXEC,
        )
        return out

    def allreduce_updates(self, average: bool = False) -> None:
        """Replace ``scale_updates`` and ``bias_updates`` by their sum over the processes (or their mean
        with ``average=True``), summed in double. A collective call."""
        both = np.concatenate([self.scale_updates, self.bias_updates]).astype(np.float64)
        total = np.empty_like(both)
        self._comm.Allreduce(both, total, op=MPI.SUM)
        if average:
            total /= self._comm.Get_size()
        self.scale_updates[:] = total[: self.c]
        self.bias_updates[:] = total[self.c :]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", rank={self._comm.Get_rank()}/{self._comm.Get_size()})"


def make_sync_batchnorm_layer(
    batch: int,
    w: int,
    h: int,
    c: int,
    comm: Any,
    flavor: str | Flavor = "pjreddie",
    *,
    renorm: bool = False,
    rmax: float = 3.0,
    dmax: float = 5.0,
) -> SyncLayer:
    """:func:`~darknet_bn.make_batchnorm_layer` with the statistics synchronized over ``comm`` (an
    mpi4py communicator): ``batch`` is this process's slice. A collective call."""
    return SyncLayer(batch, w, h, c, comm, flavor, renorm=renorm, rmax=rmax, dmax=dmax)
