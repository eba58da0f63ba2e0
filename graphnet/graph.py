"""Compile graph JSON into a networkx DAG: names, cycles, widths, order.

The graph has one vertex per graph input and per node, and an edge
``a -> b`` when node ``b`` lists ``a`` among its inputs (an edge carries
the index of that input slot; a node may read one value twice). The
compiled form is the topological order, which the executor walks.
"""

import logging

import networkx as nx

from .errors import SpecError, choices_hint
from .ops import OPS

log = logging.getLogger(__name__)


def node_path(path, index):
    return f"{path}.nodes[{index}]"


def check_structure(graph, path="graph"):
    """Check names, references, acyclicity and widths of explicit graph JSON.

    Raises
    ------
    SpecError
        Naming the node (by JSON path and name) at fault.
    """
    seen = dict.fromkeys(graph["inputs"], "input")
    for i, node in enumerate(graph["nodes"]):
        if node["name"] in seen:
            raise SpecError(node_path(path, i) + ".name",
                            f"duplicate name {node['name']!r}: already used "
                            f"by an earlier {seen[node['name']]}")
        seen[node["name"]] = "node"
    for i, node in enumerate(graph["nodes"]):
        for j, source in enumerate(node["inputs"]):
            if source not in seen:
                raise SpecError(f"{node_path(path, i)}.inputs[{j}]",
                                f"node {node['name']!r} reads unknown "
                                f"{source!r}{choices_hint(source, seen)}")
    if graph["output"] not in seen:
        raise SpecError(f"{path}.output", f"unknown node "
                        f"{graph['output']!r}{choices_hint(graph['output'], seen)}")
    dag = to_digraph(graph)
    try:
        cycle = nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = [a for a, _, *_ in cycle] + [cycle[0][0]]
        first = next(i for i, n in enumerate(graph["nodes"])
                     if n["name"] == names[0])
        raise SpecError(node_path(path, first) + ".inputs",
                        "the graph has a cycle: " + " -> ".join(names))
    infer_widths(graph, path, dag)
    unused = set(graph["nodes"] and [n["name"] for n in graph["nodes"]]) - \
        nx.ancestors(dag, graph["output"]) - {graph["output"]}
    if unused:
        log.warning("nodes not used by the output %r: %s", graph["output"],
                    ", ".join(sorted(unused)))


def to_digraph(graph):
    """The networkx DiGraph of explicit graph JSON (no checks)."""
    dag = nx.MultiDiGraph()
    for name, width in graph["inputs"].items():
        dag.add_node(name, op="input", width=width)
    for node in graph["nodes"]:
        dag.add_node(node["name"], op=node["op"], spec=node)
    for node in graph["nodes"]:
        for slot, source in enumerate(node["inputs"]):
            dag.add_edge(source, node["name"], slot=slot)
    return dag


def topological_nodes(graph, dag=None):
    """Node dicts of ``graph`` in a deterministic topological order."""
    dag = dag if dag is not None else to_digraph(graph)
    by_name = {n["name"]: n for n in graph["nodes"]}
    index = {n["name"]: i for i, n in enumerate(graph["nodes"])}
    order = nx.lexicographical_topological_sort(
        dag, key=lambda name: index.get(name, -1))
    return [by_name[name] for name in order if name in by_name]


def infer_widths(graph, path="graph", dag=None):
    """Width of every value (inputs and nodes), in topological order.

    Raises
    ------
    SpecError
        When an op rejects its input widths, e.g. add of 50 and 30.
    """
    widths = dict(graph["inputs"])
    index = {n["name"]: i for i, n in enumerate(graph["nodes"])}
    for node in topological_nodes(graph, dag):
        op = make_op(node)
        ins = [widths[s] for s in node["inputs"]]
        try:
            widths[node["name"]] = op.infer_width(ins)
        except ValueError as exc:
            raise SpecError(node_path(path, index[node["name"]]),
                            f"node {node['name']!r} ({node['op']}): "
                            f"{exc}") from None
    return widths


def make_op(node):
    """The configured op instance of a validated node dict."""
    attrs = {k: v for k, v in node.items()
             if k not in ("name", "op", "inputs")}
    return OPS[node["op"]](node["name"], attrs)
