"""Draw a spec's network with Graphviz: SVG, PNG, PDF or DOT source.

A diagram has one box per graph input and per node, showing the node's
name, op, output shape ``(n, d)`` and parameter count; boxes are filled
by op family (affine, normalization, ...). A cost box follows the output
and names the loss and the L2 strength; the graph label gives the spec's
name, its total parameter count and a legend of the colours used.

A skip connection is an edge into a merge node (``add``) from a value
computed earlier than the merge's other inputs: it is drawn dashed and
labelled "skip", and it does not constrain the ranking, so the main
chain stays a straight column and the skip visibly bypasses it.

When Graphviz's ``dot`` is missing, ``render_spec`` writes the DOT source
instead and says how to render it, rather than failing.
"""

import html
import logging
import shutil
import sys
from pathlib import Path

import graphviz
import networkx as nx

from . import graph as graph_mod
from .errors import GraphnetError
from .runs import atomic_write
from .spec import Spec, load_spec

log = logging.getLogger(__name__)

FORMATS = ("svg", "png", "pdf", "gv")
RANKDIRS = ("TB", "LR")
FAMILY_COLOURS = {
    "affine": "#cfe2ff",
    "normalization": "#cdebd3",
    "activation": "#ffe6a8",
    "merge": "#f7c6c0",
    "regularization": "#e0d2f0",
    "other": "#e4e4e4",
}
SKIP_COLOUR = "#c2410c"
EDGE_COLOUR = "#555555"
TEXT_GREY = "#4a4a4a"
FONT = "Helvetica"
# not a valid node name (see spec.NAME_RE), so it never clashes with one
COST_ID = "$cost"
PNG_DPI = "144"


# ---- the graph ------------------------------------------------------------

def _node_ops(spec, net):
    """{node name: configured op} of a spec, from ``net`` when given."""
    if net is not None:
        return {step.name: step.op for step in net.steps}
    return {node["name"]: graph_mod.make_op(node)
            for node in spec["graph"]["nodes"]}


def _depths(dag):
    """Longest-path distance of every vertex from a graph input."""
    depth = {}
    for v in nx.topological_sort(dag):
        preds = [depth[u] for u in dag.predecessors(v)]
        depth[v] = 1 + max(preds) if preds else 0
    return depth


def skip_edges(dag, families):
    """Edges ``(u, v, key)`` that are skip connections.

    An input of a merge node is a skip when it lies closer to the graph
    input (by longest path) than the merge's deepest input: the other
    inputs went through layers that this one bypasses.

    Parameters
    ----------
    dag : networkx.MultiDiGraph
        The compiled graph (``Network.dag`` or ``graph.to_digraph``).
    families : dict of str -> str
        Op family of every node.

    Returns
    -------
    set of (str, str, int)
    """
    depth = _depths(dag)
    skips = set()
    for v, family in families.items():
        if family != "merge":
            continue
        edges = list(dag.in_edges(v, keys=True))
        deepest = max(depth[u] for u, _, _ in edges)
        skips.update(e for e in edges if depth[e[0]] < deepest)
    return skips


def _main_chain(dag, output, skips):
    """Vertices on the path from an input to the output, skips avoided."""
    depth = _depths(dag)
    chain, v = [output], output
    while True:
        preds = [u for u, _, k in dag.in_edges(v, keys=True)
                 if (u, v, k) not in skips]
        if not preds:
            return chain
        v = max(preds, key=lambda u: depth[u])
        chain.append(v)


# ---- labels ---------------------------------------------------------------

def _text(value, size=None, colour=None, bold=False):
    out = html.escape(str(value))
    if bold:
        out = f"<b>{out}</b>"
    attrs = (f' point-size="{size}"' if size else "") + \
        (f' color="{colour}"' if colour else "")
    return f"<font{attrs}>{out}</font>" if attrs else out


def _node_label(name, kind, width, count, shapes, params):
    lines = [_text(name, 12, bold=True) + "  " + _text(kind, 10)]
    details = []
    if shapes:
        details.append(f"(n, {width})")
    if params and count:
        details.append(f"{count:,} params")
    if details:
        lines.append(_text(" \u00b7 ".join(details), 9, TEXT_GREY))
    return "<" + "<br/>".join(lines) + ">"


def _cost_label(loss):
    return ("<" + _text("cost", 12, bold=True) + "  "
            + _text(loss["op"], 10) + "<br/>"
            + _text(f"+ L2, lambda = {loss['l2']:g}", 9, TEXT_GREY) + ">")


def _graph_label(spec, total, families, has_skip, params):
    title = _text(spec["name"], 12, bold=True)
    if params:
        title += _text(f"  \u00b7  {total:,} parameters", 11)
    cells = [f'<td bgcolor="{FAMILY_COLOURS[f]}" border="1" '
             f'color="#9a9a9a">{_text(f, 9)}</td>' for f in families]
    if has_skip:
        cells.append("<td>" + _text("- - - skip", 9, SKIP_COLOUR, True)
                     + "</td>")
    return ('<<table border="0" cellspacing="4" cellpadding="3">'
            f'<tr><td colspan="{max(len(cells), 1)}">{title}</td></tr>'
            f'<tr>{"".join(cells)}</tr></table>>')


# ---- public ---------------------------------------------------------------

def to_dot(spec, net=None, rankdir="TB", shapes=True, params=True):
    """The Graphviz diagram of a spec's network.

    Parameters
    ----------
    spec : Spec, dict, str or Path
        A loaded spec, or anything ``load_spec`` accepts (template or
        explicit graph).
    net : Network, optional
        The compiled network of ``spec``; compiled here when omitted
        (without initialising any parameters).
    rankdir : {"TB", "LR"}
        Top to bottom or left to right.
    shapes, params : bool
        Show each value's shape ``(n, d)``; show parameter counts.

    Returns
    -------
    graphviz.Digraph

    Raises
    ------
    GraphnetError
        For an unknown ``rankdir``; SpecError for a bad spec.
    """
    if rankdir not in RANKDIRS:
        raise GraphnetError(f"rankdir: unknown direction {rankdir!r}; "
                            f"valid choices: {', '.join(RANKDIRS)}")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    graph = spec["graph"]
    if net is not None:
        dag, widths = net.dag, net.widths
    else:
        dag = graph_mod.to_digraph(graph)
        widths = graph_mod.infer_widths(graph, dag=dag)
    ops = _node_ops(spec, net)
    families = {name: (op.family if op.family in FAMILY_COLOURS else "other")
                for name, op in ops.items()}
    counts = {node["name"]: ops[node["name"]].count_params(
        [widths[s] for s in node["inputs"]]) for node in graph["nodes"]}
    total = net.n_params() if net is not None else sum(counts.values())
    skips = skip_edges(dag, families)
    chain = set(_main_chain(dag, graph["output"], skips))
    used = [f for f in FAMILY_COLOURS if f in set(families.values())]

    dot = graphviz.Digraph(name=spec["name"], graph_attr={
        "rankdir": rankdir, "fontname": FONT, "labelloc": "b",
        "nodesep": "0.35", "ranksep": "0.3",
        "label": _graph_label(spec, total, used, bool(skips), params),
    }, node_attr={"shape": "box", "style": "rounded,filled",
                  "fontname": FONT, "color": "#7a7a7a", "margin": "0.15,0.07"},
        edge_attr={"color": EDGE_COLOUR, "arrowsize": "0.7",
                   "fontname": FONT, "fontsize": "9"})
    for name, width in graph["inputs"].items():
        dot.node(name, _node_label(name, "input", width, 0, shapes, params),
                 fillcolor="white", group="main" if name in chain else None)
    for node in graph_mod.topological_nodes(graph, dag):
        name = node["name"]
        kind = node["op"] + (", output" if name == graph["output"] else "")
        extra = {"peripheries": "2"} if name == graph["output"] else {}
        if name in chain:
            extra["group"] = "main"
        dot.node(name, _node_label(name, kind, widths[name], counts[name],
                                   shapes, params),
                 fillcolor=FAMILY_COLOURS[families[name]], **extra)
    dot.node(COST_ID, _cost_label(spec["loss"]), fillcolor="white",
             style="rounded,filled,bold", group="main")
    for node in graph_mod.topological_nodes(graph, dag):
        edges = sorted(dag.in_edges(node["name"], keys=True, data="slot"),
                       key=lambda e: e[3])
        for u, v, key, _ in edges:
            if (u, v, key) in skips:
                dot.edge(u, v, label=" skip ", constraint="false",
                         style="dashed", color=SKIP_COLOUR, penwidth="1.6",
                         fontcolor=SKIP_COLOUR)
            else:
                dot.edge(u, v)
    dot.edge(graph["output"], COST_ID)
    return dot


def _write_atomic(path, data):
    """Write bytes to ``path`` atomically; OS errors become GraphnetError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode="wb")
    except OSError as exc:
        raise GraphnetError(f"cannot write {path}: "
                            f"{exc.strerror or exc}") from None


def render_spec(spec, path, rankdir="TB", shapes=True, params=True):
    """Draw a spec's network to ``path`` (.svg, .png, .pdf or .gv).

    Parameters
    ----------
    spec : Spec, dict, str or Path
        What ``to_dot`` accepts.
    path : str or Path
        Output file; its extension picks the format. Missing parent
        folders are created.
    rankdir, shapes, params
        As for ``to_dot``.

    Returns
    -------
    (Path, str or None)
        The file written and None; or, when Graphviz's ``dot`` is missing
        or fails, the DOT source written next to ``path`` (same stem,
        ``.gv``) and a one-line message saying how to render it.

    Raises
    ------
    GraphnetError
        For an unknown extension or an unwritable path; SpecError for a
        bad spec.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise GraphnetError(
            f"{path}: unknown diagram format {path.suffix or '(none)'!r}; "
            f"valid extensions: {', '.join('.' + f for f in FORMATS)}")
    dot = to_dot(spec, rankdir=rankdir, shapes=shapes, params=params)
    if fmt == "gv":
        _write_atomic(path, dot.source.encode("utf-8"))
        return path, None
    if fmt == "png":
        dot = dot.copy()
        dot.graph_attr["dpi"] = PNG_DPI
    reason = None
    if shutil.which("dot") is None:
        reason = "Graphviz's dot was not found on PATH"
    else:
        try:
            data = dot.pipe(format=fmt, quiet=True)
        except graphviz.ExecutableNotFound:
            reason = "Graphviz's dot was not found on PATH"
        except graphviz.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode("utf-8", "replace").strip()
            reason = "dot failed" + (f" ({detail.splitlines()[0]})"
                                     if detail else "")
    if reason is None:
        _write_atomic(path, data)
        return path, None
    gv = path.with_suffix(".gv")
    _write_atomic(gv, dot.source.encode("utf-8"))
    message = (f"{reason}: wrote the DOT source to {gv} instead; render it "
               f"with `dot -T{fmt} {gv} -o {path}` (on Debian/Ubuntu the "
               "package graphviz provides dot)")
    log.debug(message)
    return gv, message


def cli_render(args):
    """``graphnet render``: print the file written, a fallback note to stderr.

    Returns
    -------
    int
        0, also when the DOT source was written in place of the image.
    """
    spec = load_spec(args.spec, overrides=args.overrides)
    written, message = render_spec(spec, args.output, rankdir=args.rankdir,
                                   shapes=args.shapes, params=args.params)
    print(written)
    if message:
        print(f"graphnet render: {message}", file=sys.stderr)
    return 0
