"""Specs: load JSON, apply overrides, expand templates, validate, fill defaults.

A spec is checked in one pass from top to bottom; the first problem
raises ``SpecError`` naming its JSON path. The result is a ``Spec``: a
plain dict holding the fully expanded spec with every default filled in,
which is what run folders store as ``spec.json``.
"""

import copy
import json
import re
from pathlib import Path

from . import graph as graph_mod
from .bnstats import BN_STATS
from .errors import SpecError, choices_hint, describe
from .init import check_init
from .losses import LOSSES
from .ops import OPS
from .optim import OPTIMIZERS
from .schedules import SCHEDULES
from .schema import (Any, Bool, List, Map, Nullable, Number, Object, String,
                     check_keys, fill, join)

VERSION = 1
DATASETS = {"cifar10": {"features": 3072, "classes": 10, "images": 50000}}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# a spec's name becomes part of a folder name: letters, digits, . _ -
SPEC_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
# 10^8 float32 params are 400 MB before gradients and optimizer moments
MAX_PARAMS = 10 ** 8


class Spec(dict):
    """A validated, expanded spec; a dict with a few conveniences."""

    @property
    def name(self):
        return self["name"]

    def to_json(self):
        """The spec as indented JSON text."""
        return json.dumps(self, indent=2) + "\n"


def typed(registry, default):
    """Field for a ``{"type": NAME, ...}`` section checked by a registry."""
    def check(value, path):
        if not isinstance(value, dict):
            raise SpecError(path, f"expected an object with a \"type\", "
                                  f"found {describe(value)}")
        if "type" not in value and default is not None:
            # a partial section refines the default one
            value = {**default, **value}
        if "type" not in value:
            raise SpecError(join(path, "type"), "required key is missing"
                            f"{choices_hint('', registry)}")
        cls = registry.lookup(value["type"], join(path, "type"))
        fields = {"type": String(), **cls.fields}
        check_keys(value, fields, path)
        return fill(value, fields, path)
    return Any(check, default=default)


# ---- the sections -------------------------------------------------------

DATA = Object({
    "dataset": String(default="cifar10", choices=DATASETS),
    "train": Number(default=45000, integer=True, low=1),
    "val": Number(default=5000, integer=True, low=0),
    "preprocess": String(default="standardize",
                         choices=("standardize", "scale", "none")),
}, default={})

LOSS = Object({
    "op": String(default="softmax_cross_entropy", choices=LOSSES),
    "l2": Number(default=0.0, low=0),
}, default={})

TRAIN = Object({
    "batch_size": Number(default=100, integer=True, low=1),
    "optimizer": typed(OPTIMIZERS, {"type": "sgd"}),
    "schedule": typed(SCHEDULES, {"type": "cyclic", "eta_min": 1e-5,
                                  "eta_max": 0.1, "step_size": 2250,
                                  "cycles": 2}),
    "epochs": Nullable(Number(integer=True, low=1)),
    "steps": Nullable(Number(integer=True, low=1)),
    "shuffle": Bool(default=True),
    "bn_stats": typed(BN_STATS, {"type": "ema", "alpha": 0.9}),
    "augment": Nullable(Object({
        "flip": Number(default=0.5, low=0, high=1),
        "shift": Number(default=2, integer=True, low=0, high=8),
    })),
    "seed": Number(default=0, integer=True, low=0),
    "dtype": String(default="float32", choices=("float32", "float64")),
    "eval_every": Nullable(Number(integer=True, low=1),
                           doc="steps between evaluations; default: ten "
                               "per cycle, else one per epoch"),
    "eval_train": Nullable(Number(integer=True, low=1),
                           doc="training images evaluated; default all"),
    "checkpoint_every": Nullable(Number(integer=True, low=1),
                                 doc="steps between checkpoints; default: "
                                     "at every evaluation"),
}, default={})

TEMPLATE = Object({
    "inputs": Number(default=3072, integer=True, low=1),
    "hidden": List(Number(integer=True, low=1), default=[]),
    "classes": Number(default=10, integer=True, low=2),
    "norm": String(default="none", choices=("none", "batchnorm")),
    "norm_position": String(default="before_relu",
                            choices=("before_relu", "after_relu")),
    "init": Any(check_init, default="he"),
    "eps": Number(default=1e-5, low=0, open_low=True, high=1),
    "dropout": Number(default=0.0, low=0, high=1, open_high=True),
    "residual": Bool(default=False, doc="hidden[0] is a stem, then pairs "
                                        "(inner, width) are residual blocks"),
})

TOP = {
    "version": Number(default=VERSION, integer=True, low=VERSION,
                      high=VERSION),
    "name": String(default=None),
    "description": String(default=""),
    "data": DATA,
    "graph": Any(),
    "loss": LOSS,
    "train": TRAIN,
}


# ---- templates -----------------------------------------------------------

def expand_mlp(t, path="graph.mlp"):
    """Expand a validated ``mlp`` template into explicit graph JSON.

    Layer i is ``fc<i>`` (linear), then ``bn<i>`` and ``h<i>`` (ReLU) in
    the order ``norm_position`` gives, then ``drop<i>`` when dropout is
    set; the last linear is ``scores``.

    With ``residual`` true, ``hidden[0]`` is a plain stem layer of width
    w, and each following pair ``(a, w)`` of entries is a residual block
    in the manner of a transformer's feed-forward block:

        s = W2 relu(W1 h + b1) + b2 + h,   h' = relu(BN(s))

    ``fc<i>`` (a units) and ``h<i>`` (ReLU, no BN in the middle), then
    ``fc<i+1>`` (w units), ``add<i+1>`` (the skip), and ``bn<i+1>``,
    ``h<i+1>``, ``drop<i+1>`` as for a plain layer. The second entry of
    a pair must equal the stream width w; an unpaired last entry is a
    plain layer (it may change the width before ``scores``). So
    ``hidden: [w, w, w, w, w]`` is a stem and two blocks: six linear
    layers with ``scores``. Dropout, when set, follows every ReLU.
    """
    nodes, prev = [], "x"
    hidden = t["hidden"]
    bn = t["norm"] == "batchnorm"

    def add(name, op, inputs, **attrs):
        nodes.append({"name": name, "op": op, "inputs": inputs, **attrs})
        return name

    def finish(i, prev):
        # normalization, ReLU and dropout at a layer's (or block's) output
        if bn and t["norm_position"] == "before_relu":
            prev = add(f"bn{i}", "batchnorm", [prev], eps=t["eps"])
        prev = add(f"h{i}", "relu", [prev])
        if bn and t["norm_position"] == "after_relu":
            prev = add(f"bn{i}", "batchnorm", [prev], eps=t["eps"])
        if t["dropout"] > 0:
            prev = add(f"drop{i}", "dropout", [prev], p=t["dropout"])
        return prev

    def linear(i, prev):
        return add(f"fc{i}", "linear", [prev], units=hidden[i - 1],
                   init=t["init"])

    i = 1
    while i <= len(hidden):
        block = t["residual"] and 1 < i < len(hidden)
        if not block:
            prev = finish(i, linear(i, prev))
            i += 1
            continue
        width = hidden[i - 2]
        if hidden[i] != width:
            raise SpecError(f"{path}.hidden[{i}]", f"a residual block ends "
                            f"at the stream width {width} (hidden[{i - 2}]), "
                            f"found {hidden[i]}")
        inner = add(f"h{i}", "relu", [linear(i, prev)])
        if t["dropout"] > 0:
            inner = add(f"drop{i}", "dropout", [inner], p=t["dropout"])
        skip = add(f"add{i + 1}", "add", [linear(i + 1, inner), prev])
        prev = finish(i + 1, skip)
        i += 2
    add("scores", "linear", [prev], units=t["classes"], init=t["init"])
    return {"inputs": {"x": t["inputs"]}, "nodes": nodes, "output": "scores"}


TEMPLATES = {"mlp": (TEMPLATE, expand_mlp)}


# ---- the graph section ---------------------------------------------------

GRAPH = {
    "inputs": Map(Number(integer=True, low=1), min_len=1),
    "nodes": List(Any(), min_len=1),
    "output": String(),
}
NODE_BASE = {"name": String(), "op": String(),
             "inputs": List(String(), min_len=1)}


def check_graph(value, path="graph"):
    """Validate graph JSON (expanding a template); return explicit form."""
    if not isinstance(value, dict):
        raise SpecError(path, f"expected an object, found {describe(value)}")
    template = [k for k in value if k in TEMPLATES]
    if template:
        if len(value) != 1:
            extra = sorted(set(value) - {template[0]})
            raise SpecError(join(path, extra[0]), f"a {template[0]!r} template "
                            "stands alone in graph; found other keys too")
        schema, expand = TEMPLATES[template[0]]
        value = expand(schema.check(value[template[0]],
                                    join(path, template[0])))
    check_keys(value, GRAPH, path)
    out = fill(value, GRAPH, path)
    if len(out["inputs"]) != 1:
        raise SpecError(join(path, "inputs"), "expected exactly one input, "
                        f"found {len(out['inputs'])}")
    for name in out["inputs"]:
        check_name(name, join(path, "inputs"))
    out["nodes"] = [check_node(n, join(join(path, "nodes"), i))
                    for i, n in enumerate(out["nodes"])]
    graph_mod.check_structure(out, path)
    return out


def check_name(name, path):
    if not NAME_RE.match(name):
        raise SpecError(path, "expected a name of letters, digits, '_' or "
                              f"'-' starting with a letter, found {name!r}")


def check_node(node, path):
    """Validate one node: name, op, inputs, and the op's own attributes."""
    if not isinstance(node, dict):
        raise SpecError(path, f"expected a node object, found {describe(node)}")
    for key in ("name", "op"):
        if key not in node:
            raise SpecError(join(path, key), "required key is missing")
    op = OPS.lookup(node["op"], join(path, "op"))
    fields = {**NODE_BASE, **op.attrs}
    check_keys(node, fields, path)
    out = fill(node, fields, path)
    check_name(out["name"], join(path, "name"))
    low, high = op.arity
    count = len(out["inputs"])
    if count < low or (high is not None and count > high):
        want = f"{low}" if low == high else (
            f"at least {low}" if high is None else f"{low} to {high}")
        raise SpecError(join(path, "inputs"), f"op {out['op']!r} takes {want} "
                                              f"input(s), found {count}")
    return out


# ---- loading -------------------------------------------------------------

def validate(raw, name=None):
    """Validate a spec dict and return the expanded ``Spec``.

    Parameters
    ----------
    raw : dict
        Parsed spec JSON (overrides already applied).
    name : str, optional
        Name to use when the spec has none (the file's stem).

    Raises
    ------
    SpecError
        Naming the JSON path of the first problem.
    """
    if not isinstance(raw, dict):
        raise SpecError("", f"expected a JSON object at the top, "
                            f"found {describe(raw)}")
    check_keys(raw, TOP, "")
    if "graph" not in raw:
        raise SpecError("graph", "required key is missing")
    spec = fill(raw, TOP, "")
    spec["graph"] = check_graph(raw["graph"])
    if spec["name"] is None:
        spec["name"] = name or "net"
    if not SPEC_NAME_RE.match(spec["name"]):
        raise SpecError("name", "expected up to 100 letters, digits, '.', "
                        f"'_' or '-', found {spec['name']!r}")
    check_consistency(spec)
    return Spec(spec)


def check_consistency(spec):
    """Checks that span sections: data sizes, widths, training length."""
    data, train = spec["data"], spec["train"]
    info = DATASETS[data["dataset"]]
    if data["train"] + data["val"] > info["images"]:
        raise SpecError("data.val", f"train + val must be at most "
                        f"{info['images']} images, found {data['train']} + "
                        f"{data['val']} = {data['train'] + data['val']}")
    g = spec["graph"]
    (in_name, width), = g["inputs"].items()
    if width != info["features"]:
        raise SpecError(f"graph.inputs.{in_name}", f"{data['dataset']} has "
                        f"{info['features']} features, found {width}")
    widths = graph_mod.infer_widths(g)
    check_size(g, widths)
    out_width = widths[g["output"]]
    if out_width != info["classes"]:
        raise SpecError("graph.output", f"{data['dataset']} has "
                        f"{info['classes']} classes, output "
                        f"{g['output']!r} has width {out_width}")
    sched = train["schedule"]
    if sched["type"] == "cyclic" and sched["eta_min"] > sched["eta_max"]:
        raise SpecError("train.schedule.eta_min", "expected eta_min <= "
                        f"eta_max ({sched['eta_max']}), "
                        f"found {sched['eta_min']}")
    if train["steps"] is None and train["epochs"] is None and not (
            sched["type"] == "cyclic" and sched["cycles"]):
        raise SpecError("train", "training length missing: set train.steps, "
                                 "train.epochs or train.schedule.cycles")


def check_size(g, widths):
    """Refuse a network too large to allocate (a mistyped width)."""
    counts = [graph_mod.make_op(n).count_params([widths[s] for s in
                                                 n["inputs"]])
              for n in g["nodes"]]
    total = sum(counts)
    if total > MAX_PARAMS:
        i = max(range(len(counts)), key=counts.__getitem__)
        node = g["nodes"][i]
        where = f"graph.nodes[{i}]" + (".units" if "units" in node else "")
        raise SpecError(where, f"expected at most "
                        f"{MAX_PARAMS:,} parameters in all, found "
                        f"{total:,}; node {node['name']!r} alone has "
                        f"{counts[i]:,} (is a width mistyped?)")


def parse_override(text):
    """Split ``KEY=VALUE``; the value is JSON when it parses, else a string."""
    if "=" not in text:
        raise SpecError(f"--set {text}", "expected KEY=VALUE, e.g. "
                                         "loss.l2=0.01")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value, parse_constant=_reject_constant,
                           object_pairs_hook=_unique_keys)
    except RecursionError:
        raise SpecError(f"--set {key}", "value nested too deeply") from None
    except SpecError as exc:
        raise SpecError(f"--set {key}", exc.detail) from None
    except ValueError:
        pass  # not JSON: kept as text; the field says what it expected
    return key.strip(), value


def apply_overrides(raw, overrides):
    """Set dotted paths (``train.schedule.cycles``) in a copy of ``raw``.

    Missing objects along the path are created; a numeric segment indexes
    a list (``graph.nodes.3.units``).
    """
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        if not key or any(p == "" for p in parts):
            raise SpecError(key, "expected a dotted path like loss.l2")
        target = raw
        for i, part in enumerate(parts):
            where = ".".join(parts[:i + 1])
            last = i == len(parts) - 1
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise SpecError(where, f"expected an index below "
                                           f"{len(target)}, found {part!r}")
                part = int(part)
            elif not isinstance(target, dict):
                raise SpecError(where, "cannot set a key inside "
                                       f"{describe(target)}")
            if last:
                target[part] = value
            else:
                if isinstance(target, dict) and not isinstance(
                        target.get(part), (dict, list)):
                    target[part] = {}
                target = target[part]
    return raw


def read_json(path):
    """Parse a JSON file, turning every failure into a SpecError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"cannot read: {exc}") from None
    if not text.strip():
        raise SpecError(str(path), "file is empty, expected a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SpecError(str(path), f"not valid JSON: {exc.msg} at line "
                                   f"{exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise SpecError(str(path), "JSON nested too deeply") from None
    except SpecError as exc:
        raise SpecError(str(path), exc.detail) from None
    except ValueError as exc:
        raise SpecError(str(path), str(exc)) from None


def _reject_constant(name):
    raise ValueError(f"{name} is not a valid JSON number")


def _unique_keys(pairs):
    """Object hook: a key given twice is an error, not a silent overwrite."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise SpecError("", f"key {key!r} appears twice in one object "
                                "(JSON would keep only the last)")
        out[key] = value
    return out


def load_spec(source, overrides=None):
    """Load, override, expand and validate a spec.

    Parameters
    ----------
    source : str, Path or dict
        A spec file, or an already parsed spec.
    overrides : dict or list of str, optional
        ``{"loss.l2": 0.01}`` or ``["loss.l2=0.01"]``.

    Returns
    -------
    Spec

    Raises
    ------
    SpecError
        When the file or any value in it is malformed.
    """
    if not isinstance(source, (str, Path)):
        raw, name = source, None
    else:
        raw, name = read_json(source), Path(source).stem
    if isinstance(overrides, (list, tuple)):
        overrides = dict(parse_override(o) for o in overrides)
    try:
        if overrides:
            if not isinstance(raw, dict):
                raise SpecError("", f"expected a JSON object at the top, "
                                    f"found {describe(raw)}")
            raw = apply_overrides(raw, overrides)
        return validate(raw, name=name)
    except RecursionError:
        raise SpecError("", "spec nested too deeply") from None
