"""Hardening: bad specs, bad data, divergence and interruption.

Every malformed input must end in one short message naming where the
problem is (exit 2), a diverging run must stop at once keeping what it
had (exit 1), and an interrupted run must resume to exactly the
parameters an uninterrupted run reaches. Data come from the small fake
CIFAR-10 of ``fakecifar``; nothing here needs the real set.
"""

import copy
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet import trainer as trainer_mod
from graphnet.cli import main
from graphnet.errors import SpecError
from graphnet.optim import OPTIMIZERS
from graphnet.spec import TOP, validate

from conftest import ROOT, TEST_SPECS
from fakecifar import write_fake_cifar

TRAIN, VAL = 160, 40   # of the fake set's 200 training images


# ---- helpers -------------------------------------------------------------

@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A fake CIFAR-10 of 200 training and 50 test images."""
    root = tmp_path_factory.mktemp("fake")
    write_fake_cifar(root, n_per_batch=40, n_test=50, seed=1)
    return root


@pytest.fixture(autouse=True)
def no_real_data(monkeypatch, tmp_path):
    """Never fall back to the real set, the user cache or a download."""
    monkeypatch.delenv("GRAPHNET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def cli(*argv):
    """Run ``graphnet`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:      # argparse's own errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def subprocess_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GRAPHNET_DATA"}
    env.update(HOME=str(tmp_path / "home"), OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    return env


def graphnet_cmd(*argv):
    return [sys.executable, "-m", "graphnet", *map(str, argv)]


def run_subprocess(tmp_path, *argv, timeout=120):
    return subprocess.run(graphnet_cmd(*argv), capture_output=True,
                          text=True, env=subprocess_env(tmp_path),
                          timeout=timeout, cwd=tmp_path)


def write_spec(path, raw):
    path = Path(path)
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


def tiny(**train):
    """A small valid spec for the fake set: BN, dropout, augment, Adam."""
    return {
        "name": "tiny",
        "data": {"train": TRAIN, "val": VAL},
        "graph": {"mlp": {"hidden": [12, 8], "norm": "batchnorm",
                          "dropout": 0.2}},
        "loss": {"l2": 0.001},
        "train": {"batch_size": 16, "steps": 25, "eval_every": 5,
                  "optimizer": {"type": "adam"},
                  "schedule": {"type": "constant", "eta": 0.01},
                  "augment": {"flip": 0.5, "shift": 2},
                  "dtype": "float64", "seed": 7, **train},
    }


def only_run_dir(out):
    dirs = [p for p in Path(out).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def params_of(run_dir):
    with np.load(Path(run_dir) / "model.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype == np.float64
        # bit for bit, not approximately
        assert np.array_equal(a[key], b[key]), key


def metric_rows(run_dir):
    rows = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    # the last column is wall time, which differs between runs
    return [r.rsplit(",", 1)[0] for r in rows]


def short_error(err, *needles):
    """stderr is one message of a few lines, without a traceback."""
    assert "Traceback" not in err
    assert 1 <= len(err.strip().splitlines()) <= 4, err
    for needle in needles:
        assert needle in err, (needle, err)


# ---- bad specs through the command line ----------------------------------

GOOD = {"graph": {"mlp": {"hidden": [8]}}, "data": {"train": 160, "val": 40},
        "train": {"steps": 2, "batch_size": 16}}


def with_(path, value, base=GOOD):
    import copy
    raw = copy.deepcopy(base)
    keys = path.split(".")
    t = raw
    for k in keys[:-1]:
        t = t.setdefault(k, {})
    t[keys[-1]] = value
    return raw


def graph(*nodes, output="out"):
    return {**GOOD, "graph": {"inputs": {"x": 3072}, "nodes": list(nodes),
                              "output": output}}


FC = {"name": "out", "op": "linear", "inputs": ["x"], "units": 10}
CASES = {
    "not-json": ("{graph: 1}", "not valid JSON"),
    "truncated": ('{"graph": {"mlp": {"hidden": [8', "not valid JSON"),
    "empty": ("", "file is empty"),
    "blank": ("  \n", "file is empty"),
    "array": ("[1, 2]", "expected a JSON object at the top"),
    "string-width": (with_("graph.mlp.hidden", ["8"]), "graph.mlp.hidden[0]"),
    "float-batch": (with_("train.batch_size", 10.5), "train.batch_size"),
    "bool-shuffle": (with_("train.shuffle", "yes"), "train.shuffle"),
    "list-train": (with_("train", []), "train"),
    "nan": ('{"graph": {"mlp": {"hidden": [8]}}, "loss": {"l2": NaN}}',
            "NaN is not a valid JSON number"),
    "infinity": ('{"graph": {"mlp": {"hidden": [8]}}, "loss": {"l2": -Infinity}}',
                 "-Infinity is not a valid JSON number"),
    "overflow": ('{"graph": {"mlp": {"hidden": [8]}}, "loss": {"l2": 1e999}}',
                 "loss.l2"),
    "unknown-key": ({**GOOD, "trian": {}}, "did you mean 'train'"),
    "misspelt-key": (with_("train.batchsize", 10), "did you mean 'batch_size'"),
    "duplicate-key": ('{"graph": {"mlp": {"hidden": [8]}}, "graph": {}}',
                      "'graph' appears twice"),
    "unknown-op": (graph({**FC, "op": "dense"}), "graph.nodes[0].op"),
    "no-inputs": (graph({**FC, "inputs": []}), "graph.nodes[0].inputs"),
    "missing-inputs": (graph({"name": "out", "op": "linear", "units": 10}),
                       "graph.nodes[0].inputs"),
    "unknown-input": (graph({**FC, "inputs": ["y"]}),
                      "graph.nodes[0].inputs[0]"),
    "duplicate-name": (graph(FC, FC), "graph.nodes[1].name"),
    "cycle": (graph({"name": "a", "op": "relu", "inputs": ["b"]},
                    {"name": "b", "op": "relu", "inputs": ["a"]},
                    {**FC, "inputs": ["b"]}), "cycle: a -> b -> a"),
    "add-shapes": (graph({"name": "p", "op": "linear", "inputs": ["x"], "units": 5},
                         {"name": "q", "op": "linear", "inputs": ["x"], "units": 6},
                         {"name": "s", "op": "add", "inputs": ["p", "q"]},
                         {**FC, "inputs": ["s"]}), "graph.nodes[2]"),
    "classes": (graph({**FC, "units": 7}), "graph.output"),
    "features": ({**graph(FC), "graph": {"inputs": {"x": 3000}, "nodes": [FC],
                                         "output": "out"}}, "graph.inputs.x"),
    "negative-width": (with_("graph.mlp.hidden", [8, -3]), "graph.mlp.hidden[1]"),
    "zero-units": (graph({**FC, "units": 0}), "graph.nodes[0].units"),
    "huge-width": (with_("graph.mlp.hidden", [10 ** 9]), "graph.nodes[0].units"),
    "negative-l2": (with_("loss.l2", -0.1), "loss.l2"),
    "zero-eps": (with_("graph.mlp", {"hidden": [8], "norm": "batchnorm", "eps": 0}),
                 "graph.mlp.eps"),
    "negative-sigma": (with_("graph.mlp.init", {"normal": -0.1}),
                       "graph.mlp.init.normal"),
    "unknown-init": (with_("graph.mlp.init", "kaiming"), "graph.mlp.init"),
    "alpha-one": (with_("train.bn_stats", {"type": "ema", "alpha": 1}),
                  "train.bn_stats.alpha"),
    "alpha-zero": (with_("train.bn_stats", {"type": "ema", "alpha": 0}),
                   "train.bn_stats.alpha"),
    "eta-order": (with_("train.schedule", {"type": "cyclic", "eta_min": 0.2,
                                           "eta_max": 0.1, "step_size": 5}),
                  "train.schedule.eta_min"),
    "negative-eta": (with_("train.schedule", {"type": "constant", "eta": -1}),
                     "train.schedule.eta"),
    "momentum-one": (with_("train.optimizer", {"type": "sgd", "momentum": 1}),
                     "train.optimizer.momentum"),
    "dropout-one": (with_("graph.mlp.dropout", 1), "graph.mlp.dropout"),
    "split": (with_("data", {"train": 48000, "val": 5000}), "data.val"),
    "version": (with_("version", 2), "version"),
    "bad-name": (with_("name", "../up"), "name"),
    "deep": ("[" * 100000 + "]" * 100000, "nested too deeply"),
}


@pytest.fixture(scope="module")
def bad_spec_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-specs")
    return {name: write_spec(folder / f"{name}.json", raw)
            for name, (raw, _) in CASES.items()}


@pytest.mark.parametrize("verb", ["validate", "run", "gradcheck"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_exits_2_naming_the_place(case, verb, bad_spec_files,
                                           tmp_path, fake):
    extra = {"run": ["--out", tmp_path / "runs", "--data-dir", fake],
             "validate": [], "gradcheck": ["--dims", 4]}[verb]
    code, out, err = cli(verb, bad_spec_files[case], *extra)
    assert code == 2
    short_error(err, f"graphnet {verb}: error: ", CASES[case][1])
    assert out == ""
    # nothing is written for a spec that never validated
    assert not (tmp_path / "runs").exists()


def test_bad_spec_through_a_real_process(bad_spec_files, tmp_path):
    for case, verb in [("cycle", "validate"), ("nan", "run"),
                       ("deep", "gradcheck")]:
        proc = run_subprocess(tmp_path, verb, bad_spec_files[case])
        assert proc.returncode == 2, proc.stderr
        short_error(proc.stderr, CASES[case][1])


@pytest.mark.parametrize("override, needle", [
    ("loss.l2", "expected KEY=VALUE"),
    ("loss.l2=-1", "loss.l2: expected a number >= 0, found -1"),
    ("loss.l2=NaN", "loss.l2: expected a number >= 0, found 'NaN'"),
    ("train.schedule.cylces=3", "did you mean 'cycles'"),
    ("graph.mlp.hidden.4=3", "graph.mlp.hidden.4: expected an index below 1"),
    ('loss={"l2": 1, "l2": 2}', "--set loss: key 'l2' appears twice"),
    ("description=" + "[" * 5000 + "]" * 5000, "nested too deeply"),
])
def test_bad_override_exits_2(override, needle, tmp_path):
    spec = write_spec(tmp_path / "ok.json", GOOD)
    code, _, err = cli("validate", spec, "--set", override)
    assert code == 2
    short_error(err, needle)


def test_deep_spec_with_override_is_a_spec_error(tmp_path):
    # parses (below the JSON decoder's limit) but is too deep to copy
    deep = 1
    for _ in range(900):
        deep = [deep]
    spec = write_spec(tmp_path / "deep.json", {**GOOD, "description": deep})
    code, _, err = cli("validate", spec, "--set", "loss.l2=0.1")
    assert code == 2
    short_error(err, "nested too deeply")


def test_gradcheck_refuses_absurd_arguments(tmp_path):
    spec = write_spec(tmp_path / "ok.json", GOOD)
    for flag, value in [("--dims", 0), ("--batch", 1), ("--steps", -1),
                        ("--dims", 10 ** 8)]:
        code, _, err = cli("gradcheck", spec, flag, value)
        assert code == 2, (flag, value)
        short_error(err, flag)


# ---- mutated specs (property-based) --------------------------------------

RESIDUAL = json.loads((TEST_SPECS / "residual.json").read_text())
EXPLICIT = graph(
    {"name": "fc", "op": "linear", "inputs": ["x"], "units": 10,
     "init": {"normal": 0.01}, "bias": False},
    {"name": "bn", "op": "batchnorm", "inputs": ["fc"], "eps": 1e-5},
    {"name": "h", "op": "relu", "inputs": ["bn"]},
    {"name": "s", "op": "add", "inputs": ["h", "bn"]},
    {"name": "out", "op": "dropout", "inputs": ["s"], "p": 0.2},
    output="out")
EXPLICIT["train"] = {
    "steps": 3, "batch_size": 16,
    "schedule": {"type": "cyclic", "eta_min": 1e-5, "eta_max": 0.1,
                 "step_size": 5, "cycles": 1},
    "optimizer": {"type": "sgd", "momentum": 0.9},
    "bn_stats": {"type": "ema", "alpha": 0.9}, "seed": 1}
BASES = [tiny(), RESIDUAL, EXPLICIT]
NAMES = ["x", "fc", "bn", "h", "s", "out", "fc1", "scores", "h1", "nope"]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=-2 ** 80, max_value=2 ** 80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["he", "relu", "sgd", "cyclic", "float64", "x"]))
json_value = st.recursive(
    json_leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def paths(value, here=(), depth=60):
    """JSON paths of ``value`` down to ``depth`` levels, the root included."""
    yield here
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, list) else ())
    for key, sub in items if depth else ():
        yield from paths(sub, here + (key,), depth - 1)


def at(value, path):
    for key in path:
        value = value[key]
    return value


def misspell(key, how):
    if len(key) < 2:
        return key + "_"
    i = len(key) // 2
    return {"drop": key[:i] + key[i + 1:], "double": key[:i] + key[i:],
            "swap": key[:i - 1] + key[i] + key[i - 1] + key[i + 1:],
            "case": key.upper()}[how]


def nest(value, depth, kind):
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


@st.composite
def mutated_specs(draw, max_depth=3000):
    """A valid spec with one to three random mutations applied."""
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(spec))))
        parent = at(spec, path[:-1]) if path else None
        kind = draw(st.sampled_from(["replace", "delete", "misspell",
                                     "rewire", "nest"]))
        if kind == "replace" or (kind == "delete" and not path):
            new = draw(json_value)
            if path:
                parent[path[-1]] = new
            else:
                spec = new
        elif kind == "delete":
            del parent[path[-1]]
        elif kind == "misspell":
            target = at(spec, path)
            if isinstance(target, dict) and target:
                key = draw(st.sampled_from(sorted(target)))
                wrong = misspell(key, draw(st.sampled_from(
                    ["drop", "double", "swap", "case"])))
                value = (target.pop(key) if draw(st.booleans())
                         else target[key])
                target[wrong] = value
        elif kind == "rewire":
            nodes = [n for p in paths(spec) if p and p[-1] == "nodes"
                     and isinstance(at(spec, p), list)
                     for n in at(spec, p) if isinstance(n, dict)
                     and isinstance(n.get("inputs"), list) and n["inputs"]]
            if nodes:
                node = draw(st.sampled_from(nodes))
                slot = draw(st.integers(0, len(node["inputs"]) - 1))
                node["inputs"][slot] = draw(st.one_of(
                    st.sampled_from(NAMES), st.text(max_size=4)))
        else:
            depth = draw(st.sampled_from([2, 40, max_depth]))
            kind = draw(st.sampled_from(["list", "object"]))
            if path:
                parent[path[-1]] = nest(at(spec, path), depth, kind)
            else:
                spec = nest(spec, depth, kind)
        if not isinstance(spec, (dict, list)):
            break
    return spec


def check_outcome(raw):
    """Validate ``raw``: it passes, or fails with a path into the spec."""
    try:
        # a str given to load_spec is a file name: check it as a value
        spec = validate(raw) if isinstance(raw, str) else gn.load_spec(raw)
    except SpecError as exc:
        where = exc.path or "spec"
        assert str(exc).startswith(f"{where}: "), str(exc)
        assert exc.detail.strip()
        # the path starts at a top-level key of the spec (quoted when the
        # key is not a plain name), or is empty for the spec as a whole
        tops = [*TOP, *(raw if isinstance(raw, dict) else ())]
        assert exc.path in ("", *tops) or exc.path.startswith("[") or any(
            exc.path.startswith((f"{k}.", f"{k}[")) for k in tops), exc.path
        return None
    if spec_size(spec) < 10 ** 6:   # valid specs compile too
        assert gn.build(spec).n_params() == spec_size(spec)
    return spec


def spec_size(spec):
    from graphnet.graph import infer_widths, make_op
    widths = infer_widths(spec["graph"])
    return sum(make_op(n).count_params([widths[s] for s in n["inputs"]])
               for n in spec["graph"]["nodes"])


# big generated specs are the point; tmp_path is only a place to write
QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
QUIET_WITH_FIXTURE = QUIET + [HealthCheck.function_scoped_fixture]


@settings(max_examples=300, deadline=None, suppress_health_check=QUIET)
@given(raw=mutated_specs())
@example(raw={"0[": 1})     # top-level keys that are not plain names
@example(raw={"0.": 1})
def test_mutated_specs_validate_or_name_a_path(raw):
    # any other exception type fails the test
    check_outcome(raw)


@settings(max_examples=60, deadline=None,
          suppress_health_check=QUIET_WITH_FIXTURE)
@given(raw=mutated_specs(max_depth=500))
def test_mutated_spec_files_exit_0_or_2(raw, tmp_path):
    path = write_spec(tmp_path / "mutated.json", json.dumps(raw))
    code, out, err = cli("validate", path, "--expand")
    assert code in (0, 2)
    if code == 2:
        short_error(err, "graphnet validate: error: ")
    else:
        assert json.loads(out)["graph"]["nodes"]


@settings(max_examples=6, deadline=None,
          suppress_health_check=QUIET_WITH_FIXTURE)
@given(raw=mutated_specs(max_depth=500))
def test_mutated_spec_files_through_a_real_process(raw, tmp_path):
    path = write_spec(tmp_path / "mutated.json", json.dumps(raw))
    proc = run_subprocess(tmp_path, "validate", path, "--expand")
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr


# ---- interruption and resume ---------------------------------------------

def reference_run(fake, out, **train):
    """An uninterrupted run; returns its folder."""
    gn.train(tiny(**train), out=out, data_dir=fake, download=False)
    return only_run_dir(out)


def stop_at(step, also=None):
    """A progress callback that interrupts after update ``step``."""
    def progress(done, total, cost, eta):
        if also:
            also(done)
        if done == step:
            raise KeyboardInterrupt
    return progress


OPTIMIZERS_USED = [{"type": "adam"},
                   {"type": "sgd", "momentum": 0.9, "nesterov": True}]


@pytest.mark.parametrize("optimizer", OPTIMIZERS_USED,
                         ids=lambda o: o["type"])
def test_interrupt_and_resume_match_an_uninterrupted_run(optimizer, fake,
                                                         tmp_path):
    # 10 updates per epoch, evaluation every 5: the interrupt at 17 lands
    # mid-epoch between evaluations; the checkpoint of step 15 is kept
    # aside to check that an evaluation checkpoint resumes exactly too
    # a cyclic schedule without "cycles" (the steps say how long) has a
    # null in spec.json, which resuming must read back
    cyclic = {"type": "cyclic", "eta_min": 1e-4, "eta_max": 0.05,
              "step_size": 6}
    sched = cyclic if optimizer["type"] == "sgd" else tiny()["train"][
        "schedule"]
    ref = reference_run(fake, tmp_path / "ref", optimizer=optimizer,
                        schedule=sched)
    out = tmp_path / "cut"
    saved = tmp_path / "at-15"

    def keep_eval_checkpoint(done):
        if done == 16:
            shutil.copytree(only_run_dir(out), saved)

    with pytest.raises(KeyboardInterrupt):
        gn.train(tiny(optimizer=optimizer, schedule=sched), out=out,
                 data_dir=fake,
                 download=False, progress=stop_at(17, keep_eval_checkpoint))
    run_dir = only_run_dir(out)
    assert not (run_dir / "model.npz").exists()
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ck:
        assert int(ck["step"]) == 17 and ck["perm"].size == TRAIN
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 17

    trainer_mod.resume(run_dir, data_dir=fake)
    assert_same_params(params_of(run_dir), params_of(ref))
    assert metric_rows(run_dir) == metric_rows(ref)
    assert not (run_dir / "checkpoint.npz").exists()

    with np.load(saved / "checkpoint.npz", allow_pickle=False) as ck:
        assert int(ck["step"]) == 15
    trainer_mod.resume(saved, data_dir=fake)
    assert_same_params(params_of(saved), params_of(ref))
    assert metric_rows(saved) == metric_rows(ref)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_inside_an_update_waits_for_the_step_to_end(signum, fake,
                                                           tmp_path,
                                                           monkeypatch):
    # the signal arrives after the first param of update 13 has moved and
    # before the others have: the checkpoint must not hold that half step
    ref = reference_run(fake, tmp_path / "ref")
    adam = OPTIMIZERS["adam"]
    plain = adam.step

    def split_step(self, params, grads, eta):
        if self.t != 12:
            return plain(self, params, grads, eta)
        keys = list(grads)
        plain(self, params, {k: grads[k] for k in keys[:1]}, eta)
        self.t -= 1          # the second half is the same update
        os.kill(os.getpid(), signum)
        plain(self, params, {k: grads[k] for k in keys[1:]}, eta)

    monkeypatch.setattr(adam, "step", split_step)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        gn.train(tiny(), out=out, data_dir=fake, download=False)
    monkeypatch.setattr(adam, "step", plain)
    run_dir = only_run_dir(out)
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ck:
        assert int(ck["step"]) == 13
    trainer_mod.resume(run_dir, data_dir=fake)
    assert_same_params(params_of(run_dir), params_of(ref))
    # the handlers are restored once the run is over
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_before_training_leaves_no_resume_hint(fake, tmp_path,
                                                         monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "load_dataset", interrupted)
    spec = write_spec(tmp_path / "tiny.json", tiny())
    code, out, err = cli("run", spec, "--data-dir", fake, "--out",
                         tmp_path / "runs")
    assert code == 130
    assert "nothing to resume" in out and "--resume" not in out
    assert "graphnet run: interrupted" in err


def test_real_sigint_to_a_real_run(fake, tmp_path):
    # a slower net (wider layer, float64) so the signal lands mid-run
    spec = tiny(steps=120, eval_every=4, batch_size=20)
    spec["graph"]["mlp"]["hidden"] = [64, 8]
    path = write_spec(tmp_path / "tiny.json", spec)
    out, ref = tmp_path / "runs", tmp_path / "ref"
    reference = subprocess.Popen(
        graphnet_cmd("run", path, "--data-dir", fake, "--out", ref),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(tmp_path), cwd=tmp_path)
    proc = subprocess.Popen(
        graphnet_cmd("run", path, "--data-dir", fake, "--out", out),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(tmp_path), cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = list(out.glob("*/metrics.csv"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    run_dir = only_run_dir(out)
    assert proc.returncode == 130, stderr
    assert f"graphnet run --resume {run_dir}" in stdout
    assert "interrupted" in stderr and "Traceback" not in stderr
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as ck:
        stopped_at = int(ck["step"])
    assert 0 < stopped_at < 120

    proc = run_subprocess(tmp_path, "run", "--resume", run_dir,
                          "--data-dir", fake)
    assert proc.returncode == 0, proc.stderr
    assert reference.wait(timeout=120) == 0, reference.stderr.read()
    assert_same_params(params_of(run_dir), params_of(only_run_dir(ref)))
    assert metric_rows(run_dir) == metric_rows(only_run_dir(ref))


def test_resume_refusals(fake, tmp_path):
    spec = write_spec(tmp_path / "tiny.json", tiny(steps=5))
    code, _, _ = cli("run", spec, "--data-dir", fake, "--out",
                     tmp_path / "runs")
    assert code == 0
    done = only_run_dir(tmp_path / "runs")
    code, _, err = cli("run", "--resume", done, "--data-dir", fake)
    assert code == 2
    short_error(err, "no checkpoint.npz", "the run has finished")
    code, _, err = cli("run", "--resume", tmp_path, "--data-dir", fake)
    assert code == 2
    short_error(err, "no checkpoint.npz")
    code, _, err = cli("run", spec, "--resume", done)
    assert code == 2
    short_error(err, "either SPEC or --resume")
    code, _, err = cli("run", "--resume", done, "--set", "loss.l2=1")
    assert code == 2
    short_error(err, "--set and --seed cannot change it")


@pytest.mark.parametrize("damage", ["garbage", "other-spec", "object",
                                    "metrics", "no-metrics"])
def test_damaged_checkpoint_is_refused(damage, fake, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        gn.train(tiny(), out=tmp_path / "runs", data_dir=fake,
                 download=False, progress=stop_at(7))
    run_dir = only_run_dir(tmp_path / "runs")
    ck = run_dir / "checkpoint.npz"
    if damage == "garbage":
        ck.write_bytes(ck.read_bytes()[:200])
    elif damage == "other-spec":
        with np.load(ck) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["param/fc1.W"] = arrays["param/fc1.W"][:, :10]
        np.savez(ck, **arrays)
    elif damage == "object":
        np.savez(ck, step=np.array([{"a": 1}], dtype=object))
    elif damage == "metrics":
        (run_dir / "metrics.csv").write_text("step,epoch\nfive,0.5\n")
    else:
        (run_dir / "metrics.csv").unlink()
    code, _, err = cli("run", "--resume", run_dir, "--data-dir", fake)
    assert code == 2
    short_error(err, "metrics.csv" if "metrics" in damage
                else "checkpoint.npz")


# ---- divergence ----------------------------------------------------------

@pytest.mark.parametrize("eta, init", [(20, "he"), (1e4, "he"),
                                       (0.1, {"normal": 1e3})],
                         ids=["eta-20", "eta-1e4", "init-1e3"])
def test_divergence_stops_at_once_and_keeps_what_it_had(eta, init, fake,
                                                        tmp_path):
    spec = tiny(steps=40, eval_every=5, dtype="float32",
                optimizer={"type": "sgd", "momentum": 0.9},
                schedule={"type": "constant", "eta": eta})
    spec["graph"]["mlp"].update(hidden=[20, 20], norm="none", dropout=0.0,
                                init=init)
    path = write_spec(tmp_path / "div.json", spec)
    code, _, err = cli("run", path, "--data-dir", fake, "--out",
                       tmp_path / "runs")
    assert code == 1
    short_error(err, "graphnet run: failed: ", "learning rate is likely "
                "too high or the initialization too large")
    run_dir = only_run_dir(tmp_path / "runs")
    step = int(re.search(r"step (\d+)", err).group(1))
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,eta") and len(rows) >= 2
    assert not (run_dir / "model.npz").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    ck = run_dir / "checkpoint.npz"
    if ck.exists():   # the last good one: finite, before the failure
        with np.load(ck, allow_pickle=False) as f:
            assert int(f["step"]) < step and int(f["step"]) % 5 == 0
            assert f"checkpoint of step {int(f['step'])}" in err
            for key in f.files:
                if key.startswith("param/"):
                    assert np.isfinite(f[key]).all()
    else:
        assert "no checkpoint was written yet" in err


# ---- bad data through the command line -----------------------------------

class RunsCode:
    """Pickles to a call of os.system: loading it would run a command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def break_batch(folder, how, marker):
    """Damage data_batch_2 (or remove data_batch_3) of a fake set."""
    target = folder / "data_batch_2"
    if how == "missing":
        (folder / "data_batch_3").unlink()
    elif how == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    elif how == "corrupted":
        payload = bytearray(target.read_bytes())
        payload[:64] = np.random.default_rng(0).bytes(64)
        target.write_bytes(bytes(payload))
    elif how in ("shape", "labels"):
        with open(target, "rb") as f:
            batch = pickle.load(f)
        if how == "shape":
            batch[b"data"] = batch[b"data"][:, :3000]
        else:
            batch[b"labels"][5] = 10
        target.write_bytes(pickle.dumps(batch))
    else:
        target.write_bytes(pickle.dumps(
            {b"data": RunsCode(f"touch {marker}"), b"labels": [0]}))


DATA_CASES = {
    "missing": ("data_batch_3", "missing or unreadable"),
    "truncated": ("data_batch_2", "truncated or corrupted"),
    "corrupted": ("data_batch_2", "cannot be read"),
    "shape": ("data_batch_2", "should be a uint8 array of shape (N, 3072)"),
    "labels": ("data_batch_2", "labels must be in 0..9, found 10 at index 5"),
    "code": ("data_batch_2", "refusing to load global"),
}


@pytest.mark.parametrize("how", list(DATA_CASES))
def test_bad_data_exits_2_naming_the_file(how, tmp_path):
    written = write_fake_cifar(tmp_path / "data", n_per_batch=40, n_test=50)
    marker = tmp_path / "code-ran"
    break_batch(written["folder"], how, marker)
    spec = write_spec(tmp_path / "tiny.json", tiny(steps=2))
    code, out, err = cli("run", spec, "--data-dir", tmp_path / "data",
                         "--out", tmp_path / "runs")
    assert code == 2
    name, needle = DATA_CASES[how]
    short_error(err, "graphnet run: error: ", name, needle)
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()   # no run folder for bad data


def test_code_in_a_batch_runs_nothing_in_a_real_process(tmp_path):
    written = write_fake_cifar(tmp_path / "data", n_per_batch=40, n_test=50)
    marker = tmp_path / "code-ran"
    break_batch(written["folder"], "code", marker)
    spec = write_spec(tmp_path / "tiny.json", tiny(steps=2))
    proc = run_subprocess(tmp_path, "run", spec, "--data-dir",
                          tmp_path / "data", "--out", tmp_path / "runs")
    assert proc.returncode == 2
    short_error(proc.stderr, "data_batch_2", "posix.system")
    assert not marker.exists()
    # the payload is real: a plain unpickler runs it
    pickle.loads((written["folder"] / "data_batch_2").read_bytes())
    assert marker.exists()


def test_split_larger_than_the_data_exits_2(fake, tmp_path):
    spec = write_spec(tmp_path / "tiny.json", tiny(steps=2))
    code, _, err = cli("run", spec, "--data-dir", fake, "--set",
                       "data.train=190", "--out", tmp_path / "runs")
    assert code == 2
    short_error(err, "exceeds the 200 training images")


# ---- loading without pickle ----------------------------------------------

@pytest.fixture(scope="module")
def finished_run(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    gn.train(tiny(steps=6), out=out, data_dir=fake, download=False)
    return only_run_dir(out)


def test_eval_refuses_a_model_with_an_object_array(finished_run, fake,
                                                   tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    arrays = params_of(run_dir)
    arrays["fc1.W"] = np.array([RunsCode(f"touch {tmp_path / 'ran'}")],
                               dtype=object)
    np.savez(run_dir / "model.npz", **arrays)
    code, out, err = cli("eval", run_dir, "--data-dir", fake)
    assert code == 2
    short_error(err, "model.npz", "Object arrays cannot be loaded")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("damage, needle", [
    ("missing", "model.npz: file not found"),
    ("garbage", "not a readable graphnet array file"),
    ("shapes", "network expects"),
    ("spec", "spec.json"),
])
def test_eval_refuses_damaged_run_folders(damage, needle, finished_run, fake,
                                          tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    model = run_dir / "model.npz"
    if damage == "missing":
        model.unlink()
    elif damage == "garbage":
        model.write_bytes(b"PK\x03\x04 not really a zip")
    elif damage == "shapes":
        arrays = params_of(run_dir)
        arrays["fc1.W"] = arrays["fc1.W"][:, :5]
        np.savez(model, **arrays)
    else:
        (run_dir / "spec.json").write_text('{"graph": {"mlp": {"hidden": [')
    code, _, err = cli("eval", run_dir, "--data-dir", fake)
    assert code == 2
    short_error(err, needle)


def test_specs_cannot_name_code_to_import(tmp_path):
    # anything that looks like a reference to code is an unknown name
    for key, value, path in [
            ("train.optimizer", {"type": "torch.optim.SGD"},
             "train.optimizer.type"),
            ("graph.mlp.init", "os.system", "graph.mlp.init"),
            ("loss.op", "__import__('os')", "loss.op")]:
        spec = write_spec(tmp_path / "s.json", with_(key, value))
        code, _, err = cli("validate", spec)
        assert code == 2
        short_error(err, path, "valid choices")


# ---- run folders and atomic writes ----------------------------------------

def test_runs_in_the_same_second_get_distinct_folders(fake, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20250101-120000")
    for _ in range(2):
        gn.train(tiny(steps=2), out=tmp_path, data_dir=fake, download=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tiny-20250101-120000", "tiny-20250101-120000-2"]
    for name in names:   # each run wrote its own complete folder
        assert json.loads((tmp_path / name / "summary.json").read_text())[
            "status"] == "finished"


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from graphnet import runs
    target = tmp_path / "summary.json"
    runs.write_json(target, {"a": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        runs.write_json(target, {"a": 2})
    with pytest.raises(OSError, match="disk full"):
        runs.save_npz(tmp_path / "model.npz", {"w": np.ones(3)})
    assert json.loads(target.read_text()) == {"a": 1}
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_every_run_file_is_written_through_a_rename(finished_run, fake,
                                                    tmp_path, monkeypatch):
    from graphnet import runs
    renamed = []
    real = os.replace

    def spy(src, dst):
        renamed.append(Path(dst).name)
        assert Path(src).parent == Path(dst).parent
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    monkeypatch.setattr(runs.os, "replace", spy)
    with pytest.raises(KeyboardInterrupt):
        gn.train(tiny(), out=tmp_path, data_dir=fake, download=False,
                 progress=stop_at(7))
    trainer_mod.resume(only_run_dir(tmp_path), data_dir=fake)
    for name in ("spec.json", "metrics.csv", "checkpoint.npz",
                 "summary.json", "model.npz", "curves.png"):
        assert name in renamed, name
    assert any(name.startswith("network.") for name in renamed)
    # and nothing else appears in the folder: no temporary leftovers
    assert {p.name.split(".")[0] for p in only_run_dir(tmp_path).iterdir()
            } == {"spec", "metrics", "summary", "model", "curves",
                  "network"}


def test_checkpoint_every_adds_resumable_checkpoints(fake, tmp_path):
    # resuming from the checkpoint of step 12 (no evaluation there) ends
    # like the reference run
    ref = reference_run(fake, tmp_path / "ref")
    out, saved = tmp_path / "cut", tmp_path / "at-12"
    steps = []

    def note(done):   # called before the step's own checkpoint
        ck = only_run_dir(out) / "checkpoint.npz"
        if ck.exists():
            with np.load(ck) as f:
                steps.append(int(f["step"]))
        if done == 13:
            shutil.copytree(only_run_dir(out), saved)

    with pytest.raises(KeyboardInterrupt):
        gn.train(tiny(checkpoint_every=4), out=out, data_dir=fake,
                 download=False, progress=stop_at(14, note))
    # every 4 steps and at every evaluation (5, 10)
    assert sorted(set(steps)) == [4, 5, 8, 10, 12]
    trainer_mod.resume(saved, data_dir=fake)
    assert_same_params(params_of(saved), params_of(ref))
    assert metric_rows(saved) == metric_rows(ref)


def test_unusable_out_folder_exits_2(fake, tmp_path):
    spec = write_spec(tmp_path / "tiny.json", tiny(steps=2))
    (tmp_path / "a-file").write_text("")
    code, _, err = cli("run", spec, "--data-dir", fake, "--out",
                       tmp_path / "a-file")
    assert code == 2
    short_error(err, "a-file: cannot create a run folder there")


def test_a_full_disk_fails_in_one_line(fake, tmp_path, monkeypatch):
    from graphnet import runs

    def full(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "save_npz", full)
    spec = write_spec(tmp_path / "tiny.json", tiny(steps=6))
    code, _, err = cli("run", spec, "--data-dir", fake, "--out",
                       tmp_path / "runs")
    assert code == 1
    short_error(err, "graphnet run: failed: ", "No space left on device")


def test_the_package_never_unpickles_freely_or_imports_by_name():
    # a static guard: np.load always with allow_pickle=False, pickle only
    # through the restricted unpickler of graphnet.data, and no eval,
    # exec or import by a name that a spec could supply
    import ast
    for path in sorted((ROOT / "graphnet").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (func.id if isinstance(func, ast.Name) else
                    func.attr if isinstance(func, ast.Attribute) else "")
            owner = (func.value.id if isinstance(func, ast.Attribute)
                     and isinstance(func.value, ast.Name) else "")
            where = f"{path.name}:{node.lineno}"
            assert name not in ("eval", "exec", "__import__",
                                "import_module"), where
            assert not (owner == "pickle" and name in (
                "load", "loads", "Unpickler")), where
            if owner in ("np", "numpy") and name == "load":
                flags = {k.arg: getattr(k.value, "value", None)
                         for k in node.keywords}
                assert flags.get("allow_pickle") is False, where
