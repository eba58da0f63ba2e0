"""Hyper-parameter sweeps: seeded random and grid search, coarse to fine.

A sweep file names a base spec, overrides for every run (``set``), the
values to search and the metric to pick by::

    {"base": "3layer-bn.json", "set": {"train.schedule.cycles": 2},
     "search": {"loss.l2": {"log_uniform": [1e-5, 1e-1]}},
     "samples": 8, "refine": 1, "metric": "val_accuracy", "seed": 0}

Search kinds: ``{"uniform": [lo, hi]}``, ``{"log_uniform": [lo, hi]}``
(uniform in log10) and ``{"grid": [v1, v2, ...]}``. A round draws
``samples`` points of the continuous keys (one seeded generator per
round, ``default_rng([seed, round])``) and crosses them with every
combination of the grid keys; a grid-only search runs each combination
once.

Refinement (coarse to fine). Each of the ``refine`` rounds after the
first fixes the grid keys at the best run's values and narrows every
continuous key: with ``c`` the mean of the ``keep`` best runs' values so
far and ``w`` the current width, both in log10 for ``log_uniform``, the
new range is ``[c - shrink*w/2, c + shrink*w/2]``, shifted (not cut) to
stay inside the range of the sweep file. The width therefore falls by
``shrink`` (default 0.5) each round.

Sweep folder. ``--out DIR`` names the folder: when ``DIR`` already holds
a ``sweep.json`` it is the sweep folder, else the sweep folder is
``DIR/<sweep name>``. It holds ``sweep.json`` (the validated sweep and
overrides), ``plan.json`` (every round's ranges and drawn points),
``runs/`` (one run folder per point), ``results.csv``, ``best.json``
(the best run's full spec), ``summary.json`` and ``metric.png``.

Resume. Started again with the same ``--out``, a sweep re-reads
``plan.json`` (so the same values are drawn) and reuses every run folder
under ``runs/`` whose ``spec.json`` equals the spec it would train and
whose status is final (finished or diverged). Runs train in a private
folder under ``runs/.partial/`` and move into ``runs/`` only when done,
so an interrupted run never passes for a finished one. A sweep folder
started from a different sweep, base spec or ``--set`` is refused.

Runs go to worker processes (one BLAS thread each) or to a Dask
cluster; a worker loads the data once and keeps it for its next runs.
"""

import csv
import functools
import io
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path

import numpy as np

from . import runs
from .errors import GraphnetError, RunError, SpecError, describe
from .registry import Registry
from .schema import (Any, Map, Nullable, Number, String, check_keys, fill,
                     join)
from .spec import Spec, load_spec, parse_override, read_json

log = logging.getLogger(__name__)

# summary.json figures a sweep can pick by; accuracies are maximised
FIGURES = ("val_accuracy", "best_val_accuracy", "test_accuracy",
           "train_accuracy", "val_cost", "test_cost", "test_loss",
           "train_cost")
FINAL = ("finished", "diverged")
SAMPLERS = Registry("search kind")


# ---- search kinds --------------------------------------------------------

@SAMPLERS.register("uniform")
class Uniform:
    """Values drawn uniformly from ``[lo, hi]``."""

    continuous = True
    log = False

    @classmethod
    def check(cls, args, path):
        if (not isinstance(args, list) or len(args) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) for v in args)):
            raise SpecError(path, "expected [lo, hi] with two finite "
                                  f"numbers, found {describe(args)}")
        lo, hi = args
        if lo >= hi:
            raise SpecError(path, f"expected lo < hi, found lo={lo} >= "
                                  f"hi={hi}")
        return [float(lo), float(hi)]

    @staticmethod
    def fwd(x):
        return x

    @staticmethod
    def inv(u):
        return u

    @classmethod
    def draw(cls, rng, bounds, n):
        a, b = (cls.fwd(v) for v in bounds)
        return [float(cls.inv(u)) for u in a + (b - a) * rng.random(n)]


@SAMPLERS.register("log_uniform")
class LogUniform(Uniform):
    """Values whose log10 is uniform in ``[log10 lo, log10 hi]``."""

    log = True

    @classmethod
    def check(cls, args, path):
        lo, hi = super().check(args, path)
        if lo <= 0:
            raise SpecError(path, f"expected lo > 0 for a log scale, "
                                  f"found lo={lo}")
        return [lo, hi]

    @staticmethod
    def fwd(x):
        return math.log10(x)

    @staticmethod
    def inv(u):
        return 10.0 ** u


@SAMPLERS.register("grid")
class Grid:
    """Each listed value; several grid keys are crossed."""

    continuous = False
    log = False

    @classmethod
    def check(cls, args, path):
        if not isinstance(args, list) or not args:
            raise SpecError(path, "expected a non-empty list of values, "
                                  f"found {describe(args)}")
        seen = set()
        for i, v in enumerate(args):
            text = json.dumps(v, sort_keys=True)
            if text in seen:
                raise SpecError(join(path, i), f"duplicate value {v!r}")
            seen.add(text)
        return args


def check_search(value, path):
    """``{kind: args}`` with one kind from ``SAMPLERS``."""
    if not isinstance(value, dict) or len(value) != 1:
        raise SpecError(path, "expected one of {\"uniform\": [lo, hi]}, "
                        "{\"log_uniform\": [lo, hi]} or {\"grid\": [...]}, "
                        f"found {describe(value)}")
    (kind, args), = value.items()
    cls = SAMPLERS.lookup(kind, path)
    return {kind: cls.check(args, join(path, kind))}


def sampler(entry):
    """The sampler class and arguments of a validated search entry."""
    (kind, args), = entry.items()
    return SAMPLERS[kind], args


# ---- the sweep file ------------------------------------------------------

SWEEP = {
    "name": String(default=None),
    "description": String(default=""),
    "base": Any(),
    "set": Map(Any(), default={}),
    "search": Map(Any(check_search), min_len=1),
    "samples": Number(default=8, integer=True, low=1),
    "refine": Number(default=0, integer=True, low=0),
    "keep": Number(default=1, integer=True, low=1,
                   doc="best runs whose mean centres a refined range"),
    "shrink": Number(default=0.5, low=0, high=1, open_low=True,
                     open_high=True),
    "metric": String(default="val_accuracy", choices=FIGURES),
    "goal": Nullable(String(choices=("max", "min")),
                     doc="default: max for accuracies, min for costs"),
    "workers": Nullable(Number(integer=True, low=1)),
    "seed": Number(default=0, integer=True, low=0),
}


def load_sweep(source, overrides=None, root=None):
    """Load and validate a sweep file; resolve and check its base spec.

    Parameters
    ----------
    source : str, Path or dict
        A sweep file, or a parsed sweep.
    overrides : dict or list of str, optional
        ``--set`` values applied to every run (after ``set``, before the
        searched values).
    root : Path, optional
        Folder a relative ``base`` is looked up in first (default: the
        sweep file's folder); the current folder is tried second.

    Returns
    -------
    dict
        The sweep with defaults filled in, plus ``base_spec`` (the
        validated spec every point starts from, ``set`` and overrides
        applied) and ``overrides``.

    Raises
    ------
    SpecError
        Naming the sweep file key at fault.
    """
    if isinstance(source, (str, Path)):
        raw, stem = read_json(source), Path(source).name
        root = Path(source).parent if root is None else Path(root)
        stem = stem.removesuffix(".json").removesuffix(".sweep")
    else:
        raw, stem = source, "sweep"
    if not isinstance(raw, dict):
        raise SpecError("", f"expected a sweep object, found {describe(raw)}")
    check_keys(raw, SWEEP, "")
    sweep = fill(raw, SWEEP, "")
    sweep["name"] = sweep["name"] or stem
    if sweep["goal"] is None:
        sweep["goal"] = "max" if "accuracy" in sweep["metric"] else "min"
    if isinstance(overrides, (list, tuple)):
        overrides = dict(parse_override(o) for o in overrides)
    sweep["overrides"] = dict(overrides or {})
    cont = [k for k, e in sweep["search"].items() if sampler(e)[0].continuous]
    if sweep["refine"] and not cont:
        raise SpecError("refine", "refine rounds narrow uniform or "
                        "log_uniform ranges; the search has only grid keys")
    sweep["base_raw"] = resolve_base(sweep["base"], root)
    sweep["base_spec"] = base_spec(sweep["base_raw"], {**sweep["set"],
                                                       **sweep["overrides"]})
    for key, entry in sweep["search"].items():
        cls, args = sampler(entry)
        for i, value in enumerate(args):
            where = join(join(join("search", key), cls.kind_name), i)
            point_spec(sweep, {key: value}, "check", where)
    return sweep


def resolve_base(base, root):
    """A base spec dict from a path (sweep folder first, then cwd)."""
    if isinstance(base, dict):
        return base
    if not isinstance(base, str):
        raise SpecError("base", "expected a spec file path or a spec "
                                f"object, found {describe(base)}")
    for folder in ([Path(root)] if root else []) + [Path.cwd()]:
        path = folder / base
        if path.is_file():
            raw = read_json(path)
            if isinstance(raw, dict) and "name" not in raw:
                raw["name"] = path.stem
            return raw
    raise SpecError("base", f"spec file {base!r} not found next to the "
                            "sweep file or in the current folder")


def base_spec(raw, overrides):
    """Validated base spec with overrides applied."""
    try:
        return load_spec(raw, overrides=overrides)
    except SpecError as exc:
        raise SpecError(f"base: {exc.path}", exc.detail) from None


def point_spec(sweep, values, key, where=None):
    """The validated spec of one point, named ``<base name>-<key>``.

    The overrides go to the base spec as written (templates unexpanded):
    ``set``, then ``--set``, then the point's values.
    """
    over = {**sweep["set"], **sweep["overrides"], **values,
            "name": f"{sweep['base_spec'].name}-{key}"}
    try:
        return load_spec(sweep["base_raw"], overrides=over)
    except SpecError as exc:
        shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in values.items())
        raise SpecError(where or f"point {key}", f"{shown} makes an invalid "
                        f"spec: {exc}") from None


# ---- sampling and refinement ---------------------------------------------

def first_ranges(sweep):
    """Ranges of the continuous keys in round 0 (the sweep file's)."""
    return {k: sampler(e)[1] for k, e in sweep["search"].items()
            if sampler(e)[0].continuous}


def draw_points(sweep, rnd, ranges, grid):
    """The points of one round: continuous draws crossed with the grid.

    Parameters
    ----------
    sweep : dict
        Validated sweep.
    rnd : int
        Round number; with ``sweep["seed"]`` it seeds the generator.
    ranges : dict
        ``{key: [lo, hi]}`` of the continuous keys.
    grid : dict
        ``{key: [values]}`` of the grid keys.

    Returns
    -------
    list of dict
        ``{"key": "r<round>-<index>", "values": {search key: value}}``.
    """
    rng = np.random.default_rng([sweep["seed"], rnd])
    draws = {}
    for k in ranges:                      # sweep-file order: reproducible
        cls = sampler(sweep["search"][k])[0]
        draws[k] = cls.draw(rng, ranges[k], sweep["samples"])
    combos = list(itertools.product(*grid.values())) if grid else [()]
    n = sweep["samples"] if ranges else 1
    points = []
    for combo in combos:
        for i in range(n):
            values = dict(zip(grid, combo))
            values.update({k: d[i] for k, d in draws.items()})
            values = {k: values[k] for k in sweep["search"]}
            points.append({"key": f"r{rnd}-{len(points):03d}",
                           "values": values})
    return points


def refine_range(cls, current, bounds, centres, shrink):
    """The next, narrower range of one continuous key (module docstring).

    Parameters
    ----------
    cls : sampler class
        ``Uniform`` or ``LogUniform`` (which works in log10).
    current, bounds : [lo, hi]
        This round's range and the sweep file's.
    centres : list of float
        The key's values in the best runs.
    shrink : float
        New width / current width, in (0, 1).
    """
    a, b = cls.fwd(current[0]), cls.fwd(current[1])
    lo, hi = cls.fwd(bounds[0]), cls.fwd(bounds[1])
    c = sum(cls.fwd(v) for v in centres) / len(centres)
    half = shrink * (b - a) / 2
    new_a, new_b = c - half, c + half
    if new_a < lo:
        new_a, new_b = lo, lo + 2 * half
    if new_b > hi:
        new_a, new_b = hi - 2 * half, hi
    return [float(cls.inv(new_a)), float(cls.inv(new_b))]


def ranked(rows, metric, goal):
    """Rows with a finite metric, best first."""
    ok = [r for r in rows if r["status"] == "finished"
          and isinstance(r.get(metric), (int, float))
          and math.isfinite(r[metric])]
    return sorted(ok, key=lambda r: r[metric], reverse=goal == "max")


def next_round(sweep, rnd, prev_ranges, rows):
    """Ranges and grid of round ``rnd`` >= 1 from the rows so far."""
    best = ranked(rows, sweep["metric"], sweep["goal"])
    if not best:
        raise RunError(f"no run of round {rnd - 1} finished with a "
                       f"{sweep['metric']}; cannot refine")
    grid_keys = [k for k, e in sweep["search"].items()
                 if not sampler(e)[0].continuous]
    fixed = {k: best[0]["values"][k] for k in grid_keys}
    same = [r for r in best if all(r["values"][k] == v
                                   for k, v in fixed.items())]
    top = same[:sweep["keep"]]
    ranges = {}
    for k, current in prev_ranges.items():
        cls, bounds = sampler(sweep["search"][k])
        ranges[k] = refine_range(cls, current, bounds,
                                 [r["values"][k] for r in top],
                                 sweep["shrink"])
    return ranges, {k: [v] for k, v in fixed.items()}


# ---- where runs execute --------------------------------------------------

class InlineExecutor(Executor):
    """Runs each task at once in this process (one worker, no pool)."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class Runner:
    """Where runs execute: this process, a process pool, or Dask.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: ``os.cpu_count()``); 1 runs inline.
    dask : str, optional
        A scheduler address, or ``"local"`` to start a LocalCluster of
        ``workers`` single-threaded processes.

    Attributes
    ----------
    executor : concurrent.futures.Executor
    ship : bool
        Whether workers return the run folder's files (Dask: the workers
        may not share this machine's file system).
    """

    def __init__(self, workers=None, dask=None):
        self.workers = workers or os.cpu_count() or 1
        self.ship = dask is not None
        self.single_thread = self.workers > 1 or self.ship
        self.cluster = self.client = None
        if dask is not None:
            self.executor = self._dask(dask)
        elif self.workers == 1:
            self.executor = InlineExecutor()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            # spawn: no fork of a process that may hold threads or locks
            self.executor = ProcessPoolExecutor(
                self.workers, multiprocessing.get_context("spawn"),
                initializer=limit_threads)
        self.where = ("this process" if self.workers == 1 and not self.ship
                      else f"{self.workers} worker processes" if not self.ship
                      else f"Dask at {self.address}")

    def _dask(self, address):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GraphnetError("--dask needs Dask distributed, an optional "
                                "extra: pip install -e .[distributed]"
                                ) from None
        if address == "local":
            self.cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True,
                dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout=20)
            except (OSError, ValueError) as exc:
                raise GraphnetError(f"--dask {address}: cannot reach the "
                                    f"scheduler ({exc})") from None
            self.workers = max(1, len(self.client.scheduler_info().get(
                "workers", {})))
        self.address = self.client.scheduler.address
        return self.client.get_executor(pure=False)

    def close(self, cancel=False):
        if isinstance(self.executor, InlineExecutor):
            return
        if self.client is None:
            self.executor.shutdown(wait=not cancel, cancel_futures=cancel)
            return
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, *rest):
        self.close(cancel=kind is not None)


def limit_threads():
    """One BLAS/OpenMP thread in this (worker) process."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)


_DATA = {}


def worker_dataset(spec, data_dir):
    """The spec's data, loaded once per worker process and kept."""
    from .data import load_dataset
    key = (json.dumps(spec["data"], sort_keys=True),
           spec["train"]["dtype"], str(data_dir))
    if key not in _DATA:
        _DATA.clear()                     # keep one data set in memory
        _DATA[key] = load_dataset(spec["data"], data_dir=data_dir,
                                  dtype=spec["train"]["dtype"])
    return _DATA[key]


def run_task(task):
    """Train one spec; the function each worker runs.

    Parameters
    ----------
    task : dict
        ``spec`` (expanded spec dict), ``partial`` (a folder to train in,
        or None for a fresh temporary folder), ``data_dir``, ``ship``
        (return the files instead of leaving them) and ``single_thread``.

    Returns
    -------
    dict
        ``status`` ("finished" or "diverged"), ``error``, ``summary``,
        ``folder`` (the run folder's path, or its name when shipped) and
        ``files`` ({relative path: bytes}, when shipped).
    """
    from . import trainer
    if task["single_thread"]:
        limit_threads()
    spec = Spec(task["spec"])
    partial = Path(task["partial"] or tempfile.mkdtemp(prefix="graphnet-"))
    partial.mkdir(parents=True, exist_ok=True)
    status, error = "finished", None
    data = worker_dataset(spec, task["data_dir"])
    try:
        trainer.train(spec, out=partial, data=data)
    except RunError as exc:
        status, error = "diverged", str(exc)
    except SpecError as exc:   # its (path, message) signature won't unpickle
        raise GraphnetError(str(exc)) from None
    folder, = [p for p in partial.iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    out = {"status": status, "error": error, "summary": summary,
           "folder": str(folder), "files": None}
    if task["ship"]:
        out["files"] = {str(p.relative_to(folder)): p.read_bytes()
                        for p in sorted(folder.rglob("*")) if p.is_file()}
        out["folder"] = folder.name
        shutil.rmtree(partial, ignore_errors=True)
    return out


# ---- run folders ---------------------------------------------------------

def spec_key(spec):
    """Canonical text of a spec: equal texts train the same run."""
    return json.dumps(spec, sort_keys=True)


class RunStore:
    """The finished run folders of one folder, found by their spec.

    Parameters
    ----------
    root : Path
        Folder of run folders (created when missing).
    """

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.partial = self.root / ".partial"
        self.index = {}
        for folder in sorted(self.root.iterdir()):
            summary = read_summary(folder)
            if summary and summary.get("status") in FINAL:
                try:
                    spec = json.loads((folder / "spec.json").read_text())
                except (OSError, ValueError):
                    continue
                self.index[spec_key(spec)] = (folder, summary)

    def find(self, spec):
        """``(folder, summary)`` of a final run of ``spec``, or None."""
        return self.index.get(spec_key(spec))

    def task(self, spec, runner, data_dir):
        """The worker task that trains ``spec`` for this store."""
        partial = None
        if not runner.ship:
            partial = str(self.partial / uuid.uuid4().hex[:12])
        return {"spec": dict(spec), "partial": partial, "data_dir":
                None if data_dir is None else str(data_dir),
                "ship": runner.ship, "single_thread": runner.single_thread}

    def place(self, result):
        """Move a worker's finished run folder in; return (folder, summary).

        The folder keeps its ``<name>-<stamp>`` name (a suffix is added
        when taken) and its ``summary.json`` gets the final ``run_dir``.
        """
        if result["files"] is not None:
            src = self.partial / uuid.uuid4().hex[:12] / result["folder"]
            for rel, data in result["files"].items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
        else:
            src = Path(result["folder"])
        dest = self.root / src.name
        for i in itertools.count(2):
            if not dest.exists():
                break
            dest = self.root / f"{src.name}-{i}"
        summary = dict(result["summary"], run_dir=str(dest))
        runs.write_json(src / "summary.json", summary)
        os.replace(src, dest)
        shutil.rmtree(src.parent, ignore_errors=True)
        spec = json.loads((dest / "spec.json").read_text())
        self.index[spec_key(spec)] = (dest, summary)
        return dest, summary

    def clear_partial(self):
        """Remove run folders left unfinished by an interrupted start."""
        # TODO: continue interrupted runs from their checkpoint instead of
        # restarting them; when train() can be told its run folder
        shutil.rmtree(self.partial, ignore_errors=True)


def read_summary(folder):
    return runs.read_json_or_none(Path(folder) / "summary.json")


def start_runs(jobs, store, runner, data_dir=None):
    """Submit each spec not yet run; return (reused rows, futures).

    A run folder moves into ``store`` as soon as its run ends (in a
    done-callback), so an interrupted sweep or report keeps every run
    that finished, whatever order the caller collects them in.

    Parameters
    ----------
    jobs : list of (object, Spec)
        Caller's handle and the spec to train.
    store : RunStore
    runner : Runner

    Returns
    -------
    reused : list of (handle, row)
        Runs found finished in ``store``.
    futures : dict
        ``{future: handle}``, each future giving ``(folder, summary,
        error)`` once placed; see ``finish_runs``.
    """
    reused, futures = [], {}
    for handle, spec in jobs:
        found = store.find(spec)
        if found:
            reused.append((handle, summary_row(*found, reused=True)))
            continue
        task = store.task(spec, runner, data_dir)
        placed = Future()
        runner.executor.submit(run_task, task).add_done_callback(
            functools.partial(_place, store, placed))
        futures[placed] = handle
    return reused, futures


def _place(store, placed, done):
    """Done-callback: move a finished run into the store."""
    try:
        result = done.result()
        placed.set_result((*store.place(result), result["error"]))
    except BaseException as exc:
        placed.set_exception(exc)


def finish_runs(futures):
    """Yield ``(handle, row)`` as the submitted runs end.

    ``row`` holds ``status`` ("finished", "diverged" or "error" for a
    crash, which is logged and recorded), ``reused``, ``run_dir``,
    ``error`` and the summary's figures. A GraphnetError (bad data) stops
    everything.
    """
    for future in as_completed(futures):
        handle = futures[future]
        try:
            folder, summary, error = future.result()
        except GraphnetError:
            raise
        except Exception as exc:          # a crash in one run: record it
            log.warning("run %s failed: %s: %s", handle,
                        type(exc).__name__, exc)
            yield handle, {"status": "error", "reused": False,
                           "run_dir": None,
                           "error": f"{type(exc).__name__}: {exc}"}
            continue
        yield handle, summary_row(folder, summary, reused=False, error=error)


def run_specs(jobs, store, runner, data_dir=None, progress=None):
    """Train (or reuse) each spec; yield ``(handle, row)`` as runs end.

    ``progress(handle, row)`` is called for every run, reused ones
    included. See ``start_runs`` and ``finish_runs``.
    """
    reused, futures = start_runs(jobs, store, runner, data_dir)
    for handle, row in itertools.chain(reused, finish_runs(futures)):
        if progress:
            progress(handle, row)
        yield handle, row


def summary_row(folder, summary, reused, error=None):
    row = {k: summary.get(k) for k in FIGURES}
    row.update(status=summary.get("status"), reused=reused,
               run_dir=str(folder), steps=summary.get("steps"),
               wall_seconds=summary.get("wall_seconds"), error=error)
    return row


# ---- the sweep -----------------------------------------------------------

def sweep_folder(out, name):
    """``out`` itself when it is a sweep folder, else ``out/name``."""
    out = Path(out)
    return out if (out / "sweep.json").is_file() else out / name


def run_sweep(source, out="runs", overrides=None, data_dir=None,
              workers=None, dask=None, progress=None, runner=None,
              root=None, folder=None):
    """Run a sweep (or resume it) and write its sweep folder.

    Parameters
    ----------
    source : str, Path or dict
        Sweep file or parsed sweep.
    out : str or Path
        A sweep folder to resume, or the folder to create
        ``<sweep name>/`` in.
    overrides : dict or list of str, optional
        Applied to every run, after the sweep's ``set``.
    data_dir : str or Path, optional
        Where the workers find CIFAR-10 (default: their GRAPHNET_DATA).
    workers : int, optional
        Parallel runs (default: the sweep's ``workers``, else the cores).
    dask : str, optional
        Scheduler address, or "local" for a LocalCluster.
    progress : callable, optional
        ``progress(done, total, row)`` after every run.
    runner : Runner, optional
        An open runner to share (``workers`` and ``dask`` are then unused).
    root : Path, optional
        Where a relative ``base`` is looked up first.
    folder : str or Path, optional
        The sweep folder itself (``out`` is then unused).

    Returns
    -------
    dict
        The sweep's ``summary.json``: ``sweep_dir``, ``metric``, ``goal``,
        ``best`` (row), ``rounds`` (ranges per round) and ``rows``.

    Raises
    ------
    SpecError
        A malformed sweep file, or a sweep folder of another sweep.
    RunError
        No run finished.
    """
    sweep = load_sweep(source, overrides, root=root)
    folder = Path(folder) if folder else sweep_folder(out, sweep["name"])
    check_folder(folder, sweep)
    if runner is not None:
        return Sweep(sweep, folder, runner, data_dir, progress).run()
    with Runner(workers or sweep["workers"], dask) as runner:
        return Sweep(sweep, folder, runner, data_dir, progress).run()


def fingerprint(sweep):
    """What must match for a sweep folder to be resumed."""
    keep = {k: v for k, v in sweep.items() if k not in ("workers",)}
    return json.loads(json.dumps(keep, default=str))


def digest(sweep):
    """Eight hex digits naming a sweep's configuration."""
    import hashlib
    text = json.dumps(fingerprint(sweep), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def check_folder(folder, sweep):
    """Create the sweep folder, or check it belongs to this sweep."""
    path = folder / "sweep.json"
    mine = fingerprint(sweep)
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(mine)
                      if old.get(k) != mine.get(k))
        if diff:
            raise SpecError(str(folder), "this sweep folder was started by "
                            f"another sweep (it differs in {', '.join(diff)})"
                            "; give another --out")
        return
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, mine)


class Sweep:
    """The rounds of one sweep in its folder (see the module docstring)."""

    def __init__(self, sweep, folder, runner, data_dir=None, progress=None):
        self.sweep, self.folder, self.runner = sweep, Path(folder), runner
        self.data_dir, self.progress = data_dir, progress
        self.store = RunStore(self.folder / "runs")
        self.plan_path = self.folder / "plan.json"
        self.plan = (json.loads(self.plan_path.read_text())
                     if self.plan_path.is_file() else {"rounds": []})

    def run(self):
        sweep = self.sweep
        self.store.clear_partial()
        grid = {k: sampler(e)[1] for k, e in sweep["search"].items()
                if not sampler(e)[0].continuous}
        ranges, rows = first_ranges(sweep), []
        log.info("sweep %s in %s on %s", sweep["name"], self.folder,
                 self.runner.where)
        for rnd in range(1 + sweep["refine"]):
            if rnd:
                ranges, grid = next_round(sweep, rnd, ranges, rows)
            planned = self.round_plan(rnd, ranges, grid)
            ranges, grid = planned["ranges"], planned["grid"]
            rows += self.run_round(planned)
            self.write_results(rows)
        return self.finish(rows)

    def round_plan(self, rnd, ranges, grid):
        """This round's plan: from plan.json when drawn before."""
        rounds = self.plan["rounds"]
        if rnd < len(rounds):
            return rounds[rnd]
        planned = {"round": rnd, "ranges": ranges, "grid": grid,
                   "points": draw_points(self.sweep, rnd, ranges, grid)}
        rounds.append(planned)
        runs.write_json(self.plan_path, self.plan)
        return planned

    def run_round(self, planned):
        points = planned["points"]
        jobs = [(p["key"], point_spec(self.sweep, p["values"], p["key"]))
                for p in points]
        by_key = {p["key"]: p for p in points}
        rows, total = [], len(points)

        def progress(key, row):
            if self.progress:
                self.progress(len(rows) + 1, total, self.row(by_key[key],
                                                             planned, row))

        for key, row in run_specs(jobs, self.store, self.runner,
                                  self.data_dir, progress):
            rows.append(self.row(by_key[key], planned, row))
            log.info("sweep %s: %d/%d runs of round %d done", self.sweep[
                "name"], len(rows), total, planned["round"])
        order = {p["key"]: i for i, p in enumerate(points)}
        return sorted(rows, key=lambda r: order[r["key"]])

    def row(self, point, planned, row):
        out = {"round": planned["round"], "key": point["key"],
               "values": point["values"], **row}
        if out["run_dir"]:
            out["run_dir"] = os.path.relpath(out["run_dir"], self.folder)
        return out

    def write_results(self, rows):
        keys = list(self.sweep["search"])
        cols = (["round", "key"] + keys + ["status", *FIGURES, "steps",
                                           "wall_seconds", "run_dir",
                                           "error"])
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([r["round"], r["key"]]
                       + [csv_value(r["values"][k]) for k in keys]
                       + [csv_value(r.get(c)) for c in cols[2 + len(keys):]])
        runs.atomic_write(self.folder / "results.csv", buf.getvalue())

    def finish(self, rows):
        sweep = self.sweep
        best = ranked(rows, sweep["metric"], sweep["goal"])
        if not best:
            raise RunError(f"sweep {sweep['name']}: no run finished with a "
                           f"{sweep['metric']}; see {self.folder}/results.csv")
        best = best[0]
        spec = json.loads((self.folder / best["run_dir"] /
                           "spec.json").read_text())
        runs.write_json(self.folder / "best.json", spec)
        summary = {
            "name": sweep["name"], "sweep_dir": str(self.folder),
            "metric": sweep["metric"], "goal": sweep["goal"],
            "search": sweep["search"], "best": best,
            "rounds": [{"round": p["round"], "ranges": p["ranges"],
                        "grid": p["grid"], "runs": len(p["points"])}
                       for p in self.plan["rounds"]],
            "counts": {s: sum(r["status"] == s for r in rows)
                       for s in ("finished", "diverged", "error")},
            "rows": rows,
        }
        runs.write_json(self.folder / "summary.json", summary)
        try:
            plot_metric(sweep, self.plan["rounds"], rows,
                        self.folder / "metric.png")
        except Exception as exc:  # a plot must never lose a sweep
            log.warning("could not draw metric.png: %s", exc)
        log.info("sweep %s: best %s = %s (%s)", sweep["name"],
                 sweep["metric"], best[sweep["metric"]], best["run_dir"])
        return summary


def csv_value(v):
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return v


def fmt_value(v):
    """Short text of a searched value: 0.00123 -> 1.23e-03."""
    if isinstance(v, float):
        return f"{v:.3g}" if 1e-2 <= abs(v) < 1e3 or v == 0 else f"{v:.2e}"
    if isinstance(v, dict):
        return " ".join(f"{k} {fmt_value(x)}" for k, x in v.items())
    return str(v)


def plot_metric(sweep, rounds, rows, path):
    """Write ``metric.png``: the metric against each searched key."""
    from .plots import save_figure
    save_figure(metric_figure(sweep, rounds, rows), path)


def metric_figure(sweep, rounds, rows):
    """Figure of the metric against each searched key.

    Continuous keys get one panel each (log x axis for ``log_uniform``,
    one colour and shaded range per round, diverged runs as red crosses
    at the bottom); a grid-only search gets one bar per combination.
    """
    from .plots import plt
    metric = sweep["metric"]
    cont = [k for k, e in sweep["search"].items() if sampler(e)[0].continuous]
    keys = cont or ["combination"]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8),
                             squeeze=False)
    good = [r for r in rows if isinstance(r.get(metric), (int, float))
            and r["status"] == "finished"]
    bad = [r for r in rows if r not in good]
    floor = min((r[metric] for r in good), default=0.0)
    for ax, key in zip(axes[0], keys):
        if cont:
            cls = sampler(sweep["search"][key])[0]
            for p in rounds:
                mine = [r for r in good if r["round"] == p["round"]]
                ax.plot([r["values"][key] for r in mine],
                        [r[metric] for r in mine], "o", alpha=0.8,
                        label=f"round {p['round']}")
                ax.axvspan(*p["ranges"][key], alpha=0.07,
                           color=f"C{p['round']}")
            if bad:
                ax.plot([r["values"][key] for r in bad], [floor] * len(bad),
                        "x", color="red", label="diverged/failed")
            if cls.log:
                ax.set_xscale("log")
            ax.set_xlabel(key)
        else:
            labels = [", ".join(fmt_value(r["values"][k]) for k in
                                sweep["search"]) for r in rows]
            ax.bar(range(len(rows)), [r.get(metric) or 0 for r in rows],
                   color=["C0" if r in good else "red" for r in rows])
            ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right",
                          fontsize=8)
            ax.set_xlabel(" / ".join(sweep["search"]))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if cont:
            ax.legend(fontsize=8)
    axes[0][0].set_title(f"sweep {sweep['name']}")
    fig.tight_layout()
    return fig


# ---- command line --------------------------------------------------------

def print_row(done, total, row, metric):
    """One progress line for a finished run."""
    values = " ".join(f"{k}={fmt_value(v)}" for k, v in row["values"].items())
    fig = row.get(metric)
    fig = "-" if fig is None else f"{fig:.4f}"
    took = ("reused" if row["reused"] else
            f"{row['wall_seconds']:.0f} s" if row.get("wall_seconds")
            is not None else "-")
    print(f"[{done}/{total}] round {row['round']} {row['key']} {values}: "
          f"{metric} {fig} ({row['status']}, {took}) {row['run_dir'] or ''}",
          flush=True)


def cli_sweep(args):
    """``graphnet sweep``: run a sweep file, print one line per run."""
    if args.workers is not None and args.workers < 1:
        raise GraphnetError(f"--workers: expected an integer >= 1, found "
                            f"{args.workers}")
    metric = {}

    def progress(done, total, row):
        print_row(done, total, row, metric.get("name", "val_accuracy"))

    source = args.sweep
    metric["name"] = load_sweep(source, args.overrides)["metric"]
    result = run_sweep(source, out=args.out, overrides=args.overrides,
                       data_dir=args.data_dir, workers=args.workers,
                       dask=args.dask, progress=progress)
    best = result["best"]
    print(f"sweep folder: {result['sweep_dir']}")
    for r in result["rounds"]:
        shown = ", ".join(f"{k} in [{fmt_value(lo)}, {fmt_value(hi)}]"
                          for k, (lo, hi) in r["ranges"].items()) or \
            ", ".join(f"{k} in {[fmt_value(v) for v in vs]}"
                      for k, vs in r["grid"].items())
        print(f"round {r['round']}: {r['runs']} runs, {shown}")
    values = " ".join(f"{k}={fmt_value(v)}" for k, v in best["values"].items())
    print(f"best: {values}: {result['metric']} {best[result['metric']]:.4f}, "
          f"test accuracy {best['test_accuracy']:.4f} ({best['run_dir']})")
    c = result["counts"]
    print(f"{c['finished']} finished, {c['diverged']} diverged, "
          f"{c['error']} failed; best spec in "
          f"{Path(result['sweep_dir']) / 'best.json'}")
    return 0
