"""darknet_bn.cfg: Darknet's cfg reading rules (read_cfg, read_option, strip, option_find, atoi), the
errors where Darknet crashes or misbehaves, warnings, path-or-text, and random text (hypothesis)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA
from darknet_bn.cfg import (CfgFile, DarknetCfgError, c_atof, c_atoi, fork_of, known_keys, parse_cfg,
                            parse_cfg_file, parse_cfg_text, section_type)
from darknet_bn.network import load_network

NET = "[net]\nbatch=1\nwidth=8\nheight=8\nchannels=3\n"


def parse(text: str, flavor: str = "pjreddie", name: str = "t.cfg") -> CfgFile:
    return parse_cfg_text(text, name, flavor=flavor)


# -- lines, whitespace, comments ---------------------------------------------------------------------

def test_whitespace_inside_a_line_is_removed():
    c = parse(NET + "[convolutional]\nfil ters = 3 2\n\tsize\t=\t3  \nactivation = leaky\n")
    (conv,) = c.sections
    assert [(o.key, o.value) for o in conv.options] == [("filters", "32"), ("size", "3"), ("activation", "leaky")]
    assert conv.get_int("filters", 1) == 32


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab"])
def test_windows_line_endings(flavor):
    text = (NET + "[convolutional]\nfilters=16\nsize=3\n\n[maxpool]\nsize=2\nstride=2\n").replace("\n", "\r\n")
    c = parse(text, flavor)
    assert [s.header for s in c.sections] == ["[convolutional]", "[maxpool]"]
    assert c.sections[0].get_str("filters") == "16"
    net = load_network(text, flavor=flavor)
    assert [(lyr.type, lyr.out_w, lyr.out_c) for lyr in net.layers] == [("convolutional", 6, 16), ("maxpool", 3, 16)]


def test_comments_and_empty_lines_are_skipped():
    c = parse("# a comment\n; another\n\n   \n" + NET + "#filters=9\n[conv]\n  # indented comment\n;x=1\nfilters=4\n")
    assert c.net.get_int("width", 0) == 8
    assert [(o.key, o.value) for o in c.sections[0].options] == [("filters", "4")]
    assert c.sections[0].line == 11 and c.sections[0].options[0].line == 14


def test_hash_after_a_value_is_not_a_comment():
    """Darknet has no end-of-line comments: the text stays in the value and atoi stops at it."""
    c = parse(NET + "[conv]\nfilters=40#32\n")
    assert c.sections[0].get_str("filters") == "40#32"
    assert c.sections[0].get_int("filters", 1) == 40
    assert any("filters='40#32' is read as 40" in w for w in c.warnings)


def test_value_splits_at_the_first_equals():
    c = parse(NET + "[conv]\nactivation=a=b\n")
    assert c.sections[0].get_str("activation") == "a=b"


def test_nul_ends_a_line():
    c = parse(NET + "[conv]\nfilters=4\0junk\n")
    assert c.sections[0].get_str("filters") == "4"


def test_bytes_are_read_byte_for_byte():
    c = parse_cfg((NET + "[conv]\nfilters=4\n").encode())
    assert c.sections[0].get_int("filters", 1) == 4


# -- keys ----------------------------------------------------------------------------------------

def test_first_occurrence_of_a_duplicate_key_wins_and_the_rest_warn():
    c = parse(NET + "[convolutional]\nfilters=16\nsize=3\nfilters=32\n")
    assert c.sections[0].get_int("filters", 1) == 16
    warns = [w for w in c.warnings if "repeats the key" in w]
    assert len(warns) == 1 and "t.cfg:9:" in warns[0] and "line 7" in warns[0]
    assert load_network(NET + "[convolutional]\nfilters=16\nsize=3\nfilters=32\n").layers[0].n == 16


def test_duplicate_net_keys_in_real_cfgs():
    """yolov3-openimages.cfg sets batch=1 then batch=64 in [net]: Darknet takes the first (1), the
    second is a warning."""
    path = DATA / "cfg" / "pjreddie" / "yolov3-openimages.cfg"
    lines = [ln.replace(" ", "") for ln in path.read_text().splitlines()]
    batches = [ln for ln in lines if ln.startswith("batch=")]
    assert len(batches) == 2 and batches[0] != batches[1]
    c = parse_cfg(path)
    assert c.net.get_int("batch", 0) == int(batches[0].split("=")[1])
    assert sum("repeats the key" in w and f"{batches[1]} " in w for w in c.warnings) == 1


@pytest.mark.parametrize("flavor,key,known", [
    ("pjreddie", "dilation", False), ("alexeyab", "dilation", True),
    ("pjreddie", "stride_x", False), ("alexeyab", "stride_x", True),
    ("pjreddie", "groups", True), ("alexeyab", "share_index", True),
    ("pjreddie", "dontloadscales", True), ("alexeyab", "dontloadscales", True),
    ("pjreddie", "nonsense", False), ("alexeyab", "nonsense", False),
])
def test_unknown_keys_are_warnings(flavor, key, known):
    c = parse(NET + f"[convolutional]\nfilters=4\n{key}=1\n", flavor)
    warned = any(f"does not read '{key}'" in w for w in c.warnings)
    assert warned == (not known)
    if not known:
        w = next(w for w in c.warnings if f"'{key}'" in w)
        assert w.startswith("t.cfg:8:")


def test_route_groups_are_unknown_to_pjreddie():
    c = parse(NET + "[conv]\nfilters=4\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", "pjreddie")
    assert sum("does not read" in w for w in c.warnings) == 2
    assert known_keys("route", "alexeyab") >= {"layers", "groups", "group_id"}


# -- sections ------------------------------------------------------------------------------------

@pytest.mark.parametrize("header,fork,type_", [
    ("[conv]", "pjreddie", "convolutional"), ("[convolutional]", "alexeyab", "convolutional"),
    ("[net]", "pjreddie", "network"), ("[network]", "alexeyab", "network"), ("[conn]", "pjreddie", "connected"),
    ("[max]", "alexeyab", "maxpool"), ("[avg]", "pjreddie", "avgpool"), ("[soft]", "alexeyab", "softmax"),
    ("[lrn]", "pjreddie", "normalization"), ("[reorg]", "pjreddie", "reorg"), ("[reorg]", "alexeyab", "reorg_old"),
    ("[reorg3d]", "alexeyab", "reorg"), ("[reorg3d]", "pjreddie", None), ("[sam]", "pjreddie", None),
    ("[Gaussian_yolo]", "alexeyab", "gaussian_yolo"), ("[gaussian_yolo]", "alexeyab", None),
    ("[local_avg]", "alexeyab", "local_avgpool"), ("[silence]", "alexeyab", "empty"),
    ("[logistic]", "pjreddie", "logxent"), ("[activation]", "alexeyab", "active"),
])
def test_section_aliases(header, fork, type_):
    assert section_type(header, fork) == type_


def test_first_section_must_be_net():
    with pytest.raises(DarknetCfgError) as e:
        parse("\n[convolutional]\nfilters=1\n[net]\nwidth=1\n")
    assert e.value.file == "t.cfg" and e.value.line == 2 and "[net]" in e.value.problem
    assert isinstance(e.value, ValueError)
    parse("[network]\nwidth=1\nheight=1\nchannels=1\n")


@pytest.mark.parametrize("text,line,words", [
    ("filters=3\n[net]\n", 1, "before any section"),
    ("\n\n", None, "no sections"),
    ("# only comments\n", None, "no sections"),
    (NET + "[conv]\nfilters=\n", 7, "no value"),
    (NET + "[conv]\nfilters\n", 7, "no '='"),
    (NET + "[conv]\n=3\n", 7, "no key"),
    (NET + "[conv]\n=\n", 7, "no value"),
    (NET + "[convolution]\n", 6, "unknown section type [convolution]"),
    (NET + "[sam]\nfrom=-1\n", 6, "alexeyab"),
    (NET + "[net]junk\n", 6, "unknown section type"),
    (NET + "[conv]\nfilters=99999999999\n", 7, "C int"),
])
def test_errors_name_file_line_and_problem(text, line, words):
    with pytest.raises(DarknetCfgError) as e:
        load_network(text, flavor="pjreddie") if "99999" in text else parse(text)
    assert e.value.line == line and words in e.value.problem
    assert str(e.value).startswith("<text>" if "99999" in text else "t.cfg")


def test_error_names_the_file(tmp_path):
    p = tmp_path / "bad.cfg"
    p.write_text(NET + "[conv]\nfilters\n")
    with pytest.raises(DarknetCfgError) as e:
        parse_cfg(p)
    assert e.value.file == str(p) and str(e.value).startswith(f"{p}:7: ")


# -- path or text -----------------------------------------------------------------------------------

def test_path_or_text(tmp_path):
    p = tmp_path / "n.cfg"
    p.write_text(NET + "[conv]\nfilters=4\n")
    for src in (p, str(p), NET + "[conv]\nfilters=4\n"):
        assert parse_cfg(src).sections[0].get_int("filters", 1) == 4
    # a str with a \r is text too; as in Darknet, only \n ends a line (a CR-only file is one line)
    with pytest.raises(DarknetCfgError, match="unknown section type"):
        parse_cfg((NET + "[conv]\nfilters=4\n").replace("\n", "\r"))
    assert parse_cfg(str(p)).name == str(p)
    assert parse_cfg(NET + "[conv]\n").name == "<text>"
    assert parse_cfg_file(p).sections[0].get_int("filters", 0) == 4
    with pytest.raises(FileNotFoundError):
        parse_cfg(str(tmp_path / "missing.cfg"))
    with pytest.raises(TypeError):
        parse_cfg(42)  # type: ignore[arg-type]


def test_fork_of():
    assert fork_of("pjreddie") == "pjreddie"
    assert fork_of("alexeyab") == fork_of("torch") == "alexeyab"
    from darknet_bn.flavors import torch_flavor
    assert fork_of(torch_flavor(eps=1e-3)) == "alexeyab"
    with pytest.raises(ValueError):
        fork_of("caffe")


# -- atoi / atof ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value,exact", [
    ("42", 42, True), ("-7", -7, True), ("+3", 3, True), ("3.9", 3, False), ("12abc", 12, False), ("abc", 0, False),
    ("", 0, False), ("0x10", 0, False), ("9" * 5000, 2**63 - 1, True), ("-" + "9" * 30, -2**63, True),
])
def test_c_atoi(text, value, exact):
    assert c_atoi(text) == (value, exact)


@pytest.mark.parametrize("text,value", [
    ("0.5", 0.5), (".5", 0.5), ("5.", 5.0), ("1e-3", 1e-3), ("1e5x", 1e5), ("0x1p3", 8.0), ("-inf", float("-inf")),
    ("x", 0.0), ("2,3", 2.0),
])
def test_c_atof(text, value):
    assert c_atof(text)[0] == value


def test_lossy_numbers_warn():
    net = load_network(NET + "[convolutional]\nfilters=4.7\nsize=3\n")
    assert net.layers[0].n == 4
    assert any("filters='4.7' is read as 4" in w for w in net.warnings)


# -- every real cfg parses with both forks' rules (or fails on an unknown section type) -----------------

CFGS = sorted((DATA / "cfg").rglob("*.cfg"))


@pytest.mark.parametrize("flavor", ["pjreddie", "alexeyab"])
def test_all_real_cfgs_parse(flavor):
    assert len(CFGS) >= 140
    for p in CFGS:
        try:
            c = parse_cfg(p, flavor=flavor)
        except DarknetCfgError as e:
            assert "unknown section type" in e.problem, (p, e)
            assert flavor == "pjreddie" and p.parent.name == "alexeyab", (p, e)
            continue
        assert c.net.type == "network" and c.sections


# -- random text never raises anything but DarknetCfgError ----------------------------------------------

_KEYS = sorted({k for t in ("network", "convolutional", "route", "shortcut", "yolo", "maxpool", "connected",
                            "rnn", "crnn", "region", "upsample", "reorg", "softmax")
                for fork in ("pjreddie", "alexeyab") for k in known_keys(t, fork)})
_HEADERS = ["[net]", "[network]", "[convolutional]", "[conv]", "[maxpool]", "[avgpool]", "[route]", "[shortcut]",
            "[upsample]", "[yolo]", "[region]", "[detection]", "[connected]", "[batchnorm]", "[dropout]", "[softmax]",
            "[cost]", "[crop]", "[local]", "[reorg]", "[reorg3d]", "[rnn]", "[gru]", "[lstm]", "[crnn]", "[sam]",
            "[scale_channels]", "[Gaussian_yolo]", "[local_avgpool]", "[contrastive]", "[implicit]", "[empty]",
            "[activation]", "[normalization]", "[iseg]", "[l2norm]", "[logistic]", "[deconvolutional]", "[bogus]"]
_VALUES = st.one_of(
    st.integers(-3, 40).map(str), st.integers(-2**40, 2**40).map(str),
    st.sampled_from(["-1", "-2", "-3,-1", "1,2", "0", "2,-4", "leaky", "0.5", "1e9", "", "abc", "=", " 3 ",
                     "per_feature", "per_channel", "relu", "1#2", "\t", "0,1,2", "-1,61", "3.7"]),
    st.text(string.printable, max_size=8))
_LINE = st.one_of(
    st.sampled_from(_HEADERS),
    st.tuples(st.sampled_from(_KEYS + ["x", ""]), _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["", "#c", ";c", "   ", "=", "noequals", "\r", "[", "]"]),
    st.text(string.printable + "\0é", max_size=20))


_SMALL = st.one_of(st.integers(-2, 6).map(str), st.sampled_from(["-1", "-2", "-3", "-1,-3", "0", "1,2", "-1,-2,-4",
                                                                  "leaky", "linear", "per_feature", "relu", "16",
                                                                  "32", "255", "0,1,2", "2.5", "x"]))


@st.composite
def _section(draw):
    header = draw(st.sampled_from(_HEADERS[2:]))
    keys = st.sampled_from(["filters", "size", "stride", "pad", "padding", "groups", "batch_normalize", "layers",
                            "from", "classes", "num", "mask", "output", "hidden", "stride_x", "stride_y",
                            "dilation", "reverse", "extra", "side", "coords", "crop_width", "crop_height",
                            "group_id", "scale_wh", "yolo_layer", "embedding_layer", "share_index", "xnor",
                            "antialiasing", "maxpool_depth", "out_channels", "weights_type", "atoms", "ids",
                            "output_filters", "hidden_filters", "flipped", "numload", "dontload", "cbn"])
    opts = draw(st.lists(st.tuples(keys, _SMALL), max_size=6))
    return header + "\n" + "".join(f"{k}={v}\n" for k, v in opts)


def _cfg_texts():
    net = st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 5), st.integers(-1, 4),
                    st.integers(-1, 3)).map(
        lambda t: f"[net]\nwidth={t[0]}\nheight={t[1]}\nchannels={t[2]}\nbatch={t[3]}\nsubdivisions={t[4]}\n")
    good_net = st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 4)).map(
        lambda t: f"[net]\nwidth={t[0]}\nheight={t[1]}\nchannels={t[2]}\n")
    body = st.lists(_LINE, max_size=40).map("\n".join)
    sections = st.lists(_section(), min_size=1, max_size=8).map("".join)
    return st.one_of(st.tuples(good_net, sections).map("".join),
                     st.tuples(good_net, sections).map("".join),
                     st.tuples(net, body).map(lambda t: t[0] + t[1] + "\n"),
                     st.text(string.printable + "\0\x85é[]=", max_size=300).map(lambda s: s + "\n"),
                     st.binary(max_size=200).map(lambda b: b + b"\n"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_cfg_texts(), flavor=st.sampled_from(["pjreddie", "alexeyab", "torch"]),
       batch=st.sampled_from([1, 3, None]))
def test_random_cfg_text_raises_only_darknet_cfg_error(text, flavor, batch):
    try:
        net = load_network(text, batch=batch, flavor=flavor)
    except DarknetCfgError:
        return
    for layer in net.layers:
        for k in ("w", "h", "c", "out_w", "out_h", "out_c", "inputs", "outputs"):
            assert 0 <= getattr(layer, k) <= 2**31 - 1
    for bn in net.bn_layers:
        assert min(bn.batch, bn.c, bn.h, bn.w) >= 1
    net.weights_layout()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_parses_or_raises_darknet_cfg_error(text):
    for flavor in ("pjreddie", "alexeyab"):
        try:
            parse_cfg_text(text, flavor=flavor)
        except DarknetCfgError:
            pass


def test_path_helper_reads_a_real_file():
    p = Path(DATA / "cfg" / "oracle" / "bn_small.cfg")
    c = parse_cfg(p)
    assert [s.type for s in c.sections] == ["convolutional", "batchnorm", "maxpool", "connected", "batchnorm",
                                            "connected"]
