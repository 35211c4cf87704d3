"""Synchronized BN over MPI: tests/mpi/sync_worker.py under `mpiexec -n P` (P = 2, 3) checks every flavor,
equal and unequal slices, the MLP case, renormalization, identical statistics on every process, and
that a mismatched layer or a bad input raises on every process instead of hanging."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'darknet_bn[mpi]')")

WORKER = Path(__file__).resolve().parent / "mpi" / "sync_worker.py"


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich gives one)")
@pytest.mark.parametrize("procs", [2, 3])
def test_sync_batchnorm_equals_one_process(procs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    r = subprocess.run(
        [_mpiexec(), "-n", str(procs), sys.executable, str(WORKER)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"OK 36 checks on {procs} processes" in r.stdout


def test_single_process_communicator():
    """With one process, the synchronized layer is the ordinary layer."""
    import numpy as np

    from darknet_bn import make_batchnorm_layer
    from darknet_bn.distributed import MPI, make_sync_batchnorm_layer

    comm = MPI.COMM_SELF
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    a, b = make_sync_batchnorm_layer(4, 5, 5, 3, comm, "torch"), make_batchnorm_layer(4, 5, 5, 3, "torch")
    assert np.allclose(a.forward(x), b.forward(x), atol=1e-6)
    a.delta[:] = b.delta[:] = 1.0
    a.delta[0] = b.delta[0] = -2.0
    assert np.allclose(a.backward(), b.backward(), atol=1e-6)
    with pytest.raises(TypeError, match="comm"):
        make_sync_batchnorm_layer(4, 5, 5, 3, "not a comm")
    with pytest.raises(ValueError, match="batch"):
        make_sync_batchnorm_layer(0, 5, 5, 3, comm)
