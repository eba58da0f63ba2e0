"""The study's extensions: residual template, BN after ReLU, optimizers
and schedules, augmentation and dropout end to end, specs/beyond/."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn
from graphnet.data import Dataset
from graphnet.errors import SpecError
from graphnet.gradcheck import check_spec
from graphnet.optim import OPTIMIZERS
from graphnet.schedules import SCHEDULES
from graphnet.trainer import Trainer

from conftest import SPECS, TEST_SPECS, mlp

# every spec of specs/beyond/; suite.json there is a report suite, not a spec
BEYOND = sorted(p for p in (SPECS / "beyond").glob("*.json")
                if p.name != "suite.json")


def wiring(spec):
    return [(n["name"], n["op"], n["inputs"]) for n in spec["graph"]["nodes"]]


# ---- the residual template ---------------------------------------------

def test_residual_template_expands_to_the_hand_written_graph():
    spec = gn.load_spec(mlp([20] * 5, "batchnorm", residual=True))
    assert wiring(spec) == wiring(gn.load_spec(TEST_SPECS / "residual.json"))


def test_residual_template_with_a_trailing_plain_layer():
    spec = gn.load_spec(mlp([8, 16, 8, 4], "batchnorm", residual=True))
    ops = {n["name"]: n for n in spec["graph"]["nodes"]}
    assert ops["add3"]["inputs"] == ["fc3", "h1"]
    assert ops["fc2"]["units"] == 16 and ops["h2"]["inputs"] == ["fc2"]
    assert "bn2" not in ops                  # no BN inside a block
    assert ops["fc4"]["inputs"] == ["h3"] and ops["fc4"]["units"] == 4
    assert ops["scores"]["inputs"] == ["h4"]


def test_residual_block_must_end_at_the_stream_width():
    with pytest.raises(SpecError, match=r"graph\.mlp\.hidden\[2\]: a "
                       r"residual block ends at the stream width 8 "
                       r"\(hidden\[0\]\), found 9"):
        gn.load_spec(mlp([8, 16, 9], "batchnorm", residual=True))


def test_residual_false_is_the_plain_stack():
    plain = gn.load_spec(mlp([8, 8, 8], "batchnorm"))
    assert wiring(plain) == wiring(gn.load_spec(
        mlp([8, 8, 8], "batchnorm", residual=False)))
    assert not any(n["op"] == "add" for n in plain["graph"]["nodes"])


def test_validate_expand_shows_the_skip_nodes(capsys):
    from graphnet.cli import main
    path = str(SPECS / "beyond" / "residual-7layer.json")
    assert main(["validate", path, "--expand"]) == 0
    nodes = json.loads(capsys.readouterr().out)["graph"]["nodes"]
    adds = [n for n in nodes if n["op"] == "add"]
    assert [a["inputs"] for a in adds] == [["fc3", "h1"], ["fc5", "h3"]]
    linear = [n for n in nodes if n["op"] == "linear"]
    assert len(linear) == 7


GRAD_NETS = {
    "residual BN": mlp([12] * 5, "batchnorm", residual=True),
    "residual BN after ReLU, dropout": mlp(
        [12, 7, 12, 6], "batchnorm", "after_relu", residual=True,
        dropout=0.2),
    "residual without BN": mlp([12] * 3, residual=True),
    "BN after ReLU, 4 layers": mlp([20, 15, 10], "batchnorm",
                                   "after_relu"),
}


@pytest.mark.parametrize("name", sorted(GRAD_NETS))
def test_gradients(name):
    spec = gn.load_spec(GRAD_NETS[name])
    rows = check_spec(spec, dims=10, batch=6, steps=3)
    assert {r["param"] for r in rows} == set(gn.build(spec).params)
    worst = max(rows, key=lambda r: r["error"])
    assert worst["error"] < 1e-7, worst


# ---- optimizers and schedules ------------------------------------------

SCHEDULE_CFGS = {
    "constant": {"type": "constant", "eta": 0.01},
    "cyclic": {"type": "cyclic", "eta_min": 1e-5, "eta_max": 0.01,
               "step_size": 3, "decay": 0.5},
    "step": {"type": "step", "eta": 0.01, "every": 4, "gamma": 0.5},
    "exponential": {"type": "exponential", "eta": 0.01, "gamma": 0.9},
    "cosine": {"type": "cosine", "eta_max": 0.01},
}
OPTIMIZER_CFGS = {
    "sgd": {"type": "sgd"},
    "momentum": {"type": "sgd", "momentum": 0.9},
    "nesterov": {"type": "sgd", "momentum": 0.9, "nesterov": True},
    "adam": {"type": "adam"},
}


def test_every_registered_kind_is_covered():
    assert set(SCHEDULE_CFGS) == set(SCHEDULES)
    assert {c["type"] for c in OPTIMIZER_CFGS.values()} == set(OPTIMIZERS)


def fake_data(rng, n=200):
    X = rng.standard_normal((n, 3072)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return Dataset(X, y, X[:40], y[:40], X[:40], y[:40])


@pytest.fixture(autouse=True)
def no_curves(monkeypatch):
    # drawing curves.png costs more than these tiny runs themselves
    monkeypatch.setattr("graphnet.plots.save_curves", lambda *a, **k: None)


@pytest.fixture(scope="module")
def data():
    return fake_data(np.random.default_rng(0))


@pytest.mark.parametrize("opt, sched", list(itertools.product(
    sorted(OPTIMIZER_CFGS), sorted(SCHEDULE_CFGS))))
def test_optimizer_and_schedule_combinations_train(opt, sched, data,
                                                   tmp_path):
    raw = mlp([8], "batchnorm")
    raw["data"] = {"train": 200, "val": 40}
    raw["train"] = {"batch_size": 50, "epochs": 3,
                    "optimizer": OPTIMIZER_CFGS[opt],
                    "schedule": SCHEDULE_CFGS[sched]}
    spec = gn.load_spec(raw)
    trainer = Trainer(spec, data, tmp_path)
    before = trainer.net.params["fc1.W"].copy()
    summary = trainer.run()
    assert summary["status"] == "finished" and summary["steps"] == 12
    etas = [trainer.schedule(t) for t in range(12)]
    assert all(math.isfinite(e) and e > 0 for e in etas[:-1])
    assert not np.array_equal(before, trainer.net.params["fc1.W"])
    assert math.isfinite(summary["test_cost"])


def test_schedules_follow_their_equations():
    def make(name, total=12):
        spec = gn.load_spec({**mlp([4]), "train": {
            "steps": total, "schedule": SCHEDULE_CFGS[name]}})
        from graphnet.schedules import make_schedule
        return make_schedule(spec["train"]["schedule"], total)
    cyc = make("cyclic")
    assert cyc(3) == pytest.approx(0.01)
    assert cyc(9) == pytest.approx(1e-5 + (0.01 - 1e-5) / 2)
    assert make("step")(8) == pytest.approx(0.0025)
    assert make("exponential")(2) == pytest.approx(0.0081)
    cos = make("cosine")
    assert cos(0) == 0.01 and cos(6) == pytest.approx(0.005)
    assert cos(12) == pytest.approx(0.0, abs=1e-12)


def test_non_cyclic_schedule_needs_a_length():
    raw = mlp([4])
    raw["train"] = {"optimizer": {"type": "adam"},
                    "schedule": SCHEDULE_CFGS["cosine"]}
    with pytest.raises(SpecError, match="training length missing"):
        gn.load_spec(raw)


# ---- augmentation and dropout end to end -------------------------------

def test_augment_and_dropout_change_training_and_finish(data, tmp_path):
    def run(name, **extra):
        raw = mlp([8], "batchnorm", dropout=extra.pop("dropout", 0.0))
        raw["data"] = {"train": 200, "val": 40}
        raw["train"] = {"batch_size": 50, "steps": 6,
                        "schedule": SCHEDULE_CFGS["constant"], **extra}
        (tmp_path / name).mkdir()
        trainer = Trainer(gn.load_spec(raw), data, tmp_path / name)
        summary = trainer.run()
        assert summary["status"] == "finished"
        return trainer.net.params["fc1.W"]

    plain = run("plain")
    np.testing.assert_array_equal(plain, run("again"))
    flipped = run("aug", augment={"flip": 1.0, "shift": 1})
    assert not np.allclose(plain, flipped)
    assert not np.allclose(plain, run("drop", dropout=0.5))


def test_dropout_is_off_in_test_mode():
    spec = gn.load_spec(mlp([16], dropout=0.5))
    net = gn.build(spec)
    X = np.random.default_rng(1).standard_normal((5, 3072))
    np.testing.assert_array_equal(net.predict_proba(X),
                                  net.predict_proba(X))
    rng = np.random.default_rng(2)
    a = net.forward(X, train=True, rng=rng)
    assert not np.allclose(a, net.forward(X, train=True, rng=rng))


# ---- the specs of the study ----------------------------------------------

@pytest.mark.parametrize("path", BEYOND, ids=lambda p: p.stem)
def test_beyond_specs_validate_and_build(path):
    spec = gn.load_spec(path)
    assert spec.name == path.stem
    assert spec["data"]["train"] == 45000 and spec["data"]["val"] == 5000
    assert gn.build(spec).n_params() > 0


def test_beyond_covers_every_extension():
    specs = {p.stem: gn.load_spec(p) for p in BEYOND}
    nodes = lambda s: s["graph"]["nodes"]  # noqa: E731
    t = lambda s: s["train"]  # noqa: E731
    assert any(wiring(s)[1][1] == "relu" and wiring(s)[2][1] == "batchnorm"
               for s in specs.values())
    assert any(t(s)["bn_stats"]["type"] == "precise" for s in specs.values())
    assert {t(s)["optimizer"]["type"] for s in specs.values()} >= {
        "sgd", "adam"}
    assert {t(s)["schedule"]["type"] for s in specs.values()} >= set(
        SCHEDULES) - {"constant"}
    assert any(t(s)["optimizer"].get("momentum") for s in specs.values())
    assert any(t(s)["augment"] for s in specs.values())
    assert any(n["op"] == "dropout" for s in specs.values()
               for n in nodes(s))
    residual = specs["residual-7layer"]
    assert sum(n["op"] == "linear" for n in nodes(residual)) == 7
    assert any(n["op"] == "add" for n in nodes(residual))


def test_the_optional_report_suite_runs_the_extensions():
    from graphnet.report import load_suite
    suite = load_suite(SPECS / "beyond" / "suite.json")
    named = {Path(r["spec"]).stem for r in suite["runs"].values()}
    # every extension but wide-aug, which wide-aug-long supersedes
    assert {p.stem for p in BEYOND} - named == {"wide-aug"}
    assert "3layer-bn" in named
