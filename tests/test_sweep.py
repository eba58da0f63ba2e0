"""Sweeps: sampling, refinement, validation, resume, process pool, Dask."""

import csv
import json
import math
import sys

import numpy as np
import pytest

from graphnet import runs, sweep as sw
from graphnet.cli import main
from graphnet.errors import GraphnetError, RunError, SpecError

from conftest import SPECS

BASE = str(SPECS / "a3" / "3layer-bn.json")
TINY = {"data.train": 1000, "data.val": 200, "train.steps": 30,
        "train.schedule.step_size": 15, "train.eval_every": 15}


def make_sweep(**extra):
    raw = {"base": BASE, "search": {"loss.l2": {"log_uniform": [1e-5, 1e-1]}},
           "samples": 4, "seed": 3}
    raw.update(extra)
    return raw


# ---- a stand-in for training, so resume and bookkeeping run in a blink --

CALLS = []


def fake_train(spec, out="runs", data=None, **kwargs):
    """Write a run folder whose val accuracy peaks at l2 = 1e-3.

    l2 above 0.05 "diverges" the way the trainer does: summary.json with
    status diverged, then RunError.
    """
    CALLS.append(spec.name)
    run_dir = runs.new_run_dir(out, spec.name)
    runs.atomic_write(run_dir / "spec.json", spec.to_json())
    l2 = spec["loss"]["l2"]
    acc = 0.5 - 0.05 * abs(math.log10(l2) + 3) if l2 > 0 else 0.1
    rows = [{"step": s, "epoch": s / 10, "eta": 0.01,
             "train_cost": 2.3 - s * acc / 20, "train_loss": 2.3 - s * acc / 20,
             "train_accuracy": acc * s / 10, "val_cost": 2.3 - s * acc / 25,
             "val_loss": 2.3 - s * acc / 25, "val_accuracy": acc * s / 10,
             "seconds": s / 10} for s in range(0, 11, 5)]
    runs.write_metrics(run_dir / "metrics.csv", rows)
    status = "diverged" if l2 > 0.05 else "finished"
    summary = {"name": spec.name, "status": status, "run_dir": str(run_dir),
               "test_accuracy": acc - 0.01 if status == "finished" else None,
               "test_cost": 1.5, "val_accuracy": acc, "val_cost": 1.4,
               "train_accuracy": acc + 0.1, "train_cost": 1.2,
               "best_val_accuracy": acc, "steps": 10, "epochs": 1.0,
               "wall_seconds": 0.1}
    runs.write_json(run_dir / "summary.json", summary)
    if status == "diverged":
        raise RunError(f"the cost became nan at step 7 ({run_dir})")
    return summary


@pytest.fixture
def fake(monkeypatch):
    """Train with ``fake_train``, in this process, without data."""
    import graphnet.trainer
    monkeypatch.setattr(graphnet.trainer, "train", fake_train)
    monkeypatch.setattr(sw, "worker_dataset", lambda spec, data_dir: None)
    CALLS.clear()
    return CALLS


# ---- sampling and refinement arithmetic ----------------------------------

def test_draws_are_seeded_and_inside_the_range():
    sweep = sw.load_sweep(make_sweep(samples=50))
    ranges = sw.first_ranges(sweep)
    a = sw.draw_points(sweep, 0, ranges, {})
    b = sw.draw_points(sweep, 0, ranges, {})
    c = sw.draw_points(sweep, 1, ranges, {})
    assert a == b and a != c
    values = np.array([p["values"]["loss.l2"] for p in a])
    assert values.min() >= 1e-5 and values.max() <= 1e-1
    # log-uniform: about a quarter of the draws in each decade
    assert 0.1 < np.mean(values < 1e-4) < 0.45
    assert [p["key"] for p in a[:3]] == ["r0-000", "r0-001", "r0-002"]


def test_grid_keys_are_crossed_and_share_the_draws():
    sweep = sw.load_sweep(make_sweep(search={
        "graph.mlp.init": {"grid": [{"normal": 0.1}, {"normal": 1e-3},
                                    {"normal": 1e-4}]},
        "graph.mlp.norm": {"grid": ["none", "batchnorm"]}}))
    grid = {k: v["grid"] for k, v in sweep["search"].items()}
    assert len(sw.draw_points(sweep, 0, {}, grid)) == 6   # samples unused
    sweep = sw.load_sweep(make_sweep(samples=3, search={
        "loss.l2": {"uniform": [0.0, 0.1]},
        "graph.mlp.norm": {"grid": ["none", "batchnorm"]}}))
    points = sw.draw_points(sweep, 0, sw.first_ranges(sweep),
                            {"graph.mlp.norm": ["none", "batchnorm"]})
    assert len(points) == 6
    l2 = [p["values"]["loss.l2"] for p in points]
    assert l2[:3] == l2[3:] and len(set(l2)) == 3
    assert list(points[0]["values"]) == ["loss.l2", "graph.mlp.norm"]


@pytest.mark.parametrize("cls, current, centre", [
    (sw.LogUniform, [1e-5, 1e-1], [2e-3]),
    (sw.LogUniform, [1e-5, 1e-1], [2e-5, 4e-5]),     # pushed to the edge
    (sw.Uniform, [0.0, 1.0], [0.7]),
    (sw.Uniform, [0.0, 1.0], [0.99]),
])
def test_refined_range_narrows_around_the_best(cls, current, centre):
    new = sw.refine_range(cls, current, current, centre, 0.5)
    f = cls.fwd
    width = f(current[1]) - f(current[0])
    assert f(new[1]) - f(new[0]) == pytest.approx(0.5 * width)
    assert current[0] <= new[0] < new[1] <= current[1] * (1 + 1e-12)
    assert new[0] <= min(centre) and max(centre) <= new[1]


def test_refined_range_is_centred_in_log_space():
    lo, hi = sw.refine_range(sw.LogUniform, [1e-5, 1e-1], [1e-5, 1e-1],
                             [1e-3], 0.5)
    assert (lo, hi) == (pytest.approx(1e-4), pytest.approx(1e-2))


def test_next_round_keeps_the_best_grid_value():
    sweep = sw.load_sweep(make_sweep(keep=2, search={
        "loss.l2": {"log_uniform": [1e-5, 1e-1]},
        "graph.mlp.norm": {"grid": ["none", "batchnorm"]}}))
    rows = [{"status": "finished", "val_accuracy": acc,
             "values": {"loss.l2": l2, "graph.mlp.norm": norm}}
            for acc, l2, norm in [(0.5, 1e-2, "batchnorm"),
                                  (0.4, 1e-4, "batchnorm"),
                                  (0.45, 1e-5, "none"),
                                  (0.9, 1e-3, "none")]]
    rows[3]["status"] = "diverged"            # never picked
    ranges, grid = sw.next_round(sweep, 1, sw.first_ranges(sweep), rows)
    assert grid == {"graph.mlp.norm": ["batchnorm"]}
    lo, hi = ranges["loss.l2"]
    # centre: mean of log10 1e-2 and 1e-4; half the width of 4 decades
    assert math.log10(lo) == pytest.approx(-4) and \
        math.log10(hi) == pytest.approx(-2)


# ---- validation ----------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    ({"sample": 3}, r"sample: unknown key 'sample'; did you mean 'samples'"),
    ({"search": {"loss.l2": {"log_unifrom": [1e-5, 1]}}},
     r"search.loss.l2: unknown search kind 'log_unifrom'; did you mean "
     r"'log_uniform'"),
    ({"search": {"loss.l2": {"uniform": [0.1, 0.01]}}},
     r"search.loss.l2.uniform: expected lo < hi, found lo=0.1 >= hi=0.01"),
    ({"search": {"loss.l2": {"log_uniform": [0, 1]}}},
     r"expected lo > 0 for a log scale"),
    ({"search": {"loss.l2": {"uniform": [1]}}}, r"expected \[lo, hi\]"),
    ({"search": {"loss.l2": {"uniform": [-1, 1]}}},
     r"search.loss.l2.uniform\[0\]: loss.l2=-1 makes an invalid spec: "
     r"loss.l2: expected a number >= 0"),
    ({"search": {"loss.l22": {"uniform": [0, 1]}}},
     r"loss.l22: unknown key 'l22'; did you mean 'l2'"),
    ({"search": {"graph.mlp.norm": {"grid": ["none", "none"]}}},
     r"grid\[1\]: duplicate value 'none'"),
    ({"search": {"graph.mlp.norm": {"grid": ["none"]}}, "refine": 1},
     r"refine: .*only grid keys"),
    ({"search": {}}, r"search: expected at least 1 entry"),
    ({"metric": "val_acc"}, r"metric: unknown value 'val_acc'; did you "
                            r"mean 'val_accuracy'"),
    ({"samples": 0}, r"samples: expected an integer >= 1, found 0"),
    ({"base": "nope.json"}, r"base: spec file 'nope.json' not found"),
    ({"set": {"train.batch_size": 0}},
     r"base: train.batch_size: expected an integer >= 1, found 0"),
])
def test_sweep_file_errors_name_the_key(change, match):
    with pytest.raises(SpecError, match=match):
        sw.load_sweep(make_sweep(**change))


def test_goal_follows_the_metric():
    assert sw.load_sweep(make_sweep())["goal"] == "max"
    assert sw.load_sweep(make_sweep(metric="val_cost"))["goal"] == "min"


def test_base_is_found_next_to_the_sweep_file(tmp_path):
    (tmp_path / "net.json").write_text(json.dumps(
        {"graph": {"mlp": {"hidden": [5]}}}))
    path = tmp_path / "l2.sweep.json"
    path.write_text(json.dumps(make_sweep(base="net.json")))
    sweep = sw.load_sweep(path)
    assert sweep["name"] == "l2" and sweep["base_spec"].name == "net"


# ---- running, resuming, recording failures --------------------------------

def test_resume_trains_nothing_twice(tmp_path, fake):
    raw = make_sweep(samples=4, refine=1, search={
        "loss.l2": {"log_uniform": [1e-5, 1.0]}})
    first = sw.run_sweep(raw, out=tmp_path, workers=1)
    folder = tmp_path / "sweep"
    assert first["sweep_dir"] == str(folder)
    assert len(fake) == 8
    assert first["counts"]["finished"] + first["counts"]["diverged"] == 8
    for name in ("sweep.json", "plan.json", "results.csv", "best.json",
                 "summary.json", "metric.png"):
        assert (folder / name).is_file(), name

    def run_folders():
        return sorted(p.name for p in (folder / "runs").iterdir()
                      if not p.name.startswith("."))

    before = run_folders()
    assert len(before) == 8
    plan = (folder / "plan.json").read_text()
    # a second start, with the folder itself as --out, reuses every run
    again = sw.run_sweep(raw, out=folder, workers=1)
    assert len(fake) == 8 and run_folders() == before
    assert (folder / "plan.json").read_text() == plan
    assert again["best"] == {**first["best"], "reused": True}


def test_results_record_diverged_runs_and_the_best(tmp_path, fake):
    raw = make_sweep(samples=6, seed=0, search={
        "loss.l2": {"log_uniform": [1e-4, 1.0]}})
    result = sw.run_sweep(raw, out=tmp_path, workers=1)
    folder = tmp_path / "sweep"
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert rows[0].keys() >= {"round", "key", "loss.l2", "status",
                              "val_accuracy", "test_accuracy", "run_dir"}
    diverged = [r for r in rows if float(r["loss.l2"]) > 0.05]
    assert diverged and all(r["status"] == "diverged" and "nan" in r["error"]
                            for r in diverged)
    assert all((folder / r["run_dir"] / "summary.json").is_file()
               for r in rows)
    finished = [r for r in rows if r["status"] == "finished"]
    best = max(finished, key=lambda r: float(r["val_accuracy"]))
    assert result["best"]["key"] == best["key"]
    spec = json.loads((folder / "best.json").read_text())
    assert spec["loss"]["l2"] == float(best["loss.l2"])
    assert spec["name"] == f"3layer-bn-{best['key']}"


def test_a_changed_sweep_refuses_the_old_folder(tmp_path, fake):
    sw.run_sweep(make_sweep(samples=1), out=tmp_path, workers=1)
    match = r"started by another sweep \(it differs in base_spec, overrides\)"
    with pytest.raises(SpecError, match=match):
        sw.run_sweep(make_sweep(samples=1), out=tmp_path, workers=1,
                     overrides={"train.steps": 5})


def test_an_interrupted_run_is_not_taken_for_finished(tmp_path, fake):
    raw = make_sweep(samples=2)
    sw.run_sweep(raw, out=tmp_path, workers=1)
    runs_dir = tmp_path / "sweep" / "runs"
    victim = sorted(p for p in runs_dir.iterdir() if p.is_dir()
                    and not p.name.startswith("."))[0]
    summary = json.loads((victim / "summary.json").read_text())
    runs.write_json(victim / "summary.json",
                    dict(summary, status="interrupted"))
    (runs_dir / ".partial" / "junk").mkdir(parents=True)
    sw.run_sweep(raw, out=tmp_path, workers=1)
    assert len(fake) == 3                 # only the interrupted one again
    assert not (runs_dir / ".partial" / "junk").exists()


def test_cli_prints_a_line_per_run(tmp_path, fake, capsys):
    path = tmp_path / "l2.sweep.json"
    path.write_text(json.dumps(make_sweep(samples=2)))
    code = main(["sweep", str(path), "--out", str(tmp_path / "o"),
                 "--workers", "1", "--set", "train.steps=7"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("round 0 r0-") == 2
    assert "[2/2]" in out and "best: loss.l2=" in out
    spec = json.loads((tmp_path / "o" / "l2" / "best.json").read_text())
    assert spec["train"]["steps"] == 7


def test_cli_bad_sweep_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.sweep.json"
    path.write_text(json.dumps(make_sweep(refine=-1)))
    assert main(["sweep", str(path), "--out", str(tmp_path)]) == 2
    assert "refine: expected an integer >= 0, found -1" in \
        capsys.readouterr().err


def test_dask_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(GraphnetError, match=r"pip install -e \.\[distributed\]"):
        sw.Runner(workers=1, dask="local")


# ---- real training -------------------------------------------------------

def check_real(result, folder, n):
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and all(r["status"] == "finished" for r in rows)
    for r in rows:
        run = folder / r["run_dir"]
        assert (run / "model.npz").is_file() and (run / "curves.png").is_file()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["run_dir"] == str(run)
        assert summary["steps"] == 30
    # the searched value reached the trained spec
    spec = json.loads((folder / rows[0]["run_dir"] / "spec.json").read_text())
    assert spec["loss"]["l2"] == float(rows[0]["loss.l2"])
    assert 0.1 < result["best"]["val_accuracy"] <= 1


def test_real_sweep_on_two_worker_processes(tmp_path, real_data):
    lines = []
    result = sw.run_sweep(make_sweep(samples=2, set=TINY), out=tmp_path,
                          data_dir=real_data, workers=2,
                          progress=lambda *a: lines.append(a))
    check_real(result, tmp_path / "sweep", 2)
    assert [d for d, _, _ in lines] == [1, 2]


def test_real_sweep_on_a_dask_local_cluster(tmp_path, real_data):
    pytest.importorskip("distributed")
    result = sw.run_sweep(make_sweep(samples=2, set=TINY), out=tmp_path,
                          data_dir=real_data, workers=2, dask="local")
    check_real(result, tmp_path / "sweep", 2)
