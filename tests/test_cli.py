"""The command line: verbs, help, exit codes and what each prints."""

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import graphnet as gn
from graphnet.cli import main

from conftest import ROOT, SPECS
from fakecifar import write_fake_cifar

VERBS = ["run", "validate", "gradcheck", "render", "eval", "sweep", "report"]


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_real_data(monkeypatch, tmp_path):
    monkeypatch.delenv("GRAPHNET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    write_fake_cifar(root, n_per_batch=30, n_test=40, seed=5)
    return root


SMALL = {"name": "small", "data": {"train": 120, "val": 30},
         "graph": {"mlp": {"hidden": [6], "norm": "batchnorm"}},
         "loss": {"l2": 0.01},
         "train": {"batch_size": 20, "steps": 8, "eval_every": 4,
                   "schedule": {"type": "constant", "eta": 0.01}}}


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    return path


def test_help_names_every_verb():
    code, out, _ = cli("--help")
    assert code == 0
    for verb in VERBS:
        assert verb in out


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_explains_itself(verb):
    code, out, _ = cli(verb, "--help")
    assert code == 0
    assert out.startswith(f"usage: graphnet {verb}")


def test_version_and_missing_verb():
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"graphnet {gn.__version__}"
    code, _, err = cli()
    assert code == 2 and "required" in err


def test_bad_arguments_exit_2(small):
    code, _, err = cli("gradcheck", small, "--dims", "ten")
    assert code == 2 and "invalid int value: 'ten'" in err
    code, _, err = cli("eval", small, "--bn-stats", "median")
    assert code == 2 and "invalid choice: 'median'" in err


def test_validate_prints_the_node_table(small):
    code, out, err = cli("validate", small)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["node", "op", "inputs", "output", "params"]
    assert lines[2].split() == ["x", "input", "(n,", "3072)"]
    assert lines[3].split() == ["fc1", "linear", "x", "(n,", "6)",
                                "18,438"]
    params = 6 * 3072 + 6 + 2 * 6 + 6 * 10 + 10
    assert lines[-1] == (f"small: 4 nodes, output 'scores', "
                         f"{params:,} parameters")


def test_validate_expand_prints_a_reloadable_spec(small):
    code, out, _ = cli("validate", small, "--expand", "--set", "loss.l2=0.5")
    assert code == 0
    expanded = json.loads(out)
    assert expanded["loss"]["l2"] == 0.5
    assert [n["name"] for n in expanded["graph"]["nodes"]] == [
        "fc1", "bn1", "h1", "scores"]
    assert gn.load_spec(expanded) == expanded


def test_validate_the_study_specs():
    for name in ("2layer", "3layer", "3layer-bn", "9layer", "9layer-bn"):
        path = SPECS / "a3" / f"{name}.json"
        code, _, err = cli("validate", path, "--expand")
        assert code == 0, (path, err)


def test_gradcheck_passes_and_fails_by_threshold(small):
    code, out, _ = cli("gradcheck", small, "--dims", 4, "--steps", 1)
    assert code == 0
    assert "fc1.W" in out and out.rstrip().endswith("pass")
    code, out, _ = cli("gradcheck", small, "--dims", 4, "--steps", 1,
                       "--threshold", 0)
    assert code == 1
    assert "FAIL" in out


def test_run_prints_its_folder_and_figures(small, fake, tmp_path):
    code, out, err = cli("run", small, "--data-dir", fake, "--out",
                         tmp_path / "runs", "--seed", 3, "--set",
                         "train.steps=6")
    assert code == 0, err
    run_dir = Path(out.splitlines()[0].removeprefix("run folder: "))
    assert run_dir.parent == tmp_path / "runs"
    assert "test accuracy" in out and "6 steps" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["steps"] == 6
    saved = json.loads((run_dir / "spec.json").read_text())
    assert saved["train"]["seed"] == 3 and saved["train"]["steps"] == 6

    code, out, _ = cli("eval", run_dir, "--data-dir", fake)
    assert code == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in out


def test_eval_adaptive_bn_with_augmentation(small, fake, tmp_path,
                                            monkeypatch):
    code, out, err = cli("run", small, "--data-dir", fake, "--out",
                         tmp_path / "runs")
    run_dir = out.splitlines()[0].removeprefix("run folder: ")
    seen = {}
    from graphnet import bnstats
    real = bnstats.reestimate

    def spy(net, spec, data, mode, **kwargs):
        seen.update(kwargs, mode=mode)
        return real(net, spec, data, mode, **kwargs)

    monkeypatch.setattr(bnstats, "reestimate", spy)
    code, out, err = cli("eval", run_dir, "--data-dir", fake, "--bn-stats",
                         "adaptive", "--flip", 0.5, "--shift", 1,
                         "--passes", 2)
    assert code == 0, err
    assert "BN statistics: adaptive" in out
    assert seen == {"mode": "adaptive", "augment": {"flip": 0.5, "shift": 1},
                    "passes": 2}
    code, _, err = cli("eval", run_dir, "--data-dir", fake, "--bn-stats",
                       "adaptive", "--flip", 2)
    assert code == 2 and "flip is a probability in [0, 1]" in err


def test_run_with_one_blas_thread(small, fake, tmp_path, monkeypatch):
    from threadpoolctl import threadpool_info

    from graphnet import trainer
    seen = []
    real = trainer.train

    def spy(*args, **kwargs):
        seen.append({i["num_threads"] for i in threadpool_info()})
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train", spy)
    code, _, err = cli("run", small, "--data-dir", fake, "--out",
                       tmp_path / "runs", "--threads", 1)
    assert code == 0, err
    assert seen == [{1}]
    code, _, err = cli("run", small, "--threads", 0)
    assert code == 2 and "--threads: expected an integer >= 1" in err


def test_eval_of_a_folder_that_is_no_run(tmp_path):
    code, _, err = cli("eval", tmp_path)
    assert code == 2
    assert f"{tmp_path}: not a run folder (no spec.json)" in err


def test_the_module_runs_as_a_program(small, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "graphnet", "validate",
                           small], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "small: 4 nodes" in proc.stdout
