"""darknet_bn.torch under torch.compile: the custom operators (opcheck) and a compiled converted model
against eager (skipped when torch is not installed). torch.compile is slow: few compiled cases."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'darknet_bn[torch]')")

import darknet_bn.torch as dbt  # noqa: E402
from darknet_bn.torch import _ops  # noqa: E402

nn = torch.nn


def _samples():
    g = torch.Generator().manual_seed(0)
    out = []
    for shape, fmt in [
        ((4, 3, 5, 6), torch.contiguous_format),
        ((4, 3, 5, 6), torch.channels_last),
        ((16, 5), torch.contiguous_format),
    ]:
        x = (torch.randn(shape, generator=g) * 2 + 1).contiguous(memory_format=fmt).requires_grad_()
        c = shape[1]
        w = (torch.rand(c, generator=g) + 0.5).requires_grad_()
        b = torch.randn(c, generator=g).requires_grad_()
        rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
        out.append((x, w, b, rm, rv))
    return out


@pytest.mark.parametrize("i", range(3))
def test_opcheck(i):
    x, w, b, rm, rv = _samples()[i]
    torch.library.opcheck(_ops.batch_norm_train, (x, w, b, rm, rv, 0.1, 1e-5))
    torch.library.opcheck(_ops.batch_norm_train, (x, None, None, None, None, 0.1, 1e-5))
    torch.library.opcheck(_ops.batch_norm_infer, (x, w, b, rm, rv, 1e-5))
    g = torch.randn(x.shape).contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.contiguous_format)
    torch.library.opcheck(_ops.batch_norm_backward, (g, x.detach(), w.detach(), rm, rv, 1e-5, True))


def test_ops_match_torch():
    x, w, b, rm, rv = _samples()[1]
    rm2, rv2 = rm.clone(), rv.clone()
    out, mean, var, nrm, nrv = _ops.batch_norm_train(x, w, b, rm, rv, 0.1, 1e-5)
    ref = torch.nn.functional.batch_norm(x, rm2, rv2, w, b, True, 0.1, 1e-5)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(nrm, rm2), torch.testing.assert_close(nrv, rv2)
    assert not torch.equal(rm, rm2)  # functional: the inputs are not written
    assert out.stride() == ref.stride()


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 8)
        self.bn1 = nn.BatchNorm1d(8, affine=False)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = nn.functional.avg_pool2d(y, 2).flatten(1)
        return self.bn1(self.fc(y))


def test_compiled_model_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = dbt.convert(Small())
    comp_m = copy.deepcopy(eager)
    comp = torch.compile(comp_m, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    for _step in range(2):
        x = torch.randn(8, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
        gy = torch.randn(8, 8, generator=g)
        ys = []
        for m in (eager, comp):
            m.zero_grad()
            y = m(x)
            y.backward(gy)
            ys.append(y.detach())
        torch.testing.assert_close(ys[1], ys[0], rtol=1e-6, atol=1e-6)
        for (n, p), (_, q) in zip(eager.named_parameters(), comp_m.named_parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=n)  # fc.bias: ~0 (BN follows)
        for (n, p), (_, q) in zip(eager.named_buffers(), comp_m.named_buffers()):
            assert torch.equal(p, q), n  # the running statistics: the same C update
    eager.eval(), comp_m.eval()
    with torch.no_grad():
        x = torch.randn(8, 3, 8, 8, generator=g)
        torch.testing.assert_close(comp(x), eager(x), rtol=1e-6, atol=1e-6)
