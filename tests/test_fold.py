"""darknet_bn.darknet.fold: batch normalization folded into convolutional and connected weights.

The proof is numerical and independent of fold.py: a float64 reference convolution (Darknet's
im2col semantics: stride x/y, padding, dilation, groups; direct per-offset sums) and a reference
connected layer written here from the math, and inference BN written here from the flavors'
documented denominators. For every BN that was folded -- in the oracle cfgs with the real Darknet's
.weights files, the fold cases in tests/data/fold_cases/, a selection of the public cfgs, and random
layers (hypothesis) -- layer -> BN (-> [batchnorm] ...) on random inputs equals the folded layer within
float32 rounding: 1e-5 of the output's scale (the issue's criterion), and elementwise within the bound
float32 rounding of the folded weights and biases allows. Then: folding twice changes nothing, the
written cfg + weights load back bit for bit, the original network is untouched, every reason a BN is
left in place, and the ``darknet-bn fold`` command.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import (  # noqa: F401
    BN_NAMES,
    CASES,
    DATA,
    F32_UNIT,
    assert_close,
    bn_params,
    chains,
    check_fold,
    check_folded_layer,
    fill_random,
    geometry,
    run_cli,
    snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import binarize_weights, loop_conv, ref_bn, ref_bn_abs, ref_connected, ref_conv, ref_denominator  # noqa: F401

from darknet_bn import Layer, cli
from darknet_bn.cli.fold import cmd_fold
from darknet_bn.darknet import (
    DarknetCfgError,
    DarknetCfgWarning,
    DarknetWeightsError,
    FoldedBN,
    FoldReport,
    Network,
    WeightsHeader,
    bn_affine,
    fold_files,
    fold_network,
    fork_of,
    inference_denominator,
    load_network,
    save_folded,
    seen_bytes,
)
from darknet_bn.flavors import torch_flavor

# Loading every shared cfg by each fork's rules reports the keys that fork ignores; the tests that check
# those warnings catch them with pytest.warns (which sees them regardless of this filter).
pytestmark = pytest.mark.filterwarnings("ignore::darknet_bn.DarknetCfgWarning")


ORACLE = DATA / "cfg" / "oracle"
EXPECTED_W = DATA / "expected" / "weights"
FLAVORS = ("pjreddie", "alexeyab", "torch")


def check_structure(net: Network, folded: Network, report: FoldReport) -> None:
    """The folded network: the original's layers minus the removed [batchnorm]s, same sizes, BN off
    where folded, references mapped; its .weights layout: the original's minus the folded BN arrays."""
    assert len(folded.layers) == len(net.layers) - len(report.removed)
    folded_idx = {(f.index, f.part) for f in report.folded}
    kept_idx = {(k.index, k.part) for k in report.kept}
    assert not folded_idx & kept_idx
    assert {(b.index, b.part) for b in net.bn_layers} == folded_idx | kept_idx
    assert sorted((report.index_map[k.index], k.part or "") for k in report.kept) == sorted(
        (b.index, b.part or "") for b in folded.bn_layers
    )
    for lyr in net.layers:
        if lyr.index in report.removed:
            assert lyr.type == "batchnorm"
            continue
        new = folded.layers[report.index_map[lyr.index]]
        a, b = lyr.row(), new.row()
        a.pop("index"), b.pop("index")
        if (lyr.index, None) in folded_idx or any((lyr.index, p) in folded_idx for p in lyr.parts):
            a["batch_normalize"] = 0
        assert a == b, (lyr.index, a, b)
        assert new.input_layers == tuple(report.index_map[i] for i in lyr.input_layers)
        emb = lyr.extras.get("embedding_layer")
        if emb is not None:
            assert new.extras["embedding_layer"] == report.index_map[emb]
        src = lyr.extras.get("share_index")
        if src is not None:
            assert new.extras["share_index"] == report.index_map[src]
            assert new.arrays is folded.layers[report.index_map[src]].arrays
    want = [
        (report.index_map[s.layer], s.layer_type, s.name, s.count)
        for s in net.weights_layout(write=True)
        if s.layer not in report.removed
        and not (
            s.name.split(".")[-1] in ("scales", "rolling_mean", "rolling_variance")
            and (s.layer, s.name.split(".")[0] if "." in s.name else None) in folded_idx
        )
    ]
    got = [(s.layer, s.layer_type, s.name, s.count) for s in folded.weights_layout(write=True)]
    assert got == want


def roundtrip(folded: Network, report: FoldReport, flavor: str, tmp_path: Path) -> Network:
    """Write the folded files, load them back: same arrays bit for bit, byte-identical re-save."""
    cfg, weights = tmp_path / "folded.cfg", tmp_path / "folded.weights"
    nbytes = save_folded(folded, report, cfg, weights)
    assert weights.stat().st_size == nbytes == folded.weights_bytes()
    assert cfg.read_bytes() == report.cfg_text.encode("latin-1")
    back = load_network(cfg, weights, flavor=flavor, batch=folded.batch if folded.time_steps == 1 else None)
    assert back.table() == folded.table()
    for a, b in zip(folded.layers, back.layers):
        for pname, ha in [(None, a)] + list(a.parts.items()):
            hb = b.parts[pname] if pname else b
            for name in ha.array_names():
                if name in ha.arrays or name in hb.arrays:
                    assert np.array_equal(ha.array(name).view(np.uint32), hb.array(name).view(np.uint32)), (
                        a.index,
                        pname,
                        name,
                    )
    again = tmp_path / "again.weights"
    back.save_weights(again)
    assert again.read_bytes() == weights.read_bytes()
    return back


def fold_and_check_all(net: Network, flavor: str, tmp_path: Path, seed: int = 0, **kw) -> tuple:
    before = snapshot(net)
    folded, report = fold_network(net)
    assert snapshot(net) == before, "the original network changed"
    assert report.flavor.name == flavor
    check_structure(net, folded, report)
    n = check_fold(net, folded, report, flavor, seed, **kw)
    roundtrip(folded, report, flavor, tmp_path)
    # folding the folded network changes nothing
    twice, r2 = fold_network(folded)
    assert r2.folded == () and r2.removed == () and r2.cfg_text == report.cfg_text and r2.comments_kept
    assert [(k.index, k.type, k.part) for k in r2.kept] == [(k.new_index, k.type, k.part) for k in report.kept]
    assert snapshot(twice) == snapshot(folded)
    return folded, report, n


# ================================================================================================
# The references themselves

CONV_GEOMS = [  # (c, n, k, stride_x, stride_y, pad, dilation, groups, h, w)
    (3, 4, 3, 1, 1, 1, 1, 1, 5, 6),
    (4, 6, 3, 2, 2, 1, 1, 2, 7, 5),
    (4, 4, 3, 1, 2, 1, 1, 4, 6, 6),
    (2, 3, 3, 1, 1, 1, 2, 1, 7, 7),
    (3, 2, 1, 2, 1, 0, 1, 1, 5, 4),
    (6, 6, 2, 1, 1, 1, 1, 3, 4, 5),
    (2, 2, 5, 3, 2, 2, 1, 1, 8, 7),
    (4, 2, 3, 2, 1, 1, 3, 2, 9, 8),
]


def _out(h, k, s, pad):
    return (h + 2 * pad - k) // s + 1


@pytest.mark.parametrize("geom", CONV_GEOMS)
def test_reference_conv_equals_loops(geom):
    c, n, k, sx, sy, pad, d, groups, h, w = geom
    rng = np.random.default_rng(1)
    x, wt = rng.normal(size=(2, c, h, w)), rng.normal(size=(n, c // groups, k, k))
    kw = dict(
        stride_x=sx,
        stride_y=sy,
        pad=pad,
        dilation=d,
        groups=groups,
        out_h=_out(h, k, sy, pad),
        out_w=_out(w, k, sx, pad),
    )
    np.testing.assert_allclose(ref_conv(x, wt, **kw), loop_conv(x, wt, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geom", CONV_GEOMS)
def test_reference_conv_equals_torch(geom):
    """Where Darknet's output size is PyTorch's (always but for even kernels with dilation), the same
    numbers as torch.nn.functional.conv2d in float64 with padding pad*dilation."""
    torch = pytest.importorskip("torch")
    c, n, k, sx, sy, pad, d, groups, h, w = geom
    rng = np.random.default_rng(2)
    x, wt = rng.normal(size=(2, c, h, w)), rng.normal(size=(n, c // groups, k, k))
    t = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(wt), stride=(sy, sx), padding=pad * d, dilation=d, groups=groups
    ).numpy()
    oh, ow = _out(h, k, sy, pad), _out(w, k, sx, pad)
    assert t.shape[2:] == (oh, ow)
    got = ref_conv(x, wt, stride_x=sx, stride_y=sy, pad=pad, dilation=d, groups=groups, out_h=oh, out_w=ow)
    np.testing.assert_allclose(got, t, rtol=1e-12, atol=1e-12)


def test_inference_denominator_uses_the_flavor_fields():
    rv = np.array([0.0, 1e-7, 0.25, 1.0, 7.5], dtype=np.float32)
    for fl in FLAVORS:
        np.testing.assert_array_equal(inference_denominator(rv, fl), ref_denominator(rv, fl))
    custom = torch_flavor(eps=1e-3)
    np.testing.assert_array_equal(inference_denominator(rv, custom), np.sqrt(rv.astype(np.float64) + 1e-3))
    a, c = bn_affine(np.float32([2, -1]), np.float32([0.5, 1]), np.float32([1, 3]), np.float32([4, 0]), "pjreddie")
    eps = float(np.float32(1e-6))
    np.testing.assert_array_equal(a, [2 / (2 + eps), -1 / eps])
    np.testing.assert_array_equal(c, [0.5 - 2 / (2 + eps) * 1, 1 + 3 / eps])
    with pytest.raises(ValueError, match="differ in size"):
        bn_affine([1, 2], [0], [0], [1], "torch")


# ================================================================================================
# The oracle cfgs with the real Darknet's .weights files


def _weight_cases():
    cases = []
    for fork_dir in sorted(p for p in EXPECTED_W.iterdir() if p.is_dir()):
        for case in sorted(p for p in fork_dir.iterdir() if (p / f"{p.name}.weights").exists()):
            cfg = ORACLE / f"{case.name}.cfg"
            has_bn_section = "[batchnorm]" in cfg.read_text()
            for fl in FLAVORS:  # the file's fork; the other fork too where both lay the file out the same
                if fork_of(fl) == fork_dir.name or not has_bn_section:
                    cases.append((fork_dir.name, case.name, fl))
    return cases


WEIGHT_CASES = _weight_cases()


def test_the_weight_files_are_there():
    assert {(f, c) for f, c, _ in WEIGHT_CASES} >= {
        ("pjreddie", "bn_small"),
        ("alexeyab", "bn_small"),
        ("pjreddie", "yolov3-tiny-mini"),
    }


@pytest.mark.parametrize("fork,name,flavor", WEIGHT_CASES, ids=["-".join(c) for c in WEIGHT_CASES])
def test_oracle_cfgs_with_darknets_weights(fork, name, flavor, tmp_path):
    net = load_network(ORACLE / f"{name}.cfg", EXPECTED_W / fork / name / f"{name}.weights", flavor=flavor)
    # the arrays are Darknet's own (as the file lists them)
    arrays = EXPECTED_W / fork / name / "arrays"
    for bn in net.bn_layers:
        for k in ("scales", "rolling_mean", "rolling_variance"):
            f = arrays / f"L{bn.index:03d}_{bn.type}_{k}.f32"
            assert np.array_equal(getattr(bn, k), np.fromfile(f, dtype="<f4"))
    folded, report, n = fold_and_check_all(net, flavor, tmp_path)
    conv_conn = [b for b in net.bn_layers if b.type != "batchnorm"]
    assert n == len(conv_conn) and len(report.folded) == len(conv_conn)
    if name == "bn_small":  # both [batchnorm] follow a leaky layer: left in place
        assert [(k.index, k.type) for k in report.kept] == [(1, "batchnorm"), (4, "batchnorm")]
        assert all("activation=leaky, not linear" in k.reason for k in report.kept)
        assert report.comments_kept and report.cfg_text.startswith("# Written for the oracle")
        assert report.cfg_text == (ORACLE / "bn_small.cfg").read_text().replace("batch_normalize=1\n", "")
    else:
        assert report.kept == ()
        assert folded.bn_layers == [] and "batch_normalize" not in report.cfg_text


@pytest.mark.parametrize("fork,name,flavor", WEIGHT_CASES, ids=["-".join(c) for c in WEIGHT_CASES])
def test_oracle_cfgs_against_darknet_bn_layer(fork, name, flavor):
    """The same through darknet_bn's own float32 inference BN: for every folded layer, Layer.forward(conv
    output, train=False) -- the BN the folded weights replace -- equals the folded layer's output."""
    net = load_network(ORACLE / f"{name}.cfg", EXPECTED_W / fork / name / f"{name}.weights", flavor=flavor)
    folded, report = fold_network(net)
    rng = np.random.default_rng(5)
    batch = 2
    for bn in net.bn_layers:
        if bn.type == "batchnorm":
            continue
        lyr, new = net.layers[bn.index], folded.layers[report.index_map[bn.index]]
        if lyr.type == "convolutional":
            x = rng.normal(size=(batch, lyr.c, lyr.h, lyr.w)).astype(np.float32)
            kw = dict(out_h=lyr.out_h, out_w=lyr.out_w, **geometry(lyr))
            z = ref_conv(x, lyr.weights, **kw).astype(np.float32)
            got = ref_conv(x, new.weights, **kw) + new.biases.reshape(1, -1, 1, 1)
        else:
            x = rng.normal(size=(batch, lyr.inputs)).astype(np.float32)
            z = ref_connected(x, lyr.weights).astype(np.float32)
            got = ref_connected(x, new.weights) + new.biases
        layer = Layer(batch, bn.w, bn.h, bn.c, flavor)
        for k in BN_NAMES:
            getattr(layer, k)[:] = getattr(bn, k)
        want = layer.forward(np.ascontiguousarray(z), train=False).astype(np.float64)
        assert_close(got, want.reshape(got.shape), rtol=1e-5, name=f"{name} layer {bn.index} ({flavor})")


# ================================================================================================
# The oracle cfgs with random parameters, the fold cases, a selection of public cfgs

ORACLE_RANDOM = [
    (name, fl) for name in ("bn_small", "xyolo.test", "yolov3-tiny-mini", "yolov4-tiny-mini") for fl in FLAVORS
]


@pytest.mark.parametrize("name,flavor", ORACLE_RANDOM, ids=["-".join(c) for c in ORACLE_RANDOM])
def test_oracle_cfgs_random_parameters(name, flavor, tmp_path):
    net = load_network(ORACLE / f"{name}.cfg", flavor=flavor)
    fill_random(net, seed=len(name), rv_zero=0.1)
    folded, report, n = fold_and_check_all(net, flavor, tmp_path, max_hw=24)
    assert n == len([b for b in net.bn_layers if b.type != "batchnorm"])
    if name == "xyolo.test":  # six [batchnorm] after a maxpool, one after a leaky convolution
        reasons = [k.reason for k in report.kept]
        assert sum("is a maxpool layer" in r for r in reasons) == 6
        assert sum("activation=leaky" in r for r in reasons) == 1


def _case(name, flavor):
    return load_network(CASES / f"{name}.cfg", flavor=flavor)


FOLD_CASES = [(name, fl) for name in ("chain", "crlf", "recurrent", "crnn") for fl in FLAVORS] + [
    ("alexeyab", "alexeyab"),
    ("alexeyab", "torch"),
]


@pytest.mark.parametrize("name,flavor", FOLD_CASES, ids=["-".join(c) for c in FOLD_CASES])
def test_fold_cases(name, flavor, tmp_path):
    net = _case(name, flavor)
    fill_random(net, seed=7, rv_zero=0.15)
    folded, report, n = fold_and_check_all(net, flavor, tmp_path)
    assert report.comments_kept
    text = (CASES / f"{name}.cfg").read_bytes().decode("latin-1")
    if name == "chain":
        assert report.removed == (1, 2, 4, 14, 16)
        assert report.index_map == (0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 11, 11)
        assert [(k.index, k.type) for k in report.kept] == [(6, "batchnorm"), (10, "batchnorm")]
        assert "activation=leaky, not linear" in report.kept[0].reason
        assert "also read by layer(s) 12" in report.kept[1].reason
        assert folded.layers[5].input_layers == (4, 1, 0)
        # chain.folded.cfg (checked by hand): the batch_normalize lines and the merged sections (header
        # and the blank line after it) go, the [route] is renumbered with its spacing; all else is kept
        assert report.cfg_text == (CASES / "chain.folded.cfg").read_text()
        gone = Counter(text.splitlines()) - Counter(report.cfg_text.splitlines())
        added = Counter(report.cfg_text.splitlines()) - Counter(text.splitlines())
        assert gone == {
            "[batchnorm]": 5,
            "": 3,
            "batch_normalize=1": 4,
            "batch_normalize = 1": 1,
            "layers = -1, 4,-6": 1,
        }
        assert added == {"layers = -1, 1,-5": 1}
    elif name == "crlf":
        assert "\r\n" in report.cfg_text and "\n" not in report.cfg_text.replace("\r\n", "")
        assert "layers = -3 ,  1\r\n" in report.cfg_text
        assert report.cfg_text == text.replace("[batchnorm]\r\n\r\n", "").replace("batch_normalize=1\r\n", "").replace(
            "layers = - 4 ,  2", "layers = -3 ,  1"
        )
    elif name == "alexeyab":
        assert report.removed == (1, 3, 11)
        assert [(k.index, k.type) for k in report.kept] == [(7, "batchnorm"), (9, "batchnorm")]
        assert "shares the weights of layer 5" in report.kept[0].reason
        assert "antialiasing=1" in report.kept[1].reason
        gone = Counter(text.splitlines()) - Counter(report.cfg_text.splitlines())
        added = Counter(report.cfg_text.splitlines()) - Counter(text.splitlines())
        assert gone == {
            "batch_normalize=1": 6,
            "cbn=1": 1,
            "[batchnorm]": 3,
            "": 3,
            "share_index=5": 1,
            "layers=-1,-3": 1,
        }
        assert added == {"share_index=3": 1, "layers=-1,-2": 1}
        assert "from=-2, -3\n" in report.cfg_text  # layers 12 and 11 (now 9 and 8): the same offsets
        assert [f for f in report.folded if f.index == 6] == [FoldedBN(6, "convolutional", None, 5, 3)]
    elif name in ("recurrent", "crnn"):
        assert report.kept == () and folded.bn_layers == []
        assert "batch_normalize=" not in report.cfg_text
        parts = [f for f in report.folded if f.part]
        assert len(parts) == sum(len(lyr.parts) for lyr in net.layers)


PUBLIC = [
    ("pjreddie", "yolov3-tiny"),
    ("pjreddie", "tiny"),
    ("pjreddie", "rnn"),
    ("pjreddie", "gru"),
    ("alexeyab", "yolov4-tiny"),
    ("alexeyab", "efficientnet_b0"),
    ("alexeyab", "yolov1/xyolo.test"),
    ("alexeyab", "tiny-yolo_xnor"),
    ("alexeyab", "crnn.train"),
    ("alexeyab", "lstm.train"),
    ("alexeyab", "enet-coco"),
    ("alexeyab", "yolov3-tiny-prn"),
]


@pytest.mark.parametrize("fork,name", PUBLIC, ids=["-".join(c) for c in PUBLIC])
def test_public_cfgs(fork, name, tmp_path):
    """Real topologies (groups, depthwise, [scale_channels], [route] groups, xnor, recurrent layers,
    standalone [batchnorm]) with random parameters; the numbers on images of at most 12x12."""
    net = load_network(DATA / "cfg" / fork / f"{name}.cfg", flavor=fork)
    fill_random(net, seed=3)
    fold_and_check_all(net, fork, tmp_path, max_hw=12, batch=1)


def test_share_index_in_a_public_cfg(tmp_path):
    """AlexeyAB's resnet152_trident shares weights (and BN) between branches: folded together."""
    net = load_network(DATA / "cfg" / "alexeyab" / "resnet152_trident.cfg", flavor="alexeyab")
    folded, report = fold_network(net)
    sharers = [lyr for lyr in net.layers if lyr.extras.get("share_index") is not None]
    assert len(sharers) > 10 and report.kept == ()
    for lyr in sharers:
        assert any(f.index == lyr.index and f.into == lyr.extras["share_index"] for f in report.folded)
    check_structure(net, folded, report)


# ================================================================================================
# Random layers


@st.composite
def conv_cases(draw):
    fork = draw(st.sampled_from(["pjreddie", "alexeyab"]))
    groups = draw(st.integers(1, 4))
    cg, ng = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        cg, ng = 1, 1
    c, n = cg * groups, ng * groups
    size = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    pad_mode = draw(st.sampled_from(["pad", "padding"]))
    padding = draw(st.integers(0, 2))
    h, w = draw(st.integers(size, 9)), draw(st.integers(size, 9))
    opts = [f"filters={n}", f"size={size}", f"groups={groups}"]
    opts.append("pad=1" if pad_mode == "pad" else f"padding={padding}")
    if fork == "alexeyab":
        sx, sy = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        opts += [f"stride_x={sx}", f"stride_y={sy}"]
        if size % 2 == 1 and pad_mode == "pad":  # where Darknet's output size and its im2col agree
            opts.append(f"dilation={draw(st.integers(1, 3))}")
    else:
        opts.append(f"stride={stride}")
    bn = draw(st.booleans())
    after = draw(st.integers(0 if bn else 1, 2))  # [batchnorm] sections after it
    if bn:
        opts.append("batch_normalize=1")
    opts.append(f"activation={'linear' if after else draw(st.sampled_from(['linear', 'leaky']))}")
    text = f"[net]\nbatch=2\nwidth={w}\nheight={h}\nchannels={c}\n\n[convolutional]\n" + "\n".join(opts) + "\n"
    text += "\n[batchnorm]\n" * after
    flavor = draw(st.sampled_from([f for f in FLAVORS if fork_of(f) == fork]))
    return text, flavor, draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from([0.0, 0.3]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_random_convolutions(case, tmp_path_factory):
    text, flavor, seed, rv_zero = case
    net = load_network(text, flavor=flavor)
    fill_random(net, seed, rv_zero=rv_zero)
    folded, report, n = fold_and_check_all(net, flavor, tmp_path_factory.mktemp("conv"), seed=seed)
    assert n == 1 and report.kept == () and len(folded.layers) == 1


@st.composite
def connected_cases(draw):
    flavor = draw(st.sampled_from(FLAVORS))
    inputs, outputs = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    bn = draw(st.booleans())
    after = draw(st.integers(0 if bn else 1, 2))
    text = (
        f"[net]\nbatch=3\ninputs={inputs}\n\n[connected]\noutput={outputs}\n"
        + ("batch_normalize=1\n" if bn else "")
        + "activation=linear\n"
        + "\n[batchnorm]\n" * after
    )
    return text, flavor, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=connected_cases())
def test_random_connected_layers(case, tmp_path_factory):
    """Also through a file whose connected weights are stored transposed (major > 1000): the folded file
    keeps that header and stores the folded weights transposed too."""
    text, flavor, seed, transposed = case
    tmp = tmp_path_factory.mktemp("conn")
    net = load_network(text, flavor=flavor)
    fill_random(net, seed, rv_zero=0.2)
    if transposed:
        src = tmp / "t.weights"
        net.save_weights(src, header=WeightsHeader(1001, 2, 0, seen=5, seen_size=seen_bytes(1001, 2, net.fork)))
        net2 = load_network(text, src, flavor=flavor)
        assert net2.header.transpose
        for a, b in zip(net.layers, net2.layers):
            for k in a.arrays:
                assert np.array_equal(a.arrays[k], b.arrays[k])
        net = net2
    folded, report, n = fold_and_check_all(net, flavor, tmp, seed=seed)
    assert n == 1 and len(folded.layers) == 1
    out = tmp / "f.weights"
    folded.save_weights(out)
    lyr = folded.layers[0]
    raw = np.fromfile(out, dtype="<f4", offset=folded.header.nbytes if folded.header else 20)
    assert raw.size == lyr.outputs * (lyr.inputs + 1)
    stored = raw[lyr.outputs :].reshape((lyr.inputs, lyr.outputs) if transposed else (lyr.outputs, lyr.inputs))
    assert np.array_equal(stored.T if transposed else stored, lyr.weights)
    assert folded.header == net.header


# ================================================================================================
# What is left in place, and why


def _one(text, flavor="pjreddie", arrays=None, seed=0):
    """A network from cfg text with random parameters, some of them set: arrays {(layer, name): values}."""
    net = load_network(text, flavor=flavor)
    fill_random(net, seed)
    for (i, name), v in (arrays or {}).items():
        net.layers[i].arrays[name] = np.asarray(v, dtype=np.float32).reshape(net.layers[i].array_shape(name))
    return net


CONV = "[net]\nbatch=1\nwidth=5\nheight=4\nchannels=2\n\n[convolutional]\nfilters=3\nsize=3\npad=1\n"


@pytest.mark.parametrize(
    "extra,flavor,reason",
    [
        ("dontload=1\n", "pjreddie", "dontload=1"),
        ("dontloadscales=1\n", "alexeyab", "dontloadscales=1"),
        ("numload=2\n", "pjreddie", "numload=2"),
        ("dontsave=1\n", "pjreddie", "dontsave=1"),
        ("sway=1\n", "alexeyab", "sway=1: its weights are tied across filters"),
    ],
)
def test_kept_options(extra, flavor, reason, tmp_path):
    net = _one(CONV + "batch_normalize=1\nactivation=linear\n" + extra + "\n[batchnorm]\n", flavor)
    before = snapshot(net)
    folded, report = fold_network(net)
    assert snapshot(net) == before
    assert [(k.index, k.type) for k in report.kept] == [(0, "convolutional"), (1, "batchnorm")]
    assert reason in report.kept[0].reason
    assert "is left in place" in report.kept[1].reason
    assert report.folded == () and report.cfg_text.count("batch_normalize=1") == 1
    assert snapshot(folded) == before


def _keep_reason(net):
    folded, report = fold_network(net)
    assert report.folded == () or all(f.index != 0 for f in report.folded)
    return [k.reason for k in report.kept]


def test_kept_numbers():
    bn = CONV + "batch_normalize=1\nactivation=linear\n"
    # alexeyab: rolling_variance + 1e-5 <= 0; pjreddie: a negative variance (NaN)
    r = _keep_reason(_one(bn, "alexeyab", {(0, "rolling_variance"): [1.0, -float(np.float32(1e-5)), 2.0]}))
    assert "rolling_variance[1]" in r[0] and "not a positive finite number" in r[0]
    r = _keep_reason(_one(bn, "pjreddie", {(0, "rolling_variance"): [1.0, 1.0, -0.5]}))
    assert "rolling_variance[2] = -0.5" in r[0]
    # pjreddie: variance 0 -> s = 1e-6 -> a huge factor: overflow
    r = _keep_reason(_one(bn, "pjreddie", {(0, "rolling_variance"): [0, 0, 0], (0, "scales"): [1e38, 1, 1]}))
    assert "channel 0 overflow float32" in r[0]
    r = _keep_reason(_one(bn, "torch", {(0, "scales"): [1, np.nan, 1]}))
    assert "non-finite" in r[0]
    # but a zero variance with ordinary values folds (pjreddie: s = 1e-6 exactly as Darknet divides)
    net = _one(bn, "pjreddie", {(0, "rolling_variance"): [0, 1, 0]})
    folded, report = fold_network(net)
    assert report.kept == ()
    check_fold(net, folded, report, "pjreddie")


def test_kept_binary_sign():
    """xnor: binarization commutes with a per-filter factor, but not a negative one on a zero weight."""
    text = CONV + "batch_normalize=1\nxnor=1\nactivation=linear\n"
    w = np.random.default_rng(0).normal(size=(3, 2, 3, 3))
    w[1, 0, 1, 1] = 0.0
    net = _one(text, "alexeyab", {(0, "weights"): w, (0, "scales"): [1, -1, 1]})
    r = _keep_reason(net)
    assert "channel 1 has a negative factor and a weight equal to 0" in r[0]
    net = _one(text, "alexeyab", {(0, "weights"): w, (0, "scales"): [-1, 1, 1]})
    folded, report = fold_network(net)
    assert report.kept == ()
    check_fold(net, folded, report, "alexeyab")


@pytest.mark.parametrize(
    "text,reason",
    [
        ("[net]\nbatch=1\nwidth=4\nheight=4\nchannels=2\n\n[batchnorm]\n", "there is no layer before it"),
        (
            CONV + "activation=linear\n\n[maxpool]\nsize=2\nstride=2\n\n[batchnorm]\n",
            "layer 1 before it is a maxpool layer, not convolutional or connected",
        ),
        (CONV + "\n[batchnorm]\n", "layer 0 before it has activation=logistic, not linear"),  # Darknet's default
        (CONV + "activation=relu\n\n[batchnorm]\n", "layer 0 before it has activation=relu, not linear"),
        (CONV + "activation=linear\n\n[route]\nlayers=-1\n\n[batchnorm]\n", "layer 1 before it is a route layer"),
        (
            CONV + "activation=linear\n\n[batchnorm]\n\n[route]\nlayers=0\n",
            "the output of layer 0 before it is also read by layer(s) 2",
        ),
        (
            CONV + "activation=linear\n\n[batchnorm]\n\n[batchnorm]\n\n[route]\nlayers=-2\n",
            "the output of layer 1 before it is also read by layer(s) 3",
        ),
    ],
)
def test_kept_batchnorm_sections(text, reason):
    net = _one(text)
    folded, report = fold_network(net)
    assert any(reason in k.reason for k in report.kept), report.summary()
    check_structure(net, folded, report)
    check_fold(net, folded, report, "pjreddie")


@pytest.mark.parametrize(
    "bn0,bn1,reason",
    [
        (1, 0, "layer 1 shares its weights (share_index) without batch normalization"),
        (0, 1, "it shares the weights of layer 0, which has no batch normalization"),
    ],
)
def test_kept_share_index_mismatch(bn0, bn1, reason):
    text = (
        f"[net]\nbatch=1\nwidth=5\nheight=5\nchannels=3\n\n[convolutional]\nbatch_normalize={bn0}\nfilters=3\n"
        f"size=1\nactivation=linear\n\n[convolutional]\nbatch_normalize={bn1}\nshare_index=0\nfilters=3\nsize=1\n"
        "activation=linear\n"
    )
    net = _one(text, "alexeyab")
    folded, report = fold_network(net)
    assert report.folded == () and [k.reason for k in report.kept] == [reason]
    assert snapshot(folded) == snapshot(net)


def test_flipped_convolution(tmp_path):
    """flipped=1: the file holds the filters transposed; folding works on Darknet's memory layout and the
    folded file is flipped too."""
    net = _one(CONV + "batch_normalize=1\nflipped=1\nactivation=leaky\n", "pjreddie")
    src = tmp_path / "flipped.weights"
    net.save_weights(src)
    net = load_network(CONV + "batch_normalize=1\nflipped=1\nactivation=leaky\n", src)
    folded, report, n = fold_and_check_all(net, "pjreddie", tmp_path)
    assert n == 1 and "flipped=1" in report.cfg_text
    out = tmp_path / "f.weights"
    folded.save_weights(out)
    raw = np.fromfile(out, dtype="<f4", offset=20)
    assert np.array_equal(raw[3:].reshape(18, 3).T, folded.layers[0].weights.reshape(3, 18))


def test_recurrent_all_or_nothing():
    net = _one("[net]\nbatch=1\ninputs=4\n\n[gru]\nbatch_normalize=1\noutput=3\n", "alexeyab")
    net.layers[0].parts["state_h_layer"].arrays["rolling_variance"][1] = -1.0
    folded, report = fold_network(net)
    assert report.folded == () and len(report.kept) == 6
    assert all("state_h_layer cannot be folded" in k.reason for k in report.kept)
    assert "batch_normalize=1" in report.cfg_text and len(folded.bn_layers) == 6


# ================================================================================================
# API details


def test_original_network_untouched_even_without_weights():
    """Without weights the original's missing arrays are not created by folding."""
    net = load_network(CASES / "chain.cfg", flavor="torch")
    keys = [sorted(lyr.arrays) for lyr in net.layers]
    folded, report = fold_network(net)
    assert [sorted(lyr.arrays) for lyr in net.layers] == keys
    assert len(report.folded) == 10
    assert folded.header is None


def test_cfg_text_sources(tmp_path):
    text = (CASES / "chain.cfg").read_text()
    net = load_network(text, flavor="pjreddie")  # from text: no file to read the comments from
    folded, report = fold_network(net)
    assert not report.comments_kept and "#" not in report.cfg_text and "note:" in report.summary()
    assert load_network(report.cfg_text, flavor="pjreddie").table() == folded.table()
    folded2, report2 = fold_network(net, cfg_text=text)
    assert report2.comments_kept and report2.cfg_text == fold_network(_case("chain", "pjreddie"))[1].cfg_text
    with pytest.raises(ValueError, match="not the cfg this network was built from"):
        fold_network(net, cfg_text=text.replace("filters=6", "filters=5", 1))
    with pytest.raises(TypeError, match="cfg_text"):
        fold_network(net, cfg_text=3)


def test_bad_arguments():
    net = _case("crlf", "pjreddie")
    with pytest.raises(TypeError, match="expected a darknet_bn Network"):
        fold_network("crlf.cfg")
    with pytest.raises(ValueError, match="load it with that flavor"):
        fold_network(net, flavor="torch")
    with pytest.raises(ValueError, match="flavor"):
        fold_network(net, flavor="nope")
    net_ab = _case("crlf", "alexeyab")
    folded, report = fold_network(net_ab, flavor=torch_flavor(eps=1e-3))  # same fork: allowed
    assert report.flavor.eps == 1e-3 and folded.flavor is report.flavor


def test_summary_text():
    net = _case("chain", "pjreddie")
    fill_random(net, 1)
    _, report = fold_network(net)
    s = report.summary().splitlines()
    assert s[0] == (
        "folded 10 of 12 BN layers (4 convolutional, 5 [batchnorm] merged, 1 connected) with the "
        "pjreddie flavor, s = sqrt(rolling_variance) + 1e-06"
    )
    assert s[1].startswith("removed 5 [batchnorm] section(s): layers 1, 2, 4, 14, 16")
    assert s[2] == "kept layer 6 batchnorm: layer 5 before it has activation=leaky, not linear"


# ================================================================================================
# darknet-bn fold

run = run_cli


def test_cli_folds_and_writes(tmp_path, capsys):
    src = EXPECTED_W / "pjreddie" / "yolov3-tiny-mini"
    out_cfg, out_w = tmp_path / "f.cfg", tmp_path / "f.weights"
    code, out, err = run(
        [
            "fold",
            ORACLE / "yolov3-tiny-mini.cfg",
            src / "yolov3-tiny-mini.weights",
            "--out-cfg",
            out_cfg,
            "--out-weights",
            out_w,
        ],
        capsys,
    )
    assert code == 0, err
    assert out.startswith("folded 11 of 11 BN layers (11 convolutional) with the pjreddie flavor")
    assert f"wrote {out_cfg} and {out_w}" in out
    net = load_network(ORACLE / "yolov3-tiny-mini.cfg", src / "yolov3-tiny-mini.weights")
    folded, report = fold_network(net)
    assert out_cfg.read_text() == report.cfg_text
    ref = tmp_path / "ref.weights"
    folded.save_weights(ref)
    assert out_w.read_bytes() == ref.read_bytes()
    # a plain network: per convolution biases then weights, nothing else
    back = load_network(out_cfg, out_w)
    assert back.bn_layers == [] and {s.name for s in back.weights_layout()} == {"biases", "weights"}


def test_cli_flavors(tmp_path, capsys):
    src = EXPECTED_W / "alexeyab" / "bn_small" / "bn_small.weights"
    outs = {}
    for fl in ("alexeyab", "torch"):
        code, out, err = run(
            [
                "fold",
                ORACLE / "bn_small.cfg",
                src,
                "--out-cfg",
                tmp_path / f"{fl}.cfg",
                "--out-weights",
                tmp_path / f"{fl}.weights",
                "--flavor",
                fl,
            ],
            capsys,
        )
        assert code == 0, err
        assert "s = sqrt(rolling_variance + 1e-05)" in out and "kept layer 1 batchnorm" in out
        outs[fl] = tmp_path / f"{fl}.weights"
    # the same denominator formula; eps 1e-5 rounded to float32 (alexeyab) or not (torch)
    a, b = (np.fromfile(outs[f], dtype="<f4", offset=20) for f in ("alexeyab", "torch"))
    assert a.shape == b.shape and np.max(np.abs(a - b) / (np.abs(a) + 1e-30)) < 1e-5
    code, out, err = run(
        [
            "fold",
            ORACLE / "bn_small.cfg",
            src,
            "--out-cfg",
            tmp_path / "p.cfg",
            "--out-weights",
            tmp_path / "p.weights",
            "--flavor",
            "pjreddie",
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "bn_small.weights" in err  # pjreddie's layout: no [batchnorm] biases


@pytest.mark.parametrize(
    "what",
    [
        "missing cfg",
        "missing weights",
        "bad cfg",
        "short weights",
        "overwrite input",
        "same outputs",
        "unwritable output",
    ],
)
def test_cli_errors(what, tmp_path, capsys):
    cfg = ORACLE / "bn_small.cfg"
    weights = EXPECTED_W / "pjreddie" / "bn_small" / "bn_small.weights"
    out_cfg, out_w = tmp_path / "o.cfg", tmp_path / "o.weights"
    if what == "missing cfg":
        cfg = tmp_path / "nope.cfg"
    elif what == "missing weights":
        weights = tmp_path / "nope.weights"
    elif what == "bad cfg":
        cfg = tmp_path / "bad.cfg"
        cfg.write_text("[net]\nwidth=4\nheight=4\nchannels=1\n\n[convolutional]\nfilters\n")
    elif what == "short weights":
        weights = tmp_path / "short.weights"
        weights.write_bytes((EXPECTED_W / "pjreddie" / "bn_small" / "bn_small.weights").read_bytes()[:100])
    elif what == "overwrite input":
        local = tmp_path / "in.cfg"
        local.write_bytes(cfg.read_bytes())
        cfg, out_cfg = local, local
    elif what == "same outputs":
        out_w = out_cfg
    elif what == "unwritable output":
        out_w = tmp_path / "no such dir" / "o.weights"
    before = cfg.read_bytes() if cfg.exists() else None
    code, out, err = run(["fold", cfg, weights, "--out-cfg", out_cfg, "--out-weights", out_w], capsys)
    assert code == 2 and out == ""
    assert err.startswith("darknet-bn: error: ") and err.count("\n") == 1, err
    if what.startswith("missing"):
        assert f"cannot read {weights if what == 'missing weights' else cfg}: No such file" in err
    if what == "unwritable output":
        assert f"cannot write {out_w}" in err
    if what != "overwrite input":
        assert not out_w.exists() and (not out_cfg.exists() or what == "same outputs")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if before is not None:
        assert cfg.read_bytes() == before


def test_cli_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["fold", "a.cfg", "b.weights", "--out-cfg", "x.cfg"])
    assert e.value.code == 2
    assert "--out-weights" in capsys.readouterr().err


def test_fold_files_verifies(tmp_path):
    report = fold_files(
        CASES / "crlf.cfg", _weights_for(tmp_path, "crlf", "pjreddie"), tmp_path / "o.cfg", tmp_path / "o.weights"
    )
    assert report.removed == (2,) and (tmp_path / "o.cfg").read_bytes() == report.cfg_text.encode("latin-1")
    assert cmd_fold is not None


def _weights_for(tmp_path, name, flavor):
    net = _case(name, flavor)
    fill_random(net, 11)
    p = tmp_path / f"{name}.weights"
    net.save_weights(p)
    return p


def test_cfg_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=4\n")
    with pytest.raises(DarknetCfgError):
        fold_files(bad, tmp_path / "w", tmp_path / "a", tmp_path / "b")


# -- the default rules: detected from the cfg (AlexeyAB-only content -> AlexeyAB's rules and flavor) ----


def _random_weights(cfg, path, fork):
    net = load_network(cfg, fork=fork)
    rng = np.random.default_rng(7)
    for lyr in net.layers:
        for host in [lyr] + list(lyr.parts.values()):
            for name in host.array_names():
                a = rng.standard_normal(host.array_shape(name)).astype(np.float32)
                host.arrays[name] = np.abs(a) + 0.5 if name == "rolling_variance" else a
    net.save_weights(path)


def test_fold_files_default_rules_follow_the_cfg(tmp_path):
    cfg = ORACLE / "yolov4-tiny-mini.cfg"  # [route] groups=/group_id=: AlexeyAB's
    w = tmp_path / "m.weights"
    _random_weights(cfg, w, "alexeyab")
    report = fold_files(cfg, w, tmp_path / "f.cfg", tmp_path / "f.weights")
    assert report.flavor.name == "alexeyab"
    back = load_network(tmp_path / "f.cfg", tmp_path / "f.weights")
    assert back.fork == "alexeyab" and back.layers[3].out_c == load_network(cfg).layers[3].out_c == 2
    # an explicit flavor still wins: pjreddie's rules mis-size the route (as pjreddie's Darknet does), so
    # the convolutions after it need more weights than the file has
    with pytest.warns(DarknetCfgWarning, match="groups"):
        with pytest.raises(DarknetWeightsError):
            fold_files(cfg, w, tmp_path / "g.cfg", tmp_path / "g.weights", flavor="pjreddie")


def test_cli_fold_says_the_rules_and_lists_ignored_keys(tmp_path, capsys):
    cfg = tmp_path / "m.cfg"
    cfg.write_text((ORACLE / "yolov4-tiny-mini.cfg").read_text().replace("[net]\n", "[net]\nfoo_bar=3\n", 1))
    w = tmp_path / "m.weights"
    _random_weights(cfg, w, "alexeyab")
    code, out, err = run(
        ["fold", cfg, w, "--out-cfg", tmp_path / "f.cfg", "--out-weights", tmp_path / "f.weights"], capsys
    )
    assert code == 0, err
    assert "with the alexeyab flavor" in out and "AlexeyAB's rules, detected: line 61: [route] groups=" in out
    assert f"ignored: {cfg}:2: [net] foo_bar=3:" in out and "DarknetCfgWarning" not in err
