"""darknet_bn.darknet.cfg: Darknet's cfg reading rules (read_cfg, read_option, strip, option_find, atoi), the
errors where Darknet crashes or misbehaves, warnings, path-or-text, and random text (hypothesis)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from helpers import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darknet_bn.darknet import (
    ALEXEYAB_ONLY_KEYS,
    ALEXEYAB_ONLY_SECTIONS,
    ALEXEYAB_ONLY_VALUES,
    CfgFile,
    DarknetCfgError,
    DarknetCfgWarning,
    c_atof,
    c_atoi,
    detect_fork,
    fork_of,
    known_keys,
    load_network,
    parse_cfg,
    parse_cfg_file,
    parse_cfg_text,
    section_type,
)

# Loading every shared cfg by each fork's rules reports the keys that fork ignores; the tests that check
# those warnings catch them with pytest.warns (which sees them regardless of this filter).
pytestmark = pytest.mark.filterwarnings("ignore::darknet_bn.DarknetCfgWarning")


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


@pytest.mark.parametrize(
    "flavor,key,known",
    [
        ("pjreddie", "dilation", False),
        ("alexeyab", "dilation", True),
        ("pjreddie", "stride_x", False),
        ("alexeyab", "stride_x", True),
        ("pjreddie", "groups", True),
        ("alexeyab", "share_index", True),
        ("pjreddie", "dontloadscales", True),
        ("alexeyab", "dontloadscales", True),
        ("pjreddie", "nonsense", False),
        ("alexeyab", "nonsense", False),
    ],
)
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


@pytest.mark.parametrize(
    "header,fork,type_",
    [
        ("[conv]", "pjreddie", "convolutional"),
        ("[convolutional]", "alexeyab", "convolutional"),
        ("[net]", "pjreddie", "network"),
        ("[network]", "alexeyab", "network"),
        ("[conn]", "pjreddie", "connected"),
        ("[max]", "alexeyab", "maxpool"),
        ("[avg]", "pjreddie", "avgpool"),
        ("[soft]", "alexeyab", "softmax"),
        ("[lrn]", "pjreddie", "normalization"),
        ("[reorg]", "pjreddie", "reorg"),
        ("[reorg]", "alexeyab", "reorg_old"),
        ("[reorg3d]", "alexeyab", "reorg"),
        ("[reorg3d]", "pjreddie", None),
        ("[sam]", "pjreddie", None),
        ("[Gaussian_yolo]", "alexeyab", "gaussian_yolo"),
        ("[gaussian_yolo]", "alexeyab", None),
        ("[local_avg]", "alexeyab", "local_avgpool"),
        ("[silence]", "alexeyab", "empty"),
        ("[logistic]", "pjreddie", "logxent"),
        ("[activation]", "alexeyab", "active"),
    ],
)
def test_section_aliases(header, fork, type_):
    assert section_type(header, fork) == type_


def test_first_section_must_be_net():
    with pytest.raises(DarknetCfgError) as e:
        parse("\n[convolutional]\nfilters=1\n[net]\nwidth=1\n")
    assert e.value.file == "t.cfg" and e.value.line == 2 and "[net]" in e.value.problem
    assert isinstance(e.value, ValueError)
    parse("[network]\nwidth=1\nheight=1\nchannels=1\n")


@pytest.mark.parametrize(
    "text,line,words",
    [
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
    ],
)
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


def test_flavor_knows_its_fork():
    from darknet_bn.flavors import FLAVORS, Flavor, torch_flavor

    assert [FLAVORS[n].fork for n in ("pjreddie", "alexeyab", "torch")] == ["pjreddie", "alexeyab", "alexeyab"]
    assert torch_flavor(eps=1e-3).fork == "alexeyab"
    base = dict(
        momentum=0.1, eps=1e-5, eps_in_sqrt=True, unbiased=False, bwd_eps=1e-5, bwd_eps_in_sqrt=True, stat_eps=1e-5
    )
    assert Flavor("mine", **base).fork == "alexeyab"  # the default, as fork_of read any other Flavor
    assert fork_of(Flavor("mine", **base, fork="pjreddie")) == "pjreddie"
    with pytest.raises(ValueError, match="Flavor.fork"):
        Flavor("mine", **base, fork="caffe")
    with pytest.raises(TypeError):
        fork_of(42)  # type: ignore[arg-type]


# -- atoi / atof ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value,exact",
    [
        ("42", 42, True),
        ("-7", -7, True),
        ("+3", 3, True),
        ("3.9", 3, False),
        ("12abc", 12, False),
        ("abc", 0, False),
        ("", 0, False),
        ("0x10", 0, False),
        ("9" * 5000, 2**63 - 1, True),
        ("-" + "9" * 30, -(2**63), True),
    ],
)
def test_c_atoi(text, value, exact):
    assert c_atoi(text) == (value, exact)


@pytest.mark.parametrize(
    "text,value",
    [
        ("0.5", 0.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e-3", 1e-3),
        ("1e5x", 1e5),
        ("0x1p3", 8.0),
        ("-inf", float("-inf")),
        ("x", 0.0),
        ("2,3", 2.0),
    ],
)
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

_KEYS = sorted(
    {
        k
        for t in (
            "network",
            "convolutional",
            "route",
            "shortcut",
            "yolo",
            "maxpool",
            "connected",
            "rnn",
            "crnn",
            "region",
            "upsample",
            "reorg",
            "softmax",
        )
        for fork in ("pjreddie", "alexeyab")
        for k in known_keys(t, fork)
    }
)
_HEADERS = [
    "[net]",
    "[network]",
    "[convolutional]",
    "[conv]",
    "[maxpool]",
    "[avgpool]",
    "[route]",
    "[shortcut]",
    "[upsample]",
    "[yolo]",
    "[region]",
    "[detection]",
    "[connected]",
    "[batchnorm]",
    "[dropout]",
    "[softmax]",
    "[cost]",
    "[crop]",
    "[local]",
    "[reorg]",
    "[reorg3d]",
    "[rnn]",
    "[gru]",
    "[lstm]",
    "[crnn]",
    "[sam]",
    "[scale_channels]",
    "[Gaussian_yolo]",
    "[local_avgpool]",
    "[contrastive]",
    "[implicit]",
    "[empty]",
    "[activation]",
    "[normalization]",
    "[iseg]",
    "[l2norm]",
    "[logistic]",
    "[deconvolutional]",
    "[bogus]",
]
_VALUES = st.one_of(
    st.integers(-3, 40).map(str),
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(
        [
            "-1",
            "-2",
            "-3,-1",
            "1,2",
            "0",
            "2,-4",
            "leaky",
            "0.5",
            "1e9",
            "",
            "abc",
            "=",
            " 3 ",
            "per_feature",
            "per_channel",
            "relu",
            "1#2",
            "\t",
            "0,1,2",
            "-1,61",
            "3.7",
        ]
    ),
    st.text(string.printable, max_size=8),
)
_LINE = st.one_of(
    st.sampled_from(_HEADERS),
    st.tuples(st.sampled_from(_KEYS + ["x", ""]), _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["", "#c", ";c", "   ", "=", "noequals", "\r", "[", "]"]),
    st.text(string.printable + "\0é", max_size=20),
)


_SMALL = st.one_of(
    st.integers(-2, 6).map(str),
    st.sampled_from(
        [
            "-1",
            "-2",
            "-3",
            "-1,-3",
            "0",
            "1,2",
            "-1,-2,-4",
            "leaky",
            "linear",
            "per_feature",
            "relu",
            "16",
            "32",
            "255",
            "0,1,2",
            "2.5",
            "x",
        ]
    ),
)


@st.composite
def _section(draw):
    header = draw(st.sampled_from(_HEADERS[2:]))
    keys = st.sampled_from(
        [
            "filters",
            "size",
            "stride",
            "pad",
            "padding",
            "groups",
            "batch_normalize",
            "layers",
            "from",
            "classes",
            "num",
            "mask",
            "output",
            "hidden",
            "stride_x",
            "stride_y",
            "dilation",
            "reverse",
            "extra",
            "side",
            "coords",
            "crop_width",
            "crop_height",
            "group_id",
            "scale_wh",
            "yolo_layer",
            "embedding_layer",
            "share_index",
            "xnor",
            "antialiasing",
            "maxpool_depth",
            "out_channels",
            "weights_type",
            "atoms",
            "ids",
            "output_filters",
            "hidden_filters",
            "flipped",
            "numload",
            "dontload",
            "cbn",
        ]
    )
    opts = draw(st.lists(st.tuples(keys, _SMALL), max_size=6))
    return header + "\n" + "".join(f"{k}={v}\n" for k, v in opts)


def _cfg_texts():
    net = st.tuples(
        st.integers(0, 20), st.integers(0, 20), st.integers(0, 5), st.integers(-1, 4), st.integers(-1, 3)
    ).map(lambda t: f"[net]\nwidth={t[0]}\nheight={t[1]}\nchannels={t[2]}\nbatch={t[3]}\nsubdivisions={t[4]}\n")
    good_net = st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 4)).map(
        lambda t: f"[net]\nwidth={t[0]}\nheight={t[1]}\nchannels={t[2]}\n"
    )
    body = st.lists(_LINE, max_size=40).map("\n".join)
    sections = st.lists(_section(), min_size=1, max_size=8).map("".join)
    return st.one_of(
        st.tuples(good_net, sections).map("".join),
        st.tuples(good_net, sections).map("".join),
        st.tuples(net, body).map(lambda t: t[0] + t[1] + "\n"),
        st.text(string.printable + "\0\x85é[]=", max_size=300).map(lambda s: s + "\n"),
        st.binary(max_size=200).map(lambda b: b + b"\n"),
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_cfg_texts(), flavor=st.sampled_from(["pjreddie", "alexeyab", "torch"]), batch=st.sampled_from([1, 3, None])
)
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
    assert [s.type for s in c.sections] == [
        "convolutional",
        "batchnorm",
        "maxpool",
        "connected",
        "batchnorm",
        "connected",
    ]


# -- the fork detected from the cfg, and the keys it ignores, as Python warnings ----------------------


def test_unknown_key_warns_with_file_line_and_key(tmp_path):
    p = tmp_path / "typo.cfg"
    p.write_text(NET + "[convolutional]\nfilters=4\nsize=3\nbatch_normalise=1\n")
    with pytest.warns(DarknetCfgWarning) as rec:
        net = load_network(p)
    (w,) = [r.message for r in rec]
    assert isinstance(w, DarknetCfgWarning) and issubclass(DarknetCfgWarning, UserWarning)
    assert (w.file, w.line, w.key, w.section) == (str(p), 9, "batch_normalise", "[convolutional]")
    assert str(w).startswith(f"{p}:9: [convolutional] batch_normalise=1:") and "'batch_normalise'" in str(w)
    assert net.layers[0].batch_normalize == 0  # the misspelled key is not read: no BN, as in Darknet
    assert [k.key for k in net.cfg.ignored] == ["batch_normalise"]
    import darknet_bn

    assert darknet_bn.DarknetCfgWarning is DarknetCfgWarning


def test_repeated_key_warns():
    with pytest.warns(DarknetCfgWarning, match=r"t.cfg:6: \[net\] channels=1 repeats the key of line 5"):
        parse_cfg_text(NET + "channels=1\n[connected]\n", "t.cfg")


def test_warn_false_is_quiet_and_keeps_the_list(recwarn):
    c = parse_cfg_text(NET + "[connected]\nouptut=3\n", "t.cfg", warn=False)
    assert not [w for w in recwarn if issubclass(w.category, DarknetCfgWarning)]
    assert [(k.line, k.key, k.why) for k in c.ignored] == [(7, "ouptut", "unread")]


# What each fork's parser never reads, in the shared cfgs (checked by hand against parse_net_options,
# parse_rnn and parse_yolo of both forks' src/parser.c): pjreddie's parse_net_options reads no "seen";
# pjreddie's parse_rnn no "hidden"; AlexeyAB's parse_net_options no "max_epochs", its parse_yolo no
# "beta1" nor "uc_normalizer" (only parse_gaussian_yolo reads that); and the keys written twice.
EXPECTED_IGNORED = {
    "alexeyab/Gaussian_yolov3_BDD.cfg": {("[net]", "max_epochs", "unread")},
    "alexeyab/efficientnet-lite3.cfg": {("[net]", "decay", "repeated"), ("[net]", "momentum", "repeated")},
    "alexeyab/efficientnet_b0.cfg": {("[net]", "decay", "repeated"), ("[net]", "momentum", "repeated")},
    "alexeyab/rnn.cfg": {("[rnn]", "hidden", "unread")},
    "alexeyab/rnn.train.cfg": {("[rnn]", "hidden", "unread")},
    "alexeyab/writing.cfg": {("[net]", "seen", "unread")},
    "alexeyab/yolo9000.cfg": {("[net]", "batch", "repeated"), ("[net]", "subdivisions", "repeated")},
    "alexeyab/yolov3-openimages.cfg": {("[net]", "batch", "repeated"), ("[net]", "subdivisions", "repeated")},
    "alexeyab/yolov4-sam-mish-csp-reorg-bfm.cfg": {
        ("[yolo]", "beta1", "unread"),
        ("[yolo]", "uc_normalizer", "unread"),
    },
    "pjreddie/rnn.cfg": {("[rnn]", "hidden", "unread")},
    "pjreddie/rnn.train.cfg": {("[rnn]", "hidden", "unread")},
    "pjreddie/writing.cfg": {("[net]", "seen", "unread")},
    "pjreddie/yolo9000.cfg": {("[net]", "batch", "repeated"), ("[net]", "subdivisions", "repeated")},
    "pjreddie/yolov3-openimages.cfg": {("[net]", "batch", "repeated"), ("[net]", "subdivisions", "repeated")},
}


def test_no_false_warnings_on_the_shared_cfgs():
    """Default rules on every shared cfg: the ignored keys are exactly the ones Darknet ignores."""
    cfgs = sorted((DATA / "cfg").rglob("*.cfg"))
    assert len(cfgs) >= 140
    got = {}
    for p in cfgs:
        c = parse_cfg(p, warn=False)
        keys = {(k.section, k.key, k.why) for k in c.ignored}
        if keys:
            got[p.relative_to(DATA / "cfg").as_posix()] = keys
        for k in c.ignored:  # never a key the chosen fork reads
            if k.why == "unread":
                assert k.key not in known_keys(section_type(k.section, c.fork), c.fork)
    assert got == EXPECTED_IGNORED


@pytest.mark.parametrize(
    "body,line,what",
    [
        ("[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", 10, "[route] groups="),
        ("[sam]\nfrom=-1\n", 8, "section [sam]"),
        ("[scale_channels]\nfrom=-1\n", 8, "section [scale_channels]"),
        ("[implicit]\n", 8, "section [implicit]"),
        ("[convolutional]\nfilters=2\nactivation=mish\n", 10, "[convolutional] activation=mish"),
        ("[convolutional]\nfilters=2\nstride_x=2\n", 10, "[convolutional] stride_x="),
        ("[maxpool]\nmaxpool_depth=1\n", 9, "[maxpool] maxpool_depth="),
        ("[yolo]\niou_loss=ciou\n", 9, "[yolo] iou_loss="),
    ],
)
def test_alexeyab_only_content_picks_alexeyabs_rules(body, line, what):
    text = NET + "[convolutional]\nfilters=4\n" + body
    fork, why = detect_fork(text)
    assert fork == "alexeyab" and f"line {line}: {what} is read only by AlexeyAB's" in why, why
    assert parse_cfg_text(text, warn=False).rules == why


def test_net_policy_sgdr_and_pjreddie_content():
    assert detect_fork(NET + "policy=sgdr\n[connected]\n")[0] == "alexeyab"
    assert detect_fork(NET + "policy=steps\nsteps=1\nscales=1\n[connected]\n")[0] == "pjreddie"
    # a section only pjreddie knows, or [rnn] hidden= (which pjreddie's own rnn.cfg carries): pjreddie
    assert detect_fork(NET + "[l2norm]\n")[0] == "pjreddie"
    assert detect_fork(NET + "[rnn]\noutput=4\nhidden=4\n")[0] == "pjreddie"
    fork, why = detect_fork(NET + "[convolutional]\nactivation=leaky\n")
    assert fork == "pjreddie" and "no section, key or value" in why


def test_alexeyab_only_sets_come_from_the_key_tables():
    assert {
        "[sam]",
        "[scale_channels]",
        "[implicit]",
        "[Gaussian_yolo]",
        "[conv_lstm]",
        "[reorg3d]",
    } <= ALEXEYAB_ONLY_SECTIONS
    assert not ALEXEYAB_ONLY_SECTIONS & {"[route]", "[reorg]", "[convolutional]", "[yolo]"}
    assert {"groups", "group_id"} <= ALEXEYAB_ONLY_KEYS["[route]"] and "layers" not in ALEXEYAB_ONLY_KEYS["[route]"]
    assert {"mosaic", "letter_box", "ema_alpha"} <= ALEXEYAB_ONLY_KEYS["[net]"]
    assert "hidden" not in ALEXEYAB_ONLY_KEYS["[rnn]"]
    for header, keys in ALEXEYAB_ONLY_KEYS.items():
        assert not keys & known_keys(section_type(header, "pjreddie"), "pjreddie"), header
    assert {"mish", "swish", "hard_mish", "relu6", "gelu"} <= ALEXEYAB_ONLY_VALUES["activation"]
    assert not {"leaky", "linear", "logistic", "relu", "tanh"} & ALEXEYAB_ONLY_VALUES["activation"]


def test_explicit_fork_or_flavor_wins():
    text = NET + "[convolutional]\nfilters=4\nactivation=mish\n"
    assert parse_cfg_text(text, warn=False).fork == "alexeyab"
    assert parse_cfg_text(text, flavor="pjreddie", warn=False).fork == "pjreddie"
    assert parse_cfg_text(text, fork="pjreddie", flavor="torch", warn=False).fork == "pjreddie"
    c = parse_cfg_text(text, fork="pjreddie", warn=False)
    assert c.rules == "pjreddie's rules, as asked (fork='pjreddie')"
    with pytest.raises(ValueError, match="fork"):
        parse_cfg_text(text, fork="darknet")
    with pytest.raises(ValueError, match="parsed by alexeyab's rules"):
        parse_cfg(parse_cfg_text(text, warn=False), fork="pjreddie")
