"""Training: schedules, BN statistics, the plan of a run, run folders."""

import csv
import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import graphnet as gn
from graphnet.bnstats import make_bn_stats
from graphnet.cli import main
from graphnet.runs import METRICS
from graphnet.schedules import make_schedule
from graphnet.trainer import plan

from conftest import mlp
from fakecifar import write_fake_cifar


# ---- schedules -------------------------------------------------------------

def schedule(**cfg):
    spec = gn.load_spec({**mlp([5]), "train": {"schedule": cfg,
                                               "steps": 1000}})
    return make_schedule(spec["train"]["schedule"], total_steps=1000)


def test_cyclic_corners_and_midpoints():
    eta = schedule(type="cyclic", eta_min=1e-5, eta_max=0.1, step_size=500)
    mid = (1e-5 + 0.1) / 2
    for t, want in [(0, 1e-5), (250, mid), (500, 0.1), (750, mid),
                    (1000, 1e-5), (1250, mid), (1500, 0.1), (2000, 1e-5)]:
        assert eta(t) == pytest.approx(want, rel=1e-12, abs=1e-15), t
    # linear between the corners: one step moves by the same amount
    slope = (0.1 - 1e-5) / 500
    assert eta(101) - eta(100) == pytest.approx(slope)
    assert eta(601) - eta(600) == pytest.approx(-slope)


def test_cyclic_decay_halves_each_cycle():
    eta = schedule(type="cyclic", eta_min=0.0001, eta_max=0.0101,
                   step_size=10, decay=0.5)
    assert eta(10) == pytest.approx(0.0101)
    assert eta(30) == pytest.approx(0.0001 + 0.01 * 0.5)
    assert eta(50) == pytest.approx(0.0001 + 0.01 * 0.25)
    assert eta(40) == pytest.approx(0.0001)


def test_step_exponential_constant_and_cosine():
    step = schedule(type="step", eta=0.1, every=100, gamma=0.5)
    assert [step(t) for t in (0, 99, 100, 250)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.025])
    expo = schedule(type="exponential", eta=0.1, gamma=0.99)
    assert expo(0) == 0.1 and expo(10) == pytest.approx(0.1 * 0.99 ** 10)
    assert schedule(type="constant", eta=0.03)(777) == 0.03
    cos = schedule(type="cosine", eta_max=0.1, eta_min=0.001)
    assert cos(0) == pytest.approx(0.1)
    assert cos(500) == pytest.approx((0.1 + 0.001) / 2)
    assert cos(1000) == pytest.approx(0.001)
    assert cos(5000) == pytest.approx(0.001)   # stays at the end


# ---- BN population statistics ----------------------------------------------

BN_NET = {"graph": {"inputs": {"x": 3072}, "nodes": [
    {"name": "fc", "op": "linear", "inputs": ["x"], "units": 10},
    {"name": "bn", "op": "batchnorm", "inputs": ["fc"]}],
    "output": "bn"}}


def test_ema_starts_from_the_first_batch_then_averages():
    net = gn.build(BN_NET, seed=0, dtype="float64")
    ema = make_bn_stats({"type": "ema", "alpha": 0.8})
    rng = np.random.default_rng(3)
    X1, X2, X3 = (rng.standard_normal((20, 3072)) + k for k in range(3))
    y = rng.integers(0, 10, 20)

    def stats(X):   # the BN input is the linear layer's output
        h = X @ net.params["fc.W"].T + net.params["fc.b"]
        return h.mean(axis=0), h.var(axis=0)   # biased, as BN uses

    net.loss(X1, y, train=True)
    ema.update(net, first=True)
    m1, v1 = stats(X1)
    np.testing.assert_allclose(net.buffers["bn.mean"], m1, rtol=1e-12)
    np.testing.assert_allclose(net.buffers["bn.var"], v1, rtol=1e-12)
    mean, var = m1, v1
    for X in (X2, X3):
        net.loss(X, y, train=True)
        ema.update(net, first=False)
        m, v = stats(X)
        mean, var = 0.8 * mean + 0.2 * m, 0.8 * var + 0.2 * v
    np.testing.assert_allclose(net.buffers["bn.mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(net.buffers["bn.var"], var, rtol=1e-12)


# ---- the plan of a run -------------------------------------------------------

def planned(n_train=1000, **train):
    return plan(gn.load_spec({**mlp([5]), "train": {"batch_size": 100,
                                                    **train}}), n_train)


def test_plan_from_cycles_epochs_and_steps():
    cyclic = {"type": "cyclic", "eta_min": 1e-5, "eta_max": 0.1,
              "step_size": 50, "cycles": 3}
    const = {"type": "constant", "eta": 0.01}
    # (per epoch, total, evaluation interval)
    assert planned(schedule=cyclic) == (10, 300, 10)   # ten per cycle
    assert planned(schedule=const, epochs=4) == (10, 40, 10)  # per epoch
    assert planned(schedule=const, steps=25) == (10, 25, 10)
    assert planned(schedule=cyclic, epochs=2) == (10, 20, 10)
    assert planned(schedule=cyclic, steps=7) == (10, 7, 7)   # steps wins
    assert planned(schedule=cyclic, epochs=2, steps=7)[1] == 7
    assert planned(schedule=const, steps=25, eval_every=3) == (10, 25, 3)
    assert planned(n_train=1050, schedule=const, epochs=1)[:2] == (10, 10)
    assert planned(n_train=30, schedule=const, epochs=2)[:2] == (1, 2)


# ---- a run on the fake set ------------------------------------------------------

def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    write_fake_cifar(root, n_per_batch=40, n_test=50, seed=2)
    return root


FAKE_SPEC = {
    "name": "folder",
    "data": {"train": 150, "val": 50},
    "graph": {"mlp": {"hidden": [16], "norm": "batchnorm"}},
    "loss": {"l2": 0.001},
    "train": {"batch_size": 15, "steps": 23, "eval_every": 5, "seed": 4,
              "schedule": {"type": "cyclic", "eta_min": 1e-4,
                           "eta_max": 0.05, "step_size": 10}},
}


@pytest.fixture(scope="module")
def fake_run(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    summary = gn.train(FAKE_SPEC, out=out, data_dir=fake, download=False)
    return Path(summary["run_dir"]), summary


def test_run_folder_contents(fake_run):
    run_dir, summary = fake_run
    assert run_dir.name.startswith("folder-")
    assert sorted(p.name for p in run_dir.iterdir()
                  if not p.name.startswith("network.")) == [
        "curves.png", "metrics.csv", "model.npz", "spec.json",
        "summary.json"]
    # spec.json: expanded, every default filled in, and reloadable
    saved = json.loads((run_dir / "spec.json").read_text())
    assert [n["name"] for n in saved["graph"]["nodes"]] == [
        "fc1", "bn1", "h1", "scores"]
    assert saved["train"]["optimizer"] == {"type": "sgd", "momentum": 0.0,
                                           "nesterov": False}
    assert gn.load_spec(run_dir / "spec.json") == saved
    # metrics.csv: the columns, one row per evaluation and the last step
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRICS
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20, 23]
    # eta is the rate of the update that led to the row's step
    assert float(rows[2]["eta"]) == pytest.approx(1e-4 + 0.0499 * 9 / 10)
    assert float(rows[0]["eta"]) == pytest.approx(1e-4)
    assert float(rows[1]["epoch"]) == pytest.approx(0.5)
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    # summary.json names its figures plainly
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "train_accuracy",
                "test_cost", "steps", "epochs", "wall_seconds", "seed",
                "versions"):
        assert key in on_disk, key
    assert on_disk["steps"] == 23 and on_disk["seed"] == 4
    assert on_disk["epochs"] == pytest.approx(23 / 10)
    assert on_disk["val_accuracy"] == pytest.approx(
        float(rows[-1]["val_accuracy"]), abs=1e-6)
    assert set(on_disk["versions"]) >= {"graphnet", "numpy", "python"}
    assert math.isfinite(on_disk["test_cost"]) and on_disk["wall_seconds"] > 0
    assert on_disk["test_accuracy"] == summary["test_accuracy"]
    # model.npz without pickle; curves.png a real PNG
    with np.load(run_dir / "model.npz", allow_pickle=False) as f:
        assert set(f.files) == {"fc1.W", "fc1.b", "bn1.gamma", "bn1.beta",
                                "bn1.mean", "bn1.var", "scores.W",
                                "scores.b"}
        assert f["fc1.W"].shape == (16, 3072)
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reproduces_the_test_accuracy(fake_run, fake):
    run_dir, summary = fake_run
    code, out, err = cli("eval", run_dir, "--data-dir", fake)
    assert code == 0, err
    assert f"test accuracy {summary['test_accuracy']:.4f}" in out
    spec, net = gn.trainer.load_run(run_dir)
    data = gn.data.load_dataset(spec["data"], data_dir=fake,
                                dtype=spec["train"]["dtype"])
    test = net.evaluate(data.X_test, data.y_test)
    assert test["accuracy"] == summary["test_accuracy"]
    assert test["cost"] == summary["test_cost"]


def test_same_seed_same_run(fake_run, fake, tmp_path):
    run_dir, summary = fake_run
    again = gn.train(FAKE_SPEC, out=tmp_path, data_dir=fake, download=False)
    with np.load(run_dir / "model.npz") as a, \
            np.load(Path(again["run_dir"]) / "model.npz") as b:
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    other = gn.train(FAKE_SPEC, out=tmp_path, data_dir=fake, download=False,
                     seed=5)
    assert other["seed"] == 5
    with np.load(run_dir / "model.npz") as a, \
            np.load(Path(other["run_dir"]) / "model.npz") as b:
        assert not np.array_equal(a["fc1.W"], b["fc1.W"])


def metrics_without_seconds(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        del row["seconds"]
    return rows


def test_evaluating_on_a_thread_changes_no_figure(fake_run, fake, tmp_path):
    # the evaluation thread works on copies of each evaluated step's state
    # while training goes on: same rows, same model, same test figures
    run_dir, summary = fake_run
    threaded = gn.train(FAKE_SPEC, out=tmp_path, data_dir=fake,
                        download=False, eval_thread=True)
    assert metrics_without_seconds(threaded["run_dir"]) == \
        metrics_without_seconds(run_dir)
    assert [int(r["step"]) for r in metrics_without_seconds(run_dir)] == \
        [0, 5, 10, 15, 20, 23]
    with np.load(run_dir / "model.npz") as a, \
            np.load(Path(threaded["run_dir"]) / "model.npz") as b:
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    for key in ("test_accuracy", "test_cost", "best_val_step"):
        assert threaded[key] == summary[key], key


def test_a_threaded_evaluation_writes_the_checkpoint_of_its_own_step(
        fake, tmp_path):
    # stop at step 7: the evaluation of step 5 was still in flight or just
    # done; its row and checkpoint are kept, then step 7's checkpoint, and
    # resuming from it ends exactly where an uninterrupted run ends
    from graphnet.data import load_dataset
    from graphnet.trainer import Trainer, resume
    spec = gn.load_spec(FAKE_SPEC)
    data = load_dataset(spec["data"], data_dir=fake, download=False,
                        dtype=spec["train"]["dtype"])
    run_dir = tmp_path / "stopped"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(spec.to_json())
    trainer = Trainer(spec, data, run_dir, eval_thread=True)

    def progress(step, total, cost, eta):
        if step == 7:
            trainer.stop = "SIGINT"

    trainer.progress = progress
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert [r["step"] for r in trainer.rows] == [0, 5]
    with np.load(run_dir / "checkpoint.npz") as ck:
        assert int(ck["step"]) == 7
    resumed = resume(run_dir, data=data, eval_thread=True)
    straight = gn.train(FAKE_SPEC, out=tmp_path / "straight", data_dir=fake,
                        download=False)
    assert metrics_without_seconds(run_dir) == \
        metrics_without_seconds(straight["run_dir"])
    assert resumed["test_accuracy"] == straight["test_accuracy"]


# ---- a short run on the real data --------------------------------------------

@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from conftest import real_data_dir
    path = real_data_dir()
    if path is None:
        pytest.skip("real CIFAR-10 not found (set GRAPHNET_DATA)")
    spec = {"name": "quick", "data": {"train": 5000, "val": 1000},
            "graph": {"mlp": {"hidden": [50], "norm": "batchnorm"}},
            "loss": {"l2": 0.005},
            "train": {"batch_size": 100, "eval_every": 100, "schedule": {
                "type": "cyclic", "eta_min": 1e-5, "eta_max": 0.1,
                "step_size": 100, "cycles": 1}}}
    out = tmp_path_factory.mktemp("real")
    return path, gn.train(spec, out=out, data_dir=path, download=False)


def test_short_real_run_beats_chance_widely(real_run):
    _, summary = real_run
    assert summary["steps"] == 200 and summary["epochs"] == 4
    assert summary["test_accuracy"] > 0.30     # chance is 0.10
    assert summary["train_accuracy"] > summary["test_accuracy"]


def test_eval_of_the_real_run_is_exact(real_run):
    path, summary = real_run
    code, out, _ = cli("eval", summary["run_dir"], "--data-dir", path)
    assert code == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in out
    assert f"test cost {summary['test_cost']:.4f}" in out
