"""Helpers shared by the tests (fixtures live in conftest.py; float64 references in reference.py).

Imported by the test modules as ``from helpers import ...`` (pytest puts tests/ on sys.path); no test
module imports another.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from reference import binarize_weights, loop_conv, ref_bn, ref_bn_abs, ref_connected, ref_conv  # noqa: F401

from darknet_bn import bench, kernels
from darknet_bn._capi import lib
from darknet_bn.darknet import FoldReport, Network

DATA = Path(__file__).resolve().parent / "data" / "darknet"

SHAPES = [  # (batch, c, h, w)
    (1, 3, 5, 7),  # batch 1, spatial > 1
    (4, 1, 5, 7),  # one channel
    (16, 8, 1, 1),  # the MLP case: 1x1 spatial, batch > 1
    (3, 5, 7, 11),  # odd and prime sizes
    (2, 13, 17, 19),
    (1, 1, 1, 2),  # the smallest trainable: N = 2
    (256, 32, 1, 1),  # an MLP batch
    (2, 64, 9, 9),
    (5, 3, 31, 37),
]


def assert_close(actual, expected, rtol=1e-5, scale=None, name=""):
    """max |actual - expected| <= rtol * scale, with scale the largest |expected| (or given): an error
    relative to the data's scale, which is what float32 rounding gives."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape or actual.size == expected.size, (name, actual.shape, expected.shape)
    actual = actual.reshape(expected.shape)
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    scale = max(scale, np.finfo(np.float32).tiny)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{name}: NaN positions differ"
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} * scale {scale:.3g} (rel {err / scale:.3g})"


def make_data(shape, seed, offset=True):
    """float32 NCHW data with a different mean and spread per channel."""
    rng = np.random.default_rng(seed)
    b, c, h, w = shape
    x = rng.standard_normal(shape)
    if offset:
        x = x * rng.uniform(0.5, 3.0, size=(1, c, 1, 1)) + rng.uniform(-2, 2, size=(1, c, 1, 1))
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# The command line


def run_cli(argv, capsys):
    """``darknet-bn argv`` (each argument str()-ed) in this process: (exit code, stdout, stderr)."""
    from darknet_bn import cli

    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------
# Instruction sets

ISAS = ["baseline", "avx2", "avx512"]


def available_isas() -> list[str]:
    """The instruction sets this build offers on this CPU (``baseline`` at least)."""
    return [n for n in ISAS if kernels.ISAS[n] <= lib.dbn_isa_available()]


def skip_unless_isa(name: str) -> None:
    """Skip the calling test when ``name`` is not available here."""
    avail = lib.dbn_isa_available()
    if kernels.ISAS[name] > avail:
        best = [k for k, v in kernels.ISAS.items() if v == avail][0]
        pytest.skip(f"{name} is not available here (this build on this CPU offers up to {best})")


# ------------------------------------------------------------------------------------------------
# Bench peers


def _installed(peer: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in bench.PEER_MODULES.get(peer, ()))


def skip_unless_usable(peer: str) -> None:
    """Skip (with the reason) when the peer is not installed, or cannot load in this process."""
    if not _installed(peer):
        pytest.skip(f"{peer} is not installed ({bench.PEER_INSTALL[peer]})")
    if peer == "openvino" and "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip(
            "OpenVINO's TBB dlopens libtbbbind with RTLD_DEEPBIND, which the AddressSanitizer runtime "
            "rejects (google/sanitizers#611): not under the sanitizer stage"
        )


# ------------------------------------------------------------------------------------------------
# Folding: the checks of a folded network against the float64 references

CASES = Path(__file__).resolve().parent / "data" / "fold_cases"
F32_UNIT = 2.0**-24  # float32's unit roundoff
BN_NAMES = ("scales", "biases", "rolling_mean", "rolling_variance")


def geometry(lyr) -> dict:
    return dict(
        stride_x=lyr.stride_x or lyr.stride,
        stride_y=lyr.stride_y or lyr.stride,
        pad=lyr.pad,
        dilation=lyr.dilation or 1,
        groups=lyr.groups,
    )


def fill_random(net: Network, seed: int, *, rv_zero: float = 0.0) -> None:
    """Random parameters in every array of the network that its fork's .weights file holds (rolling
    variances >= 0, some exactly 0 with probability rv_zero; scales of both signs)."""
    rng = np.random.default_rng(seed)
    for lyr in net.layers:
        if lyr.extras.get("share_index") is not None:
            continue
        for host in [lyr] + list(lyr.parts.values()):
            for name in host.array_names():
                shape = host.array_shape(name)
                if name == "biases" and lyr.type == "batchnorm" and net.fork == "pjreddie":
                    continue  # not in pjreddie's files: always 0 (calloc) in its Darknet
                if name == "rolling_variance":
                    a = rng.uniform(0.05, 3.0, shape) * (rng.random(shape) >= rv_zero)
                elif name == "scales":
                    a = rng.uniform(0.3, 2.0, shape) * rng.choice([-1, 1], shape, p=[0.2, 0.8])
                elif name == "rolling_mean":
                    a = rng.normal(0, 2.0, shape)
                else:
                    a = rng.normal(0, 1.0, shape)
                host.arrays[name] = a.astype(np.float32)


def snapshot(net: Network) -> list:
    out = []
    for lyr in net.layers:
        out.append((lyr.index, lyr.type, lyr.batch_normalize))
        for pname, host in [(None, lyr)] + list(lyr.parts.items()):
            for name in sorted(host.arrays):
                out.append((lyr.index, pname, name, host.arrays[name].tobytes()))
    return out


def bn_params(host) -> dict:
    return {k: host.array(k) for k in BN_NAMES}


def chains(net: Network, report: FoldReport) -> dict:
    """(original index of the absorbing layer, part) -> [BN param dicts in order], from the report."""
    out: dict = {}
    for f in report.folded:
        lyr = net.layers[f.index]
        if f.type == "batchnorm":
            out.setdefault((f.into, None), {"own": None, "after": []})["after"].append(bn_params(lyr))
        elif f.into == f.index:
            host = lyr.parts[f.part] if f.part else lyr
            out.setdefault((f.index, f.part), {"own": None, "after": []})["own"] = bn_params(host)
    return out


def check_folded_layer(
    net: Network,
    folded: Network,
    report: FoldReport,
    flavor: str,
    key: tuple,
    chain: dict,
    rng: np.random.Generator,
    *,
    batch: int = 2,
    max_hw: int | None = None,
    binary: bool = False,
) -> None:
    """The original layer -> BN(s) equals the folded layer on random inputs (float64 references)."""
    index, part = key
    lyr = net.layers[index]
    host = lyr.parts[part] if part else lyr
    new = folded.layers[report.index_map[index]]
    nhost = new.parts[part] if part else new
    assert nhost.batch_normalize == 0 and not any(k in nhost.arrays for k in ("scales", "rolling_mean"))
    w0, b0 = host.array("weights"), host.array("biases")
    w1, b1 = nhost.array("weights"), nhost.array("biases")
    assert w1.dtype == np.float32 and b1.dtype == np.float32 and w1.shape == w0.shape
    kind = "conv" if host.type == "convolutional" else "connected"
    if kind == "conv":
        g = geometry(host)
        h, w = host.h, host.w
        oh, ow = host.out_h, host.out_w
        if max_hw is not None and (h > max_hw or w > max_hw):  # the same layer on a smaller image
            h, w = min(h, max_hw), min(w, max_hw)
            oh = (h + 2 * g["pad"] - host.size) // g["stride_y"] + 1
            ow = (w + 2 * g["pad"] - host.size) // g["stride_x"] + 1
        x = rng.normal(0, 1, (batch, host.c, h, w)) * rng.uniform(0.5, 2, (1, host.c, 1, 1)) + rng.uniform(
            -1, 1, (1, host.c, 1, 1)
        )
        x = x.astype(np.float32).astype(np.float64)
        if binary:
            x = np.where(x > 0, 1.0, -1.0)
        run = lambda xx, ww: ref_conv(xx, ww, out_h=oh, out_w=ow, **g)  # noqa: E731
        bshape = (1, -1, 1, 1)
    else:
        x = (rng.normal(0, 1, (batch, host.inputs)) + rng.uniform(-1, 1, (1, host.inputs))).astype(np.float32)
        x = x.astype(np.float64)
        run = ref_connected
        bshape = (1, -1)
    wa, wb = (binarize_weights(w0), binarize_weights(w1)) if binary else (w0, w1)
    # reference: the layer, then its own BN (whose biases are the layer's) or its biases, then the [batchnorm]s
    z = run(x, wa)
    mag = run(np.abs(x), np.abs(wa))
    if chain["own"] is not None:
        z, mag = ref_bn(z, chain["own"], flavor), ref_bn_abs(mag, chain["own"], flavor)
    else:
        z = z + np.asarray(b0, dtype=np.float64).reshape(bshape)
        mag = mag + np.abs(np.asarray(b0, dtype=np.float64)).reshape(bshape)
    for p in chain["after"]:
        z, mag = ref_bn(z, p, flavor), ref_bn_abs(mag, p, flavor)
    y = run(x, wb) + np.asarray(b1, dtype=np.float64).reshape(bshape)
    name = f"{net.name} layer {index}{'.' + part if part else ''} ({flavor})"
    # the criterion: within 1e-5 of the output's scale
    assert_close(y, z, rtol=1e-5, name=name)
    if not binary:
        # and elementwise: only the float32 rounding of w' and b' (|dw'| <= u|w'|, |db'| <= u|b'|), plus
        # float64 noise of both computations
        bound = F32_UNIT * 1.0001 * (run(np.abs(x), np.abs(w1)) + np.abs(np.asarray(b1, np.float64)).reshape(bshape))
        bound += 1e-12 * (mag + np.abs(z))
        err = np.abs(y - z)
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert np.all(err <= bound), f"{name}: error {err[worst]:.3g} > float32 rounding bound {bound[worst]:.3g}"


def check_fold(net: Network, folded: Network, report: FoldReport, flavor: str, seed: int = 0, **kw) -> int:
    """Every folded layer against the references; every other array unchanged. Returns the layers checked."""
    rng = np.random.default_rng(seed)
    ch = chains(net, report)
    for key, chain in ch.items():
        lyr = net.layers[key[0]]
        binary = lyr.type == "convolutional" and any(net.cfg.sections[key[0]].get_int(k, 0) for k in ("xnor", "binary"))
        check_folded_layer(net, folded, report, flavor, key, chain, rng, binary=binary, **kw)
    # the arrays of layers not folded are the original's, bit for bit; BN flags as before
    touched = {k[0] for k in ch}
    for lyr in net.layers:
        if lyr.index in report.removed:
            continue
        new = folded.layers[report.index_map[lyr.index]]
        assert new.type == lyr.type
        if lyr.index in touched or lyr.extras.get("share_index") is not None:
            continue
        assert new.batch_normalize == (0 if any(f.index == lyr.index for f in report.folded) else lyr.batch_normalize)
        for pname, host in [(None, lyr)] + list(lyr.parts.items()):
            nhost = new.parts[pname] if pname else new
            for name in nhost.array_names():
                if name in host.arrays:
                    assert np.array_equal(nhost.array(name).view(np.uint32), host.arrays[name].view(np.uint32)), (
                        lyr.index,
                        pname,
                        name,
                    )
    return len(ch)
