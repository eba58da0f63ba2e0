"""Diagrams: DOT content, real renders by Graphviz, and the no-dot fallback."""

import re
import shutil
import xml.etree.ElementTree as ET

import graphviz
import pytest

import graphnet as gn
from graphnet import cli, render
from graphnet.errors import GraphnetError

from conftest import SPECS, TEST_SPECS, mlp

RESIDUAL = TEST_SPECS / "residual.json"
BN3 = SPECS / "a3" / "3layer-bn.json"
SVG = "{http://www.w3.org/2000/svg}"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot not found")


def svg_groups(path, kind):
    """{title: <g> element} of the SVG's nodes or edges."""
    root = ET.parse(path).getroot()
    return {g.find(SVG + "title").text: g
            for g in root.iter(SVG + "g") if g.get("class") == kind}


def coords(group):
    """All (x, y) points of the paths and polygons of one SVG group."""
    pts = []
    for el in group:
        text = el.get("d") or el.get("points") or ""
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]
        pts += list(zip(nums[::2], nums[1::2]))
    return pts


def edge_lines(source):
    """The DOT statements of edges, e.g. 'h1 -> add3 [...]'."""
    return [ln.strip() for ln in source.splitlines() if " -> " in ln]


def no_dot(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)


# ---- the DOT source --------------------------------------------------------

def test_dot_has_every_node_shape_params_cost_and_total():
    spec = gn.load_spec(BN3)
    net = gn.build(spec)
    src = render.to_dot(spec, net).source
    for name in ["x"] + [n["name"] for n in spec["graph"]["nodes"]]:
        assert re.search(rf"^\s*{name} \[label=", src, re.M), name
    assert "(n, 3072)" in src and "(n, 50)" in src and "(n, 10)" in src
    assert "153,650 params" in src  # fc1: 50 * 3072 + 50
    assert f"{net.n_params():,} parameters" in src
    assert "softmax_cross_entropy" in src and "lambda = 0.005" in src
    assert 'scores -> "$cost"' in src
    assert "rankdir=TB" in src


def test_compiling_without_a_network_gives_the_same_diagram():
    spec = gn.load_spec(RESIDUAL)
    assert render.to_dot(spec).source == \
        render.to_dot(spec, gn.build(spec)).source
    assert render.to_dot(str(RESIDUAL)).source == render.to_dot(spec).source


def test_families_are_coloured_consistently_with_a_legend():
    spec = gn.load_spec(mlp([20], "batchnorm", dropout=0.5))
    src = render.to_dot(spec).source
    for name, family in [("fc1", "affine"), ("bn1", "normalization"),
                         ("h1", "activation"), ("drop1", "regularization"),
                         ("scores", "affine")]:
        colour = render.FAMILY_COLOURS[family]
        line = next(ln for ln in src.splitlines()
                    if ln.strip().startswith(f"{name} ["))
        assert f'fillcolor="{colour}"' in line
        assert f'bgcolor="{colour}"' in src  # the legend entry
    assert "merge" not in src  # legend lists only families present
    assert "skip" not in src


def test_skip_edges_are_found_by_depth():
    spec = gn.load_spec(RESIDUAL)
    net = gn.build(spec)
    families = {s.name: s.op.family for s in net.steps}
    skips = render.skip_edges(net.dag, families)
    assert {(u, v) for u, v, _ in skips} == {("h1", "add3"), ("h3", "add5")}


def test_two_branches_of_one_depth_are_not_skips():
    spec = gn.load_spec({"graph": {"inputs": {"x": 3072}, "nodes": [
        {"name": "a", "op": "linear", "inputs": ["x"], "units": 10},
        {"name": "b", "op": "linear", "inputs": ["x"], "units": 10},
        {"name": "s", "op": "add", "inputs": ["a", "b"]}], "output": "s"}})
    src = render.to_dot(spec).source
    assert "skip" not in src
    assert "a -> s" in edge_lines(src) and "b -> s" in edge_lines(src)


def test_skip_edges_do_not_constrain_the_ranks():
    src = render.to_dot(RESIDUAL).source
    skips = [ln for ln in edge_lines(src) if "skip" in ln]
    assert [ln.split(" [")[0] for ln in skips] == ["h1 -> add3",
                                                   "h3 -> add5"]
    for ln in skips:
        assert "constraint=false" in ln and "style=dashed" in ln
        assert render.SKIP_COLOUR in ln
    assert "fc3 -> add3" in edge_lines(src)  # the main path is plain


def test_rankdir_lr_changes_the_dot():
    tb = render.to_dot(BN3).source
    lr = render.to_dot(BN3, rankdir="LR").source
    assert "rankdir=LR" in lr and "rankdir=TB" not in lr
    assert tb.replace("rankdir=TB", "rankdir=LR") == lr


def test_hiding_shapes_and_params():
    src = render.to_dot(BN3, shapes=False).source
    assert "(n, " not in src and "153,650 params" in src
    src = render.to_dot(BN3, params=False).source
    assert "params" not in src and "parameters" not in src
    assert "(n, 50)" in src


def test_unknown_rankdir_is_an_error():
    with pytest.raises(GraphnetError, match="valid choices: TB, LR"):
        render.to_dot(BN3, rankdir="XY")


# ---- real renders ----------------------------------------------------------

@needs_dot
def test_residual_svg_content(tmp_path):
    spec = gn.load_spec(RESIDUAL)
    net = gn.build(spec)
    written, message = render.render_spec(spec, tmp_path / "res.svg")
    assert (written, message) == (tmp_path / "res.svg", None)
    nodes = svg_groups(written, "node")
    edges = svg_groups(written, "edge")
    names = ["x"] + [s.name for s in net.steps]
    assert set(nodes) == set(names) | {"$cost"}
    # 16 nodes reading 18 values (two adds), plus scores -> cost
    assert len(edges) == net.dag.number_of_edges() + 1 == 19
    assert "scores->$cost" in edges
    for title in ("h1->add3", "h3->add5"):
        g = edges[title]
        path = g.find(SVG + "path")
        assert path.get("stroke") == render.SKIP_COLOUR
        assert path.get("stroke-dasharray")
        assert "skip" in "".join(g.itertext())
    plain = edges["fc3->add3"].find(SVG + "path")
    assert plain.get("stroke") != render.SKIP_COLOUR
    assert plain.get("stroke-dasharray") is None
    # the main chain is one straight column ...
    xs = {n: [x for x, _ in coords(nodes[n])] for n in names}
    centres = {n: (min(v) + max(v)) / 2 for n, v in xs.items()}
    assert max(centres.values()) - min(centres.values()) < 1.0
    # ... and each skip curves around the layers it bypasses
    for skip, bypassed in (("h1->add3", ("fc2", "h2", "fc3")),
                           ("h3->add5", ("fc4", "h4", "fc5"))):
        right = max(x for n in bypassed for x, _ in coords(nodes[n]))
        assert max(x for x, _ in coords(edges[skip])) > right


@needs_dot
@pytest.mark.parametrize("ext, magic", [("svg", b"<?xml"),
                                        ("png", b"\x89PNG\r\n\x1a\n"),
                                        ("pdf", b"%PDF")])
def test_bn_spec_renders_each_format(tmp_path, ext, magic):
    out = tmp_path / f"net.{ext}"
    written, message = render.render_spec(BN3, out)
    assert (written, message) == (out, None)
    assert out.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temps


def test_gv_needs_no_dot(tmp_path, monkeypatch):
    no_dot(monkeypatch)
    out = tmp_path / "sub" / "net.gv"
    assert render.render_spec(BN3, out) == (out, None)
    text = out.read_text()
    assert text.startswith("digraph")
    for name in ("x", "fc1", "bn1", "h1", "fc2", "bn2", "h2", "scores"):
        assert f"\t{name} [label=" in text


@needs_dot
def test_cli_render_svg_options(tmp_path, capsys):
    out = tmp_path / "net.svg"
    code = cli.main(["render", str(BN3), "-o", str(out), "--no-shapes",
                     "--rankdir", "LR", "--set", "loss.l2=0.01"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    svg = out.read_text()
    assert "(n, 50)" not in svg and "lambda = 0.01" in svg
    assert "153,650 params" in svg


def test_cli_without_dot_writes_gv_and_says_how(tmp_path, capsys,
                                                monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "net.svg"
    assert cli.main(["render", str(RESIDUAL), "-o", str(out)]) == 0
    gv = tmp_path / "net.gv"
    assert not out.exists() and gv.read_text().startswith("digraph")
    captured = capsys.readouterr()
    assert captured.out.strip() == str(gv)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert f"dot -Tsvg {gv} -o {out}" in lines[0]
    assert "Debian/Ubuntu" in lines[0] and "graphviz" in lines[0]
    assert "Traceback" not in captured.err


def test_executable_not_found_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/dot")

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    written, message = render.render_spec(BN3, tmp_path / "a.pdf")
    assert written == tmp_path / "a.gv"
    assert "not found" in message and "dot -Tpdf" in message


def test_failing_dot_falls_back_with_its_reason(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise graphviz.CalledProcessError(
            1, ["dot", "-Tpng"], stderr=b'Format: "png" not recognized\n')

    monkeypatch.setattr(graphviz.Digraph, "pipe", broken)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/dot")
    written, message = render.render_spec(BN3, tmp_path / "a.png")
    assert written == tmp_path / "a.gv" and written.exists()
    assert 'dot failed (Format: "png" not recognized)' in message
    assert "\n" not in message


def test_bad_extension_exits_2_with_the_valid_ones(tmp_path, capsys):
    out = tmp_path / "net.jpg"
    assert cli.main(["render", str(BN3), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown diagram format '.jpg'" in err
    assert ".svg, .png, .pdf, .gv" in err
    assert "Traceback" not in err and not out.exists()


def test_bad_spec_exits_2(tmp_path, capsys):
    out = tmp_path / "net.svg"
    code = cli.main(["render", str(BN3), "-o", str(out),
                     "--set", "loss.l2=-1"])
    assert code == 2
    assert "loss.l2" in capsys.readouterr().err


def test_unwritable_path_is_a_graphnet_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(GraphnetError, match="cannot write"):
        render.render_spec(BN3, blocker / "net.gv")
