"""Spec loading: templates, defaults, overrides, and the error messages."""

import json

import pytest

import graphnet as gn
from graphnet.errors import SpecError

from conftest import SPECS, mlp


def nodes(spec):
    return [(n["name"], n["op"], n["inputs"]) for n in spec["graph"]["nodes"]]


def test_template_expands_to_explicit_nodes():
    spec = gn.load_spec(mlp([50, 50], "batchnorm"))
    assert nodes(spec) == [
        ("fc1", "linear", ["x"]), ("bn1", "batchnorm", ["fc1"]),
        ("h1", "relu", ["bn1"]), ("fc2", "linear", ["h1"]),
        ("bn2", "batchnorm", ["fc2"]), ("h2", "relu", ["bn2"]),
        ("scores", "linear", ["h2"])]
    assert spec["graph"]["output"] == "scores"


def test_bn_after_relu_is_wiring():
    spec = gn.load_spec(mlp([50], "batchnorm", "after_relu"))
    assert nodes(spec)[:3] == [("fc1", "linear", ["x"]),
                               ("h1", "relu", ["fc1"]),
                               ("bn1", "batchnorm", ["h1"])]


def test_defaults_are_filled():
    spec = gn.load_spec(mlp([10]))
    assert spec["train"]["batch_size"] == 100
    assert spec["train"]["dtype"] == "float32"
    assert spec["train"]["bn_stats"] == {"type": "ema", "alpha": 0.9}
    assert spec["train"]["optimizer"] == {"type": "sgd", "momentum": 0.0,
                                          "nesterov": False}
    assert spec["data"] == {"dataset": "cifar10", "train": 45000,
                            "val": 5000, "preprocess": "standardize"}
    assert spec["graph"]["nodes"][0]["bias"] is True


def test_expanded_spec_is_a_fixed_point():
    spec = gn.load_spec(SPECS / "a3" / "9layer-bn.json")
    again = gn.load_spec(json.loads(spec.to_json()))
    assert again == spec


@pytest.mark.parametrize("name", ["2layer", "3layer", "3layer-bn", "9layer",
                                  "9layer-bn"])
def test_study_specs(name):
    spec = gn.load_spec(SPECS / "a3" / f"{name}.json")
    t = spec["train"]
    assert spec.name == name
    assert t["batch_size"] == 100 and spec["loss"]["l2"] == 0.005
    assert t["schedule"] == {"type": "cyclic", "eta_min": 1e-5,
                             "eta_max": 0.1, "step_size": 2250,
                             "cycles": 2, "decay": 1.0}
    assert t["shuffle"] and t["bn_stats"]["alpha"] == 0.9
    bn = [n for n in spec["graph"]["nodes"] if n["op"] == "batchnorm"]
    assert bool(bn) == name.endswith("-bn")
    assert all(n["init"] == "he" for n in spec["graph"]["nodes"]
               if n["op"] == "linear")


def test_overrides_by_dotted_path():
    spec = gn.load_spec(SPECS / "a3" / "3layer.json",
                        overrides={"loss.l2": 0.01,
                                   "train.schedule.cycles": 3,
                                   "graph.mlp.hidden": [20]})
    assert spec["loss"]["l2"] == 0.01
    assert spec["train"]["schedule"]["cycles"] == 3
    assert [n.get("units") for n in spec["graph"]["nodes"]] == [20, None, 10]
    spec = gn.load_spec(mlp([5]), overrides=["train.optimizer.momentum=0.9",
                                             "name=quick"])
    assert spec["train"]["optimizer"]["momentum"] == 0.9
    assert spec.name == "quick"


def explicit(*node_list, output="out"):
    return {"graph": {"inputs": {"x": 3072}, "nodes": list(node_list),
                      "output": output}}


FC = {"name": "out", "op": "linear", "inputs": ["x"], "units": 10}


@pytest.mark.parametrize("raw, path, text", [
    ([], "", "expected a JSON object"),
    ({}, "graph", "required key is missing"),
    ({**mlp([5]), "trian": {}}, "trian", "did you mean 'train'"),
    (mlp([5, -3]), r"graph.mlp.hidden\[1\]", "expected an integer >= 1"),
    (mlp(["5"]), r"graph.mlp.hidden\[0\]", "found '5'"),
    ({**mlp([5]), "loss": {"l2": -1}}, "loss.l2", ">= 0, found -1"),
    ({**mlp([5]), "train": {"bn_stats": {"type": "ema", "alpha": 1.5}}},
     "train.bn_stats.alpha", "< 1"),
    ({**mlp([5]), "train": {"schedule": {"type": "cyclic", "eta_min": 0.2,
                                         "eta_max": 0.1, "step_size": 10,
                                         "cycles": 1}}},
     "train.schedule.eta_min", "eta_min <= eta_max"),
    ({**mlp([5]), "train": {"schedule": {"type": "triangle"}}},
     "train.schedule.type", "valid choices: constant, cosine, cyclic"),
    ({**mlp([5]), "train": {"optimizer": {"type": "sgd", "lr": 1}}},
     "train.optimizer.lr", "unknown key"),
    ({**mlp([5]), "train": {"schedule": {"type": "constant", "eta": 0.1}}},
     "train", "training length missing"),
    ({**mlp([5]), "data": {"train": 48000}}, "data.val",
     "at most 50000 images, found 48000 \\+ 5000"),
    ({**mlp([5], norm="batchnrom")}, "graph.mlp.norm",
     "did you mean 'batchnorm'"),
    (mlp([5], init={"normal": 0}), "graph.mlp.init.normal", "> 0"),
    (explicit({**FC, "op": "dense"}), r"graph.nodes\[0\].op",
     "unknown op 'dense'.*valid choices: add, batchnorm"),
    (explicit({**FC, "inputs": ["y"]}), r"graph.nodes\[0\].inputs\[0\]",
     "reads unknown 'y'"),
    (explicit(FC, FC), r"graph.nodes\[1\].name", "duplicate name 'out'"),
    (explicit({**FC, "units": 7}), "graph.output", "has width 7"),
    (explicit(FC, output="fc9"), "graph.output", "unknown node 'fc9'"),
    (explicit({"name": "a", "op": "relu", "inputs": ["b"]},
              {"name": "b", "op": "relu", "inputs": ["a"]},
              {**FC, "inputs": ["b"]}),
     r"graph.nodes\[0\].inputs", "cycle: a -> b -> a"),
    (explicit({"name": "p", "op": "linear", "inputs": ["x"], "units": 5},
              {"name": "q", "op": "linear", "inputs": ["x"], "units": 6},
              {"name": "s", "op": "add", "inputs": ["p", "q"]},
              {**FC, "inputs": ["s"]}),
     r"graph.nodes\[2\]", "node 's' \\(add\\): .*widths 5, 6"),
    (explicit({"name": "s", "op": "add", "inputs": ["x"]}, FC),
     r"graph.nodes\[0\].inputs", "takes at least 2 input"),
    (explicit({**FC, "units": 10.5}), r"graph.nodes\[0\].units",
     "expected an integer"),
    ({**mlp([5]), "train": {"dtype": "float16"}}, "train.dtype",
     "valid choices: float32, float64"),
])
def test_bad_specs_say_where_and_what(raw, path, text):
    with pytest.raises(SpecError, match=text) as info:
        gn.load_spec(raw)
    assert info.value.path == path.replace("\\", "")


def test_bad_files(tmp_path):
    cases = {"missing.json": None, "empty.json": "", "trunc.json": '{"graph":',
             "nan.json": '{"graph": {"mlp": {"hidden": [NaN]}}}',
             "deep.json": "[" * 100000 + "]" * 100000}
    messages = {"missing.json": "file not found", "empty.json": "empty",
                "trunc.json": "not valid JSON.*line 1",
                "nan.json": "NaN is not a valid JSON number",
                "deep.json": "nested too deeply"}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(SpecError, match=messages[name]):
            gn.load_spec(path)


def test_bad_overrides():
    with pytest.raises(SpecError, match="KEY=VALUE"):
        gn.load_spec(mlp([5]), overrides=["loss.l2"])
    with pytest.raises(SpecError, match="loss.l2"):
        gn.load_spec(mlp([5]), overrides=["loss.l2=-0.1"])
    with pytest.raises(SpecError, match="train.schedule.cylces.*did you mean"):
        gn.load_spec(mlp([5]), overrides=["train.schedule.cylces=3"])


@pytest.mark.parametrize("key, path", [("0[", '["0["]'), ("a[1]", '["a[1]"]'),
                                       ("", '[""]'), ("x y", '["x y"]')])
def test_odd_keys_are_quoted_in_error_paths(key, path):
    # written plainly, "0[" or "a[1]" would read as a list index
    with pytest.raises(gn.SpecError) as err:
        gn.load_spec({**mlp([5]), key: 1})
    assert err.value.path == path
    with pytest.raises(gn.SpecError) as err:
        gn.load_spec({**mlp([5]), "train": {key: 1}})
    assert err.value.path == "train" + path
