"""darknet_bn.torch.SyncBatchNorm over torch.distributed (gloo on 127.0.0.1), skipped without torch.

Two launches -- 2 and 3 processes of tests/torch_dist/worker.py, started as torchrun starts them --
run every case of the worker over one process group each; every rank checks its own slice against
the independent reference (torch.nn.functional.batch_norm, torch.nn.BatchNorm2d and a torch.nn CNN, in
float64, in one process, on the concatenated batch) and writes its results. Each test here is one
case on every rank. Then examples/torchrun_train.py under torchrun itself, and the single-process
behaviour in this process.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'darknet_bn[torch]')")
import torch.distributed as dist  # noqa: E402

import darknet_bn.torch as dbt  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "torch_dist"))
import worker  # noqa: E402
from launch import free_port, launch  # noqa: E402

if not (dist.is_available() and dist.is_gloo_available()):  # pragma: no cover - depends on the build
    pytest.skip("torch.distributed with gloo is not available in this torch build", allow_module_level=True)

CASES = list(worker.CASES)
F = torch.nn.functional


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def launched(request, tmp_path_factory):
    """Every case, run once on n processes: ({rank: {case: result}}, {rank: 'died' message}, [(rc, out, err)])."""
    n = request.param
    out = tmp_path_factory.mktemp(f"sync{n}")
    procs = launch(str(HERE / "torch_dist" / "worker.py"), n, [out], timeout=150)
    results, died = {}, {}
    for r in range(n):
        p = out / f"rank{r}.json"
        results[r] = json.loads(p.read_text()) if p.exists() else {}
        d = out / f"died{r}.txt"
        died[r] = d.read_text() if d.exists() else None
    return n, results, died, procs


def _diagnose(procs):
    return "\n".join(f"rank {r}: exit {rc}\n{err[-3000:]}" for r, (rc, _, err) in enumerate(procs))


@pytest.mark.parametrize("name", CASES)
def test_case_on_every_rank(launched, name):
    n, results, _, procs = launched
    for r in range(n):
        res = results[r].get(name)
        assert res is not None, (
            f"rank {r} of {n} did not report {name!r} (the ranks got out of step after an "
            f"earlier failure, or a rank crashed):\n{_diagnose(procs)}"
        )
        assert res == "ok", f"rank {r} of {n}, {name}:\n{res}"


def test_a_rank_that_dies_makes_the_others_raise(launched):
    """The last rank exits between two forwards: every other rank's next forward raises a RuntimeError
    (gloo sees the closed connection) instead of waiting; written by the worker after every case."""
    n, _, died, procs = launched
    for r in range(n - 1):
        assert died[r] is not None, f"rank {r} wrote nothing after the last rank died:\n{_diagnose(procs)}"
        assert died[r].startswith("ok"), f"rank {r}: {died[r]}"
    assert [rc for rc, _, _ in procs] == [0] * n, _diagnose(procs)


def test_torchrun_example(tmp_path):
    """examples/torchrun_train.py under torchrun (python -m torch.distributed.run), 2 processes."""
    script = HERE.parent / "examples" / "torchrun_train.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            str(script),
            "--steps",
            "4",
            "--batch",
            "12",
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "world 2: SyncBatchNorm x3, global batch 12 (slices [6, 6]), 4 steps", p.stdout
    losses = [float(line.split()[-1]) for line in lines if line.startswith("step ")]
    assert len(losses) == 4 and all(0 < v < 10 for v in losses), p.stdout
    assert "parameters and running statistics identical on all 2 processes: True" in lines, p.stdout
    # ours (2 processes, float32) is as close to the float64 single-process run as torch's float32 one is
    diff = [line for line in lines if line.startswith("max relative difference from one process on the whole batch")]
    assert len(diff) == 1, p.stdout
    ours, torch32 = map(
        float, re.fullmatch(r".*\(float64\): (\S+) \(torch.nn in float32, one process: (\S+)\)", diff[0]).groups()
    )
    assert ours <= 4 * torch32 + 1e-6, p.stdout
    assert lines[-1] == "done", p.stdout


# ------------------------------------------------------------------------------------------------
# One process, no process group: the class, the constructor, conversion, the plain behaviour


def test_constructor_matches_torch():
    ours = inspect.signature(dbt.SyncBatchNorm.__init__)
    theirs = inspect.signature(torch.nn.SyncBatchNorm.__init__)
    assert list(ours.parameters) == list(theirs.parameters)
    assert all(ours.parameters[k].default == theirs.parameters[k].default for k in ours.parameters)
    m = dbt.SyncBatchNorm(6, 1e-3, 0.2, True, True, "pg", bias=False)
    assert m.process_group == "pg" and m.bias is None and m.eps == 1e-3 and m.momentum == 0.2
    t = torch.nn.SyncBatchNorm(6, 1e-3, 0.2, bias=False)
    assert m.state_dict().keys() == t.state_dict().keys()
    assert isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, torch.nn.SyncBatchNorm)


def test_plain_without_process_group():
    """No process group initialized: training and eval are plain BN (no communication), equal to torch's."""
    assert not dist.is_initialized()
    torch.manual_seed(0)
    m = dbt.SyncBatchNorm(4, momentum=0.3)
    t = torch.nn.BatchNorm2d(4, momentum=0.3).double()
    for _ in range(2):
        x = (torch.randn(3, 4, 5, 5) * 2 + 1).requires_grad_(True)
        x64 = x.detach().double().requires_grad_(True)
        g = torch.randn(3, 4, 5, 5)
        (m(x) * g).sum().backward()
        (t(x64) * g.double()).sum().backward()
        torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.running_var.double(), t.running_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.weight.grad.double(), t.weight.grad, rtol=1e-4, atol=1e-4)
    m.eval(), t.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(m(x).double(), t(x.double()), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expected at least 2D input"):
        m(torch.randn(4))


def test_convert_without_process_group():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.SyncBatchNorm(3), dbt.BatchNorm2d(3)
    )
    w = net[1].weight
    net = dbt.SyncBatchNorm.convert_sync_batchnorm(net)
    assert [type(m) for m in net[1:]] == [dbt.SyncBatchNorm] * 3
    assert net[1].weight is w and net[1].process_group is None
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dbt.SyncBatchNorm.convert_sync_batchnorm("not a module")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_zero_channels_raise_as_torch(training):
    """num_features=0 without a process group: the ValueError torch.nn.SyncBatchNorm raises, in both modes."""
    x = torch.randn(2, 0, 3)
    with pytest.raises(ValueError) as theirs:
        torch.nn.SyncBatchNorm(0).train(training)(x)
    with pytest.raises(ValueError, match="number of input channels should be non-zero") as ours:
        dbt.SyncBatchNorm(0).train(training)(x)
    assert str(ours.value) == str(theirs.value)
