"""darknet_bn.darknet (the builder and the model): the layers each fork builds from a cfg, against the
tables the real Darknet printed (tests/data/darknet/expected/tables/), every real cfg with both forks' rules,
the BN layers, and Darknet's crashes turned into DarknetCfgError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import DATA

from darknet_bn import Layer
from darknet_bn.darknet import BNLayer, DarknetCfgError, DarknetCfgWarning, Network, detect_fork, load_network

# Loading every shared cfg by each fork's rules reports the keys that fork ignores; the tests that check
# those warnings catch them with pytest.warns (which sees them regardless of this filter).
pytestmark = pytest.mark.filterwarnings("ignore::darknet_bn.DarknetCfgWarning")


TABLES = DATA / "expected" / "tables"
SIZE_FIELDS = ("w", "h", "c", "out_w", "out_h", "out_c")
FIELDS = ("index", "type", "batch_normalize") + SIZE_FIELDS + ("n", "size", "stride", "pad", "groups")


def read_table(path: Path):
    """(header dict, rows): the README's format, '-' -> None, extras key=value -> ints."""
    head, rows, ended = {}, [], False
    for line in path.read_text().splitlines():
        if line.startswith("# fork="):
            head = dict(kv.split("=", 1) for kv in line[2:].split())
        elif line.startswith("#END"):
            ended = line.split()[1] == "ok"
        elif line and not line.startswith("#"):
            t = line.split()
            row = {f: (None if v == "-" else v if f == "type" else int(v)) for f, v in zip(FIELDS, t)}
            row.update((k, int(v)) for k, v in (kv.split("=") for kv in t[len(FIELDS) :]))
            rows.append(row)
    assert ended, f"{path}: the table did not end with '#END ok'"
    return head, rows


def cfg_for(fork: str, name: str) -> Path:
    for sub in (fork, "oracle"):
        p = DATA / "cfg" / sub / f"{name}.cfg"
        if p.exists():
            return p
    raise FileNotFoundError(name)


TABLE_CASES = [(fork, p) for fork in ("pjreddie", "alexeyab") for p in sorted((TABLES / fork).glob("*.txt"))]


def test_table_data_is_there():
    assert len(TABLE_CASES) == 19


@pytest.mark.parametrize("fork,table", TABLE_CASES, ids=[f"{f}-{p.stem}" for f, p in TABLE_CASES])
def test_layers_equal_darknets_table(fork, table):
    """Field for field; a 0 Darknet prints for a size it never sets is not compared."""
    head, rows = read_table(table)
    cfg = cfg_for(fork, table.stem)
    assert head["cfg"] == cfg.name and head["fork"] == fork
    net = load_network(cfg, batch=int(head["net_batch"]), flavor=fork)
    assert (net.w, net.h, net.c, net.batch) == tuple(int(head[k]) for k in ("net_w", "net_h", "net_c", "net_batch"))
    assert len(net.layers) == len(rows) == int(head["n_layers"])
    compared = 0
    for row, layer in zip(rows, net.layers):
        got = layer.row()
        for key, want in row.items():
            if key in SIZE_FIELDS and want == 0:
                continue
            assert got[key] == want, (
                f"{table.name} layer {row['index']} ({row['type']}): {key} = {got[key]}, Darknet built {want}"
            )
            compared += 1
    assert compared >= 8 * len(rows)


def test_tables_cover_the_layer_types():
    types = {row["type"] for _, p in TABLE_CASES for row in read_table(p)[1]}
    assert types >= {
        "convolutional",
        "batchnorm",
        "connected",
        "maxpool",
        "route",
        "upsample",
        "yolo",
        "shortcut",
        "avgpool",
        "dropout",
        "softmax",
        "scale_channels",
        "region",
        "detection",
    }


# -- every real cfg, both forks ---------------------------------------------------------------------

CFGS = sorted((DATA / "cfg").rglob("*.cfg"))
# Where the fork's own parser fails on a cfg while building its layers (tests/data/darknet/README.md):
# AlexeyAB asserts on shortcuts between different sizes in the resnet family.
ALEXEYAB_SHORTCUT_ASSERTS = {
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50",
    "resnext101-32x4d",
    "resnext152-32x4d",
}


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab", "torch"])
def test_every_cfg_loads_or_raises_darknet_cfg_error(flavor):
    assert len(CFGS) >= 140
    loaded = failed = 0
    for p in CFGS:
        try:
            net = load_network(p, flavor=flavor)
        except DarknetCfgError as e:
            failed += 1
            assert e.file == str(p) and e.problem
            if "unknown section type" in e.problem:
                assert flavor == "pjreddie", (p, e)
            else:
                assert flavor != "pjreddie" and p.stem in ALEXEYAB_SHORTCUT_ASSERTS, (p, e)
                assert "shortcut" in str(e) and "assert" in str(e)
            continue
        loaded += 1
        assert net.layers and all(lyr.outputs >= 0 for lyr in net.layers)
        assert sum(s.count for s in net.weights_layout()) >= 0
    assert loaded >= 120 and failed == {"pjreddie": 7, "alexeyab": 12, "torch": 12}[flavor]


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152", "resnext152-32x4d"])
def test_alexeyab_shortcut_asserts_become_errors(name):
    with pytest.raises(DarknetCfgError) as e:
        load_network(DATA / "cfg" / "alexeyab" / f"{name}.cfg", flavor="alexeyab")
    assert "[shortcut]" in e.value.problem and e.value.line is not None
    # pjreddie's shortcut adds tensors of different sizes: its copies load
    assert load_network(DATA / "cfg" / "pjreddie" / f"{name}.cfg").layers


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm.train", "crnn.train", "rnn.train"])
def test_alexeyab_recurrent_cfgs_give_correct_results(name):
    """AlexeyAB's parser divides by zero on these after building the layers (no layer wider and
    taller than 1): the layers are returned, with a warning."""
    net = load_network(DATA / "cfg" / "alexeyab" / f"{name}.cfg", flavor="alexeyab")
    assert any("divides by zero" in w for w in net.warnings)
    rec = [lyr for lyr in net.layers if lyr.type in ("rnn", "gru", "lstm", "crnn")]
    assert rec and all(lyr.parts for lyr in rec)
    assert len(net.bn_layers) == sum(len(lyr.parts) for lyr in rec)


def test_alexeyab_rnn_sizes():
    net = load_network(DATA / "cfg" / "alexeyab" / "rnn.cfg", flavor="alexeyab")
    first = net.layers[0]
    assert (first.type, first.inputs, first.outputs, first.out_w, first.out_h, first.out_c) == (
        "rnn",
        256,
        1024,
        1,
        1,
        1024,
    )
    assert [(n, p.inputs, p.outputs) for n, p in first.parts.items()] == [
        ("input_layer", 256, 1024),
        ("self_layer", 1024, 1024),
        ("output_layer", 1024, 1024),
    ]
    bn = net.bn_layers[0]
    assert (bn.index, bn.type, bn.part, bn.shape) == (0, "rnn", "input_layer", (1, 1024, 1, 1))


def test_pjreddie_rnn_ignores_hidden_and_sets_no_sizes():
    net = load_network(DATA / "cfg" / "pjreddie" / "rnn.cfg")
    first = net.layers[0]
    assert (first.w, first.h, first.c, first.out_w, first.out_h, first.out_c) == (0,) * 6
    assert first.outputs == 1024
    assert any("'hidden'" in w for w in net.warnings)


def test_gru_and_lstm_part_orders():
    text = "[net]\ninputs=10\n[gru]\noutput=6\nbatch_normalize=1\n"
    gru = load_network(text).layers[0]
    assert list(gru.parts) == ["wz", "wr", "wh", "uz", "ur", "uh"]  # pjreddie's file order
    assert [(p.inputs, p.outputs) for p in gru.parts.values()] == [(6, 6)] * 3 + [(10, 6)] * 3
    assert [s.name for s in load_network(text).weights_layout()][:6] == [
        "wz.biases",
        "wz.weights",
        "wz.scales",
        "wz.rolling_mean",
        "wz.rolling_variance",
        "wr.biases",
    ]
    agru = load_network(DATA / "cfg" / "alexeyab" / "gru.cfg", flavor="alexeyab").layers[0]
    assert list(agru.parts)[:3] == ["input_z_layer", "input_r_layer", "input_h_layer"]
    lstm = load_network(DATA / "cfg" / "alexeyab" / "lstm.train.cfg", flavor="alexeyab").layers[0]
    assert list(lstm.parts) == ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"]


def test_crnn_parts_are_convolutions():
    net = load_network(DATA / "cfg" / "alexeyab" / "crnn.train.cfg", flavor="alexeyab")
    crnn = net.layers[1]
    assert crnn.type == "crnn" and (crnn.w, crnn.h, crnn.c, crnn.out_c) == (1, 1, 256, 1024)
    assert [(p.type, p.c, p.n, p.size) for p in crnn.parts.values()] == [
        ("convolutional", 256, 1024, 1),
        ("convolutional", 1024, 1024, 1),
        ("convolutional", 1024, 1024, 1),
    ]


# -- the BN layers -------------------------------------------------------------------------------


def test_bn_layers_of_bn_small():
    """tests/data/darknet/cfg/oracle/bn_small.cfg: conv+BN, [batchnorm], maxpool, connected+BN,
    [batchnorm] after a connected layer, connected (layers.tsv of the weights data)."""
    for flavor in ("pjreddie", "alexeyab", "torch"):
        net = load_network(DATA / "cfg" / "oracle" / "bn_small.cfg", batch=5, flavor=flavor)
        assert [(b.index, b.type, b.part, b.shape) for b in net.bn_layers] == [
            (0, "convolutional", None, (5, 4, 8, 8)),
            (1, "batchnorm", None, (5, 4, 8, 8)),
            (3, "connected", None, (5, 10, 1, 1)),
            (4, "batchnorm", None, (5, 10, 1, 1)),
        ]
        for b in net.bn_layers:
            lyr = b.layer
            assert isinstance(lyr, Layer) and (lyr.batch, lyr.c, lyr.h, lyr.w) == b.shape
            assert lyr.flavor.name == flavor
            assert b.layer is lyr


def test_bn_layers_without_weights_start_at_darknets_values():
    net = load_network(DATA / "cfg" / "oracle" / "bn_small.cfg")
    b = net.bn_layers[0]
    assert np.all(b.scales == 1) and np.all(b.biases == 0) and np.all(b.rolling_mean == 0)
    assert np.all(b.rolling_variance == 0)
    tnet = load_network(DATA / "cfg" / "oracle" / "bn_small.cfg", flavor="torch")
    assert np.all(tnet.bn_layers[0].layer.rolling_variance == 1)


def test_bn_layer_and_host_share_parameters(tmp_path):
    net = load_network(DATA / "cfg" / "oracle" / "bn_small.cfg")
    b = net.bn_layers[0]
    b.layer.scales[:] = [1, 2, 3, 4]
    assert np.array_equal(net.layers[0].arrays["scales"], [1, 2, 3, 4])
    assert np.array_equal(b.scales, [1, 2, 3, 4])


def test_count_of_bn_layers_in_real_networks():
    net = load_network(DATA / "cfg" / "pjreddie" / "yolov3.cfg")
    convs = [lyr for lyr in net.layers if lyr.type == "convolutional"]
    assert len(convs) == 75 and len(net.bn_layers) == 72
    assert all(b.type == "convolutional" for b in net.bn_layers)
    assert net.bn_layers[0].shape == (1, 32, 608, 608)
    xy = load_network(DATA / "cfg" / "oracle" / "xyolo.test.cfg")
    assert [b.type for b in xy.bn_layers].count("batchnorm") == 7


def test_batch_semantics():
    cfg = DATA / "cfg" / "pjreddie" / "darknet19_448.cfg"
    assert load_network(cfg, batch=8).bn_layers[0].batch == 8
    own = load_network(cfg, batch=None)
    assert own.batch == 128 // 4 and own.bn_layers[0].batch == 32  # batch=128, subdivisions=4
    rnn = load_network(DATA / "cfg" / "alexeyab" / "lstm.train.cfg", batch=None, flavor="alexeyab")
    assert rnn.time_steps == 576 and rnn.batch == 128 // 8 * 576 and rnn.bn_layers[0].batch == 16
    with pytest.raises(ValueError):
        load_network(cfg, batch=0)


def test_table_rows_have_darknets_fields():
    net = load_network(DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg", flavor="alexeyab")
    r = net.table()[0]
    assert r == {
        "index": 0,
        "type": "convolutional",
        "batch_normalize": 1,
        "w": 416,
        "h": 416,
        "c": 3,
        "out_w": 208,
        "out_h": 208,
        "out_c": 32,
        "n": 32,
        "size": 3,
        "stride": 2,
        "pad": 1,
        "groups": 1,
        "stride_x": 2,
        "stride_y": 2,
        "dilation": 1,
    }
    assert isinstance(net, Network) and isinstance(net.bn_layers[0], BNLayer)


# -- fork differences ----------------------------------------------------------------------------


def test_route_groups_only_in_alexeyab():
    """pjreddie ignores [route] groups=/group_id= and so mis-sizes yolov4-tiny."""
    cfg = DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg"
    ab = load_network(cfg, flavor="alexeyab").layers[3]
    pj = load_network(cfg, flavor="pjreddie").layers[3]
    assert (ab.type, ab.out_c, ab.c, ab.w) == ("route", 32, 32, 104)
    assert (pj.type, pj.out_c, pj.c, pj.w) == ("route", 64, 0, 0)


def test_dilation_and_stride_xy_only_in_alexeyab():
    text = (
        "[net]\nwidth=20\nheight=10\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\nstride_x=2\nstride_y=1\n"
        "dilation=2\n"
    )
    ab = load_network(text, flavor="alexeyab").layers[0]
    assert (ab.out_w, ab.out_h, ab.stride, ab.stride_x, ab.stride_y, ab.dilation) == (10, 10, 2, 2, 1, 2)
    pj = load_network(text, flavor="pjreddie").layers[0]
    assert (pj.out_w, pj.out_h, pj.stride, pj.stride_x) == (20, 10, 1, None)


def test_upsample_negative_stride_downsamples():
    text = "[net]\nwidth=12\nheight=8\nchannels=2\n[upsample]\nstride=-4\n[upsample]\n"
    a, b = load_network(text).layers
    assert (a.out_w, a.out_h, a.out_c) == (3, 2, 2) and (b.out_w, b.out_h) == (6, 4)


def test_maxpool_padding_and_depth():
    text = (
        "[net]\nwidth=13\nheight=13\nchannels=8\n[maxpool]\nsize=2\nstride=1\n[maxpool]\nmaxpool_depth=1\n"
        "out_channels=2\n"
    )
    a, b = load_network(text, flavor="alexeyab").layers
    assert (a.out_w, a.out_h) == (13, 13)  # (13 + 1 - 2)/1 + 1
    assert (b.out_w, b.out_h, b.out_c) == (13, 13, 2)


def test_antialiasing_gives_the_next_layer_the_blurred_size():
    text = (
        "[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\nstride=2\n"
        "antialiasing=1\n[convolutional]\nfilters=2\nsize=1\n"
    )
    a, b = load_network(text, flavor="alexeyab").layers
    assert (a.stride, a.out_w) == (1, 16) and (b.w, b.h, b.c) == (8, 8, 4)


def test_shared_convolution_has_no_arrays_in_the_file():
    text = (
        "[net]\nwidth=8\nheight=8\nchannels=4\n[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\n"
        "[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\nshare_index=-1\n"
    )
    net = load_network(text, flavor="alexeyab")
    assert net.layers[1].extras["share_index"] == 0
    assert {s.layer for s in net.weights_layout()} == {0}
    assert net.layers[1].arrays is net.layers[0].arrays


# -- Darknet's crashes and misreads become DarknetCfgError -----------------------------------------------

NET = "[net]\nwidth=8\nheight=8\nchannels=3\n"


@pytest.mark.parametrize(
    "body,flavor,words",
    [
        ("[convolutional]\nfilters=4\nstride=0\n", "pjreddie", "divides by zero"),
        ("[convolutional]\nfilters=4\ngroups=0\n", "pjreddie", "divides by zero"),
        ("[maxpool]\nstride=0\n", "alexeyab", "divides by zero"),
        ("[route]\nlayers=-1\n", "pjreddie", "not a layer before"),
        ("[convolutional]\nfilters=4\n[route]\nlayers=3\n", "alexeyab", "not a layer before"),
        ("[convolutional]\nfilters=4\n[route]\n", "alexeyab", "layers= is missing"),
        ("[convolutional]\nfilters=4\n[route]\nlayers=-1\ngroups=0\n", "alexeyab", "divides by zero"),
        ("[convolutional]\nfilters=4\n[shortcut]\n", "pjreddie", "from= is missing"),
        ("[convolutional]\nfilters=4\n[shortcut]\nfrom=-5\n", "alexeyab", "not a layer before"),
        ("[convolutional]\nfilters=4\nsize=3\n[shortcut]\nfrom=-2\n", "alexeyab", "not a layer before"),
        (
            "[convolutional]\nfilters=4\n[convolutional]\nfilters=4\nstride=2\n[shortcut]\nfrom=-2\n",
            "alexeyab",
            "assert",
        ),
        ("[convolutional]\nfilters=4\nsize=3\n[yolo]\nclasses=1\n", "pjreddie", "does not match"),
        ("[convolutional]\nfilters=4\nsize=3\n[region]\n", "alexeyab", "does not match"),
        ("[connected]\noutput=10\n[detection]\n", "pjreddie", "assert"),
        ("[connected]\noutput=10\n[softmax]\ngroups=3\n", "pjreddie", "does not divide"),
        ("[connected]\noutput=10\n[softmax]\n[convolutional]\nfilters=2\n", "pjreddie", "must output an image"),
        ("[convolutional]\nfilters=4\nsize=12\n", "pjreddie", "negative size"),
        ("[convolutional]\nfilters=4\nsize=9\nbatch_normalize=1\n", "pjreddie", "empty tensor"),
        ("[convolutional]\nfilters=65536\nsize=1\n[convolutional]\nfilters=65536\nsize=1\n", "pjreddie", "overflows"),
        ("[reorg]\nstride=0\n", "pjreddie", "divides by zero"),
        ("[convolutional]\nfilters=4\nsway=1\nrotate=1\nsize=3\n", "alexeyab", "only one of"),
        ("[convolutional]\nfilters=4\nshare_index=0\n", "alexeyab", "not a layer before"),
        ("[convolutional]\nfilters=4\n[convolutional]\nfilters=8\nshare_index=-1\n", "alexeyab", "share_index"),
        (
            "[convolutional]\nfilters=4\n[shortcut]\nfrom=-1\nweights_type=per_feature\n",
            "alexeyab",
            "weights_normalization",
        ),
        ("[convolutional]\nfilters=4\n[convolutional]\nfilters=2\n[sam]\nfrom=-2\n", "alexeyab", "assert"),
        (
            "[convolutional]\nfilters=4\n[avgpool]\n[convolutional]\nfilters=2\n[scale_channels]\nfrom=-3\n",
            "alexeyab",
            "assert",
        ),
        ("[contrastive]\n", "alexeyab", "yolo_layer"),
        ("[deconvolutional]\nfilters=2\n", "pjreddie", "not supported"),
    ],
)
def test_darknet_crashes_become_errors(body, flavor, words):
    with pytest.raises(DarknetCfgError) as e:
        load_network(NET + body, flavor=flavor)
    assert words in str(e.value), str(e.value)
    assert e.value.line is not None and e.value.line >= 5


def test_net_errors():
    with pytest.raises(DarknetCfgError, match="no input size"):
        load_network("[net]\nbatch=1\n[convolutional]\n")
    with pytest.raises(DarknetCfgError, match="divides by zero"):
        load_network("[net]\nsubdivisions=0\nwidth=1\nheight=1\nchannels=1\n[connected]\n")
    with pytest.raises(DarknetCfgError, match="no layers"):
        load_network("[net]\nwidth=1\nheight=1\nchannels=1\n")
    with pytest.raises(DarknetCfgError, match="steps= and scales="):
        load_network("[net]\nwidth=1\nheight=1\nchannels=1\npolicy=steps\nsteps=10\n[connected]\n")
    with pytest.raises(DarknetCfgError, match="batch of 0"):
        load_network("[net]\nbatch=1\nsubdivisions=2\nwidth=1\nheight=1\nchannels=1\n[connected]\n", batch=None)
    net = load_network(
        "[net]\nbatch=1\nsubdivisions=2\nwidth=1\nheight=1\nchannels=1\n[connected]\n", batch=None, flavor="alexeyab"
    )
    assert net.batch == 1  # AlexeyAB raises a batch below 1 to 1


def test_route_of_mismatched_sizes_has_no_output_size():
    text = NET + "[convolutional]\nfilters=4\nsize=1\n[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n"
    net = load_network(text)
    route = net.layers[2]
    assert (route.out_w, route.out_h, route.out_c, route.outputs) == (0, 0, 0, 4 * 4 * 4 + 8 * 8 * 4)
    assert any("differ in width or height" in w for w in net.warnings)


def test_route_trailing_comma_is_layer_zero():
    """atoi('') is 0: 'layers=-1,' routes the previous layer and layer 0, as Darknet does."""
    net = load_network(
        NET + "[convolutional]\nfilters=4\nsize=1\n[convolutional]\nfilters=2\nsize=1\n[route]\nlayers=-1,\n"
    )
    assert net.layers[2].input_layers == (1, 0) and net.layers[2].out_c == 6


# -- the default rules: detected from the cfg --------------------------------------------------------


def _compare(rows, net, skip=()):
    compared = 0
    for row, layer in zip(rows, net.layers):
        got = layer.row()
        for key, want in row.items():
            if (key in SIZE_FIELDS and want == 0) or (row["type"], key) in skip or key in skip:
                continue
            assert got[key] == want, (
                f"{net.name} layer {row['index']} ({row['type']}): {key} = {got[key]}, Darknet built {want}"
            )
            compared += 1
    return compared


AB_TABLES = sorted((TABLES / "alexeyab").glob("*.txt"))
PJ_TABLES = sorted((TABLES / "pjreddie").glob("*.txt"))


@pytest.mark.parametrize("table", AB_TABLES, ids=[p.stem for p in AB_TABLES])
def test_default_loading_gives_alexeyabs_tables(table):
    """No flavor, no fork: every AlexeyAB table of the shared data. A cfg with AlexeyAB-only content is
    read by AlexeyAB's rules and equals AlexeyAB's table field for field. A cfg with none is read by
    pjreddie's rules: it equals pjreddie's table (the data has one for each of them) and AlexeyAB's in
    every field pjreddie's layers have (not AlexeyAB's stride_x/stride_y/dilation, which must then be the
    plain stride and 1, nor the input size AlexeyAB's route stores and pjreddie's leaves 0)."""
    head, rows = read_table(table)
    cfg = cfg_for("alexeyab", table.stem)
    net = load_network(cfg, batch=int(head["net_batch"]))
    assert len(net.layers) == len(rows)
    if net.fork == "alexeyab":
        assert "AlexeyAB's rules, detected: line" in net.rules
        assert _compare(rows, net) >= 8 * len(rows)
        return
    assert table.stem in {"bn_small", "xyolo.test", "yolov3-tiny", "yolov3-tiny-mini"}, net.rules
    assert net.rules.startswith("pjreddie's rules, detected: no section")
    pj_head, pj_rows = read_table(TABLES / "pjreddie" / table.name)
    assert _compare(pj_rows, net) >= 8 * len(rows)
    assert _compare(
        rows, net, skip=("stride_x", "stride_y", "dilation", ("route", "w"), ("route", "h"), ("route", "c"))
    ) >= 8 * len(rows)
    for row in rows:
        if row["type"] == "convolutional":
            assert row["stride_x"] == row["stride_y"] == row["stride"] and row["dilation"] == 1


@pytest.mark.parametrize("table", PJ_TABLES, ids=[p.stem for p in PJ_TABLES])
def test_default_loading_gives_pjreddies_tables(table):
    head, rows = read_table(table)
    cfg = cfg_for("pjreddie", table.stem)
    net = load_network(cfg, batch=int(head["net_batch"]))
    assert net.fork == "pjreddie" and net.flavor.name == "pjreddie"
    assert _compare(rows, net) >= 8 * len(rows)


def test_yolov4_tiny_default_is_alexeyabs_route():
    """The issue's case: route layer 3 (groups=2, group_id=1) has Darknet's 32 channels by default."""
    net = load_network(DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg")
    assert net.fork == "alexeyab" and net.flavor.name == "alexeyab"
    assert "line 60: [route] groups=" in net.rules
    assert (net.layers[3].type, net.layers[3].out_c) == ("route", 32)
    # an explicit flavor still wins, with the ignored keys warned about
    with pytest.warns(DarknetCfgWarning) as rec:
        pj = load_network(DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg", flavor="pjreddie")
    assert pj.fork == "pjreddie" and pj.layers[3].out_c == 64 and "as asked (flavor 'pjreddie')" in pj.rules
    assert any(w.message.key == "groups" and w.message.line == 60 for w in rec)
    assert (
        load_network(DATA / "cfg" / "alexeyab" / "yolov4-tiny.cfg", fork="pjreddie", flavor="torch").fork == "pjreddie"
    )


def test_every_pjreddie_cfg_is_read_by_pjreddies_rules():
    cfgs = sorted((DATA / "cfg" / "pjreddie").glob("*.cfg"))
    assert len(cfgs) == 45
    for p in cfgs:
        assert detect_fork(p)[0] == "pjreddie", (p, detect_fork(p))


def _sizes(net):
    return [
        (lyr.type.replace("reorg_old", "reorg"), lyr.out_w, lyr.out_h, lyr.out_c, lyr.outputs) for lyr in net.layers
    ]


def test_alexeyab_cfgs_read_by_pjreddies_rules_build_alexeyabs_sizes():
    """Every AlexeyAB cfg the detection leaves to pjreddie's rules builds the same output sizes by both
    forks' rules (where both build it): nothing is lost by the default. The recurrent layers, whose
    sizes pjreddie's Darknet never sets, are compared by their outputs only."""
    cfgs = sorted((DATA / "cfg" / "alexeyab").rglob("*.cfg"))
    pj = [p for p in cfgs if detect_fork(p)[0] == "pjreddie"]
    assert 40 <= len(pj) < len(cfgs)
    both = 0
    for p in pj:
        try:
            a = load_network(p, fork="alexeyab")
        except DarknetCfgError:
            assert p.stem in ALEXEYAB_SHORTCUT_ASSERTS, p
            continue
        b = load_network(p)
        assert b.fork == "pjreddie"
        for la, lb in zip(_sizes(a), _sizes(b)):
            if la[0] in ("rnn", "gru", "lstm", "crnn"):
                la, lb = (la[0], la[4]), (lb[0], lb[4])
            assert la == lb, (p.name, la, lb)
        both += 1
    assert both >= 35


# -- recurrent layers: their own batch_normalize, and the inner layers' ------------------------------
# From make_rnn_layer, make_crnn_layer, make_gru_layer, make_lstm_layer (both forks' src/*_layer.c) and
# AlexeyAB's make_conv_lstm_layer: rnn and crnn never set l.batch_normalize (0); gru, lstm and
# conv_lstm set it to the cfg's batch_normalize; every inner layer gets it.

REC_NET = "[net]\nwidth=6\nheight=5\nchannels=2\n"
REC = {
    "rnn": "[rnn]\noutput=4\nhidden=3\nbatch_normalize=1\n",
    "gru": "[gru]\noutput=4\nbatch_normalize=1\n",
    "lstm": "[lstm]\noutput=4\nbatch_normalize=1\n",
    "crnn": "[crnn]\noutput=4\nhidden=3\noutput_filters=4\nhidden_filters=3\nbatch_normalize=1\npad=1\n",
    "conv_lstm": "[conv_lstm]\noutput=4\nbatch_normalize=1\npad=1\n",
}
REC_FLAG = {"rnn": 0, "crnn": 0, "gru": 1, "lstm": 1, "conv_lstm": 1}
REC_PARTS = {
    ("rnn", "pjreddie"): 3,
    ("rnn", "alexeyab"): 3,
    ("gru", "pjreddie"): 6,
    ("gru", "alexeyab"): 6,
    ("lstm", "pjreddie"): 8,
    ("lstm", "alexeyab"): 8,
    ("crnn", "pjreddie"): 3,
    ("crnn", "alexeyab"): 3,
    ("conv_lstm", "alexeyab"): 8,
}


@pytest.mark.parametrize("type_,fork", sorted(REC_PARTS))
def test_recurrent_batch_normalize_is_darknets(type_, fork):
    with pytest.warns(DarknetCfgWarning) if fork == "pjreddie" and type_ in ("rnn", "crnn") else _nothing():
        net = load_network(REC_NET + REC[type_], fork=fork)
    lyr = net.layers[0]
    assert lyr.type == type_ and lyr.batch_normalize == REC_FLAG[type_]
    assert lyr.row()["batch_normalize"] == REC_FLAG[type_]
    assert len(lyr.parts) == REC_PARTS[(type_, fork)]
    assert all(p.batch_normalize == 1 for p in lyr.parts.values())
    assert [(b.index, b.part) for b in net.bn_layers] == [(0, name) for name in lyr.parts]
    off = load_network(REC_NET + REC[type_].replace("batch_normalize=1", "batch_normalize=0"), fork=fork)
    assert off.layers[0].batch_normalize == 0 and not off.bn_layers


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_conv_lstm_sizes_and_weights_from_alexeyabs_source():
    """make_conv_lstm_layer: uf ui ug uo convolve the c input channels to output filters, wf wi wg wo
    the output filters to themselves (with bottleneck=1 only wf, from 2*output), vf vi vo only with
    peephole=1; the outer layer keeps the input size, out_w/out_h of uo, out_c = output; load_weights
    reads [vf vi vo] wf [wi wg wo] uf ui ug uo, each as a convolution (biases, BN arrays, weights)."""
    text = "[net]\nwidth=9\nheight=7\nchannels=3\n[conv_lstm]\noutput=5\nsize=3\npad=1\nbatch_normalize=1\n"
    net = load_network(text)
    assert net.fork == "alexeyab" and "section [conv_lstm]" in net.rules
    lyr = net.layers[0]
    assert (lyr.w, lyr.h, lyr.c, lyr.out_w, lyr.out_h, lyr.out_c) == (9, 7, 3, 9, 7, 5)
    assert (lyr.inputs, lyr.outputs) == (9 * 7 * 3, 9 * 7 * 5)
    assert list(lyr.parts) == ["uf", "ui", "ug", "uo", "wf", "wi", "wg", "wo"]
    assert [(p.c, p.n, p.size, p.pad) for p in lyr.parts.values()] == [(3, 5, 3, 1)] * 4 + [(5, 5, 3, 1)] * 4
    names = [s.name for s in net.weights_layout()]
    assert names[:5] == ["wf.biases", "wf.scales", "wf.rolling_mean", "wf.rolling_variance", "wf.weights"]
    assert [n.split(".")[0] for n in names[::5]] == ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"]
    assert sum(s.count for s in net.weights_layout()) == 4 * (5 * 4 + 5 * 3 * 9) + 4 * (5 * 4 + 5 * 5 * 9)
    peep = load_network(text + "peephole=1\nbottleneck=1\n").layers[0]
    assert list(peep.parts) == ["uf", "ui", "ug", "uo", "wf", "vf", "vi", "vo"]
    assert peep.parts["wf"].c == 10
    assert [s.name.split(".")[0] for s in load_network(text + "peephole=1\nbottleneck=1\n").weights_layout()][::5] == [
        "vf",
        "vi",
        "vo",
        "wf",
        "uf",
        "ui",
        "ug",
        "uo",
    ]
