"""A study from one command: run a suite's runs and sweeps, write a report.

A suite file names the runs and sweeps of a study and the sections of
its report::

    {"title": "...", "set": {...},
     "runs": {"3layer-bn": {"spec": "3layer-bn.json"},
              "best": {"spec": "3layer-bn.json", "best_of": "lambda",
                       "set": {"train.schedule.cycles": 3}}},
     "sweeps": {"lambda": "lambda.sweep.json"},
     "sections": [{"type": "curves", "runs": ["3layer-bn"]}, ...]}

Spec and sweep paths are relative to the suite file (else to the current
folder); a sweep may also be written inline as an object. A run with
``best_of`` takes the searched values of that sweep's best run. The
overrides of a run apply in this order: the suite's ``set``, the run's
``set``, the command line's ``--set``, then ``best_of`` values; a sweep's
runs get the suite's ``set`` and ``--set`` after the sweep's own.

``graphnet report SUITE -o DIR`` keeps everything in ``DIR``: ``runs/``
(the named runs), ``sweeps/<name>-<digest>/`` (sweep folders, one per
configuration: the digest hashes the sweep, base spec and overrides), ``gradcheck/``
(one JSON file per checked net), ``figures/``, ``report.md`` and
``report.pdf``. A run whose ``spec.json`` equals the spec it would train
is reused, so a second invocation with the same ``-o`` and ``--set``
trains nothing; a different ``--set`` trains new runs next to the old.

Section types (``SECTIONS``): ``gradcheck``, ``curves``, ``search``,
``sensitivity`` and ``table`` (a list of extra runs, e.g. extensions,
tabulated with their figures). Every figure in the report is read from
a run folder (or gradcheck file) that the report names.
"""

import functools
import json
import logging
import math
import os
import re
import time
from concurrent.futures import Future, as_completed
from pathlib import Path

from . import runs
from .errors import GraphnetError, SpecError, choices_hint, describe
from .registry import Registry
from .schema import (Any, List, Map, Nullable, Number, Object, String,
                     check_keys, fill, join)
from .spec import load_spec, parse_override, read_json
from .sweep import (RunStore, Runner, digest, finish_runs, fmt_value,
                    load_sweep, metric_figure, run_sweep, start_runs)

log = logging.getLogger(__name__)

SECTIONS = Registry("section type")
RUN = Object({
    "spec": String(),
    "set": Map(Any(), default={}),
    "best_of": Nullable(String(), doc="sweep whose best values to use"),
    "description": String(default=""),
})
SUITE = {
    "name": String(default=None),
    "title": String(default="graphnet study"),
    "description": String(default=""),
    "set": Map(Any(), default={}),
    "runs": Map(RUN, default={}),
    "sweeps": Map(Any(), default={}),
    "sections": List(Any(), min_len=1),
}
FIG = ("test_accuracy", "val_accuracy", "train_accuracy", "test_cost")


# ---- the suite file ------------------------------------------------------

def load_suite(path, overrides=None):
    """Load and validate a suite file; resolve its specs and sweeps.

    Parameters
    ----------
    path : str or Path
        The suite file.
    overrides : dict or list of str, optional
        ``--set`` values for every run.

    Returns
    -------
    dict
        The suite with defaults filled, plus ``root`` (its folder),
        ``overrides``, resolved ``sweeps`` and section objects.

    Raises
    ------
    SpecError
        Naming the suite key at fault.
    """
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise SpecError("", f"expected a suite object, found {describe(raw)}")
    check_keys(raw, SUITE, "")
    suite = fill(raw, SUITE, "")
    suite["name"] = suite["name"] or path.name.removesuffix(".json")
    suite["root"] = path.parent
    if isinstance(overrides, (list, tuple)):
        overrides = dict(parse_override(o) for o in overrides)
    suite["overrides"] = dict(overrides or {})
    every = {**suite["set"], **suite["overrides"]}
    sweeps = {}
    for name, source in suite["sweeps"].items():
        where = join("sweeps", name)
        if isinstance(source, str):
            source = find_file(source, suite["root"], where)
        elif not isinstance(source, dict):
            raise SpecError(where, "expected a sweep file path or a sweep "
                                   f"object, found {describe(source)}")
        try:
            sweep = load_sweep(source, every,
                               root=sweep_root(source, suite))
        except SpecError as exc:
            raise SpecError(f"{where}: {exc.path}", exc.detail) from None
        sweeps[name] = {"source": source, "sweep": sweep}
    suite["sweeps"] = sweeps
    for name, run in suite["runs"].items():
        where = join("runs", name)
        run["path"] = find_file(run["spec"], suite["root"], join(where, "spec"))
        if run["best_of"] is not None and run["best_of"] not in sweeps:
            raise SpecError(join(where, "best_of"), f"unknown sweep "
                            f"{run['best_of']!r}"
                            f"{choices_hint(run['best_of'], sweeps)}")
        run_spec(suite, name)   # the spec must validate before anything runs
    suite["sections"] = [make_section(s, join("sections", i), suite)
                         for i, s in enumerate(suite["sections"])]
    return suite


def sweep_root(source, suite):
    """Inline sweeps find their base next to the suite file."""
    return suite["root"] if isinstance(source, dict) else None


def find_file(name, root, where):
    for folder in (Path(root), Path.cwd()):
        if (folder / name).is_file():
            return folder / name
    raise SpecError(where, f"file {name!r} not found next to the suite file "
                           "or in the current folder")


def run_spec(suite, name, best=None):
    """The validated spec of a named run (``best``: searched values)."""
    run = suite["runs"][name]
    over = {**suite["set"], **run["set"], **suite["overrides"],
            **(best or {}), "name": name}
    try:
        return load_spec(run["path"], overrides=over)
    except SpecError as exc:
        raise SpecError(f"runs.{name}: {exc.path}", exc.detail) from None


def make_section(raw, path, suite):
    if not isinstance(raw, dict) or "type" not in raw:
        raise SpecError(path, "expected a section object with a \"type\", "
                              f"found {describe(raw)}")
    cls = SECTIONS.lookup(raw["type"], join(path, "type"))
    fields = {"type": String(), "title": String(default=cls.title),
              "text": String(default=""), **cls.fields}
    check_keys(raw, fields, path)
    section = cls(fill(raw, fields, path))
    section.check(suite, path)
    return section


def check_ref(name, known, what, path):
    if name not in known:
        raise SpecError(path, f"unknown {what} {name!r}"
                              f"{choices_hint(name, known)}")


# ---- running the study ---------------------------------------------------

def gradcheck_task(spec, dims, batch, steps):
    """Gradient-check a spec (in a worker); rows as plain JSON values."""
    from .gradcheck import check_spec
    rows = check_spec(spec, dims=dims, batch=batch, steps=steps)
    return [{**r, "shape": list(r["shape"])} for r in rows]


class Study:
    """The runs, sweeps and checks of a suite in one output folder.

    Parameters
    ----------
    suite : dict
        From ``load_suite``.
    out : Path
        The report folder.
    runner : graphnet.sweep.Runner
    data_dir : str or Path, optional
    progress : callable, optional
        ``progress(kind, name, row)`` for every run and check.
    """

    def __init__(self, suite, out, runner, data_dir=None, progress=None):
        self.suite, self.out, self.runner = suite, Path(out), runner
        self.data_dir, self.progress = data_dir, progress
        self.store = RunStore(self.out / "runs")
        self.runs, self.sweeps, self.checks, self.specs = {}, {}, {}, {}
        self.trained = self.reused = 0

    def note(self, kind, name, row):
        if kind != "check":
            self.reused += bool(row.get("reused"))
            self.trained += not row.get("reused")
        if self.progress:
            self.progress(kind, name, row)

    def run(self):
        """Run what is missing; fill ``runs``, ``sweeps`` and ``checks``."""
        s = self.suite
        self.store.clear_partial()
        checks = self.start_checks()
        now = [n for n, r in s["runs"].items() if r["best_of"] is None]
        pending = self.start([(n, run_spec(s, n)) for n in now])
        for name, entry in s["sweeps"].items():
            def progress(done, total, row, name=name):
                self.note("sweep", name, dict(row, done=done, total=total))
            # one folder per configuration: another --set starts afresh
            folder = self.out / "sweeps" / f"{name}-{digest(entry['sweep'])}"
            self.sweeps[name] = run_sweep(
                entry["source"], folder=folder,
                overrides={**s["set"], **s["overrides"]},
                data_dir=self.data_dir, progress=progress,
                runner=self.runner, root=sweep_root(entry["source"], s))
            best = self.sweeps[name]["best"]["values"]
            later = [n for n, r in s["runs"].items() if r["best_of"] == name]
            pending.update(self.start([(n, run_spec(s, n, best))
                                       for n in later]))
        # TODO: announce named runs as they end rather than after the
        # sweeps; when one loop collects runs and sweep rounds together
        for name, row in finish_runs(pending):
            self.keep_run(name, row)
        self.finish_checks(checks)
        return self

    def start(self, jobs):
        specs = dict(jobs)
        reused, futures = start_runs(jobs, self.store, self.runner,
                                     self.data_dir)
        for name, row in reused:
            self.keep_run(name, row)
        self.specs.update(specs)
        return futures

    def keep_run(self, name, row):
        if row["run_dir"]:
            row["run_dir"] = rel(row["run_dir"], self.out)
        self.runs[name] = row
        self.note("run", name, row)

    def start_checks(self):
        """Submit the gradient checks not found in ``gradcheck/``."""
        futures = {}
        folder = self.out / "gradcheck"
        folder.mkdir(parents=True, exist_ok=True)
        every = {**self.suite["set"], **self.suite["overrides"]}
        for section in self.suite["sections"]:
            if section.kind_name != "gradcheck":
                continue
            cfg = section.cfg
            for net in cfg["nets"]:
                spec = load_spec(net["path"], overrides={**every,
                                                         **net["set"]})
                key = {"label": net["label"], "spec": spec,
                       "dims": cfg["dims"], "batch": cfg["batch"],
                       "steps": cfg["steps"]}
                path = folder / f"{slug(net['label'])}.json"
                old = runs.read_json_or_none(path)
                if old and {k: old.get(k) for k in key} == json.loads(
                        json.dumps(key)):
                    self.checks[net["label"]] = dict(old, file=rel(path,
                                                                   self.out))
                    self.note("check", net["label"], {"reused": True})
                    continue
                placed = Future()
                self.runner.executor.submit(
                    gradcheck_task, dict(spec), cfg["dims"], cfg["batch"],
                    cfg["steps"]).add_done_callback(
                        functools.partial(self._save_check, key, path,
                                          placed))
                futures[placed] = key["label"]
        return futures

    def _save_check(self, key, path, placed, done):
        """Done-callback: write a check's file as soon as it ends."""
        try:
            result = {**json.loads(json.dumps(key)), "rows": done.result()}
            runs.write_json(path, result)
            placed.set_result(dict(result, file=rel(path, self.out)))
        except BaseException as exc:
            placed.set_exception(exc)

    def finish_checks(self, futures):
        for f in as_completed(futures):
            self.checks[futures[f]] = f.result()
            self.note("check", futures[f], {"reused": False})


def slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-").lower()


def rel(path, root):
    return os.path.relpath(path, root)


def metrics_of(study, run_dir):
    """The metrics rows of a run folder named relative to the report."""
    return runs.read_metrics(study.out / run_dir / "metrics.csv")


# ---- formatting helpers --------------------------------------------------

def pct(v):
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) \
        else f"{100 * v:.2f}%"


def num(v, digits=4):
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) \
        else f"{v:.{digits}f}"


def table(header, rows):
    """A markdown pipe table."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def code(path):
    return f"`{path}`" if path else "-"


def curves_figure(series, title=None):
    """Loss and accuracy against the step for several runs.

    ``series`` is a list of (label, metrics rows); training is drawn
    solid and validation dashed, one colour per run.
    """
    from .plots import plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("loss", "cross-entropy loss"), ("cost", "cost (loss + L2)"),
              ("accuracy", "accuracy"))
    for i, (label, rows) in enumerate(series):
        steps = [r["step"] for r in rows]
        for ax, (key, name) in zip(axes, panels):
            for split, style in (("train", "-"), ("val", "--")):
                ys = [r.get(f"{split}_{key}") for r in rows]
                ax.plot(steps, [math.nan if y is None else y for y in ys],
                        style, color=f"C{i}",
                        label=f"{label} ({'train' if split == 'train' else 'val'})")
            ax.set_xlabel("update step")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_table(study, names, label="run"):
    rows = []
    for n in names:
        r = study.runs[n]
        rows.append([n, r["status"], pct(r.get("test_accuracy")),
                     pct(r.get("val_accuracy")), pct(r.get("train_accuracy")),
                     num(r.get("test_cost")), r.get("steps") or "-",
                     num(r.get("wall_seconds"), 0), code(r["run_dir"])])
    return table([label, "status", "test acc", "val acc", "train acc",
                  "test cost", "steps", "wall s", "run folder"], rows)


# ---- sections ------------------------------------------------------------

class Section:
    """A part of the report; ``render`` returns its blocks.

    A block is ``("md", text)`` or ``("fig", file name, figure,
    caption)``.
    """

    title = ""
    fields = {}

    def __init__(self, cfg):
        self.cfg = cfg

    def check(self, suite, path):
        pass

    def render(self, study):
        raise NotImplementedError


@SECTIONS.register("gradcheck")
class GradcheckSection(Section):
    """Worst relative gradient errors per parameter of several nets."""

    title = "Gradient checks"
    fields = {"nets": List(Object({"label": String(), "spec": String(),
                                   "set": Map(Any(), default={})}),
                           min_len=1),
              "dims": Number(default=10, integer=True, low=1),
              "batch": Number(default=5, integer=True, low=2),
              "steps": Number(default=3, integer=True, low=0)}

    def check(self, suite, path):
        labels = set()
        for i, net in enumerate(self.cfg["nets"]):
            where = join(join(path, "nets"), i)
            if net["label"] in labels:
                raise SpecError(join(where, "label"), "duplicate label "
                                f"{net['label']!r}")
            labels.add(net["label"])
            net["path"] = find_file(net["spec"], suite["root"],
                                    join(where, "spec"))

    def render(self, study):
        from .gradcheck import FLOOR
        c = self.cfg
        text = [
            "The hand-written backward rules were compared with numerical "
            "gradients. Each net was cut to a reduced copy whose input has "
            f"{c['dims']} features (the hidden widths are kept), a batch of "
            f"{c['batch']} random examples with random labels was drawn, and "
            f"{c['steps']} SGD steps were taken first, so the check is not "
            "made at the initialisation (where BN's gamma is 1 and beta 0). "
            "The analytic gradient (float64) of every parameter entry was "
            "then compared with the centred difference "
            "(J(theta + h e_i) - J(theta - h e_i)) / 2h, h = 1e-6, of the "
            "train-mode cost J computed on an extended-precision (long "
            "double) copy of the net, BN using the batch statistics in every "
            "evaluation. The error of an entry is |a - n| / max(|a| + |n|, "
            f"{FLOOR:g}); the table shows the worst entry of each parameter "
            "over the L2 strengths checked (0 and the spec's).", ""]
        rows, worst = [], (0.0, None, None)
        for net in c["nets"]:
            check = study.checks[net["label"]]
            per = {}
            for r in check["rows"]:
                old = per.get(r["param"])
                if old is None or r["error"] > old["error"]:
                    per[r["param"]] = r
            for p, r in per.items():
                rows.append([net["label"], p, "x".join(map(str, r["shape"])),
                             f"{r['error']:.2e}", f"{r['max_abs']:.2e}",
                             code(check["file"])])
                if r["error"] > worst[0]:
                    worst = (r["error"], net["label"], p)
        l2s = sorted({r["l2"] for ch in study.checks.values()
                      for r in ch["rows"]})
        text.append(table(["net", "param", "shape", "worst rel. error",
                           "max abs grad", "file"], rows))
        text += ["", f"Worst relative error over all {len(rows)} parameters "
                 f"of {len(c['nets'])} nets and L2 in "
                 f"{{{', '.join(f'{v:g}' for v in l2s)}}}: "
                 f"**{worst[0]:.2e}** ({worst[1]}, {worst[2]})."]
        return [("md", "\n".join(text))]


@SECTIONS.register("curves")
class CurvesSection(Section):
    """Loss curves of a few runs side by side, with their figures."""

    title = "Training curves"
    fields = {"runs": List(String(), min_len=1)}

    def check(self, suite, path):
        for i, n in enumerate(self.cfg["runs"]):
            check_ref(n, suite["runs"], "run", join(join(path, "runs"), i))

    def render(self, study):
        names = self.cfg["runs"]
        series = [(n, metrics_of(study, study.runs[n]["run_dir"]))
                  for n in names if study.runs[n]["run_dir"]]
        blocks = [("md", run_table(study, names))]
        ranked = sorted((study.runs[n].get("test_accuracy") or 0, n)
                        for n in names)
        if len(ranked) >= 2:
            (lo, lo_n), (hi, hi_n) = ranked[0], ranked[-1]
            blocks.append(("md", f"\n{hi_n} reaches the higher test accuracy, "
                           f"{pct(hi)}, against {pct(lo)} for {lo_n} "
                           f"({100 * (hi - lo):+.2f} points)."))
        fig = curves_figure(series, self.cfg["title"])
        blocks.append(("fig", f"curves-{slug('-'.join(names))}.png", fig,
                       f"Training (solid) and validation (dashed) curves of "
                       f"{', '.join(names)}."))
        return blocks


@SECTIONS.register("search")
class SearchSection(Section):
    """The rounds of a coarse-to-fine sweep and the run it chose."""

    title = "Hyper-parameter search"
    fields = {"sweep": String(), "final": Nullable(String())}

    def check(self, suite, path):
        check_ref(self.cfg["sweep"], suite["sweeps"], "sweep",
                  join(path, "sweep"))
        if self.cfg["final"] is not None:
            check_ref(self.cfg["final"], suite["runs"], "run",
                      join(path, "final"))

    def render(self, study):
        name = self.cfg["sweep"]
        s = study.sweeps[name]
        folder = rel(s["sweep_dir"], study.out)
        metric, rows = s["metric"], s["rows"]
        cfg = study.suite["sweeps"][name]["sweep"]
        keys = list(s["search"])
        lines = [f"Sweep `{name}` (folder {code(folder)}; every run is listed "
                 f"in {code(folder + '/results.csv')}) picks by {metric} "
                 f"({'higher' if s['goal'] == 'max' else 'lower'} is better)."
                 f" Each round draws {cfg['samples']} values; each round "
                 f"after the first is {cfg['shrink']:g} times as wide as the "
                 f"one before, centred on the mean of the {cfg['keep']} best "
                 "values so far (in log10 for a log-uniform key) and kept "
                 "inside the first range.", ""]
        trs = []
        for r in s["rounds"]:
            mine = [x for x in rows if x["round"] == r["round"]]
            best = max((x for x in mine if x.get(metric) is not None),
                       key=lambda x: x[metric] * (1 if s["goal"] == "max"
                                                  else -1), default=None)
            span = "; ".join(f"{k} in [{fmt_value(lo)}, {fmt_value(hi)}]"
                             for k, (lo, hi) in r["ranges"].items())
            trs.append([r["round"], span, len(mine),
                        sum(x["status"] == "finished" for x in mine),
                        num(best and best[metric]),
                        ", ".join(fmt_value(best["values"][k]) for k in keys)
                        if best else "-"])
        lines.append(table(["round", "range searched", "runs", "finished",
                            f"best {metric}", "at"], trs))
        b = s["best"]
        shown = ", ".join(f"{k} = {fmt_value(v)}" for k, v in
                          b["values"].items())
        lines += ["", f"Best: **{shown}**, {metric} {num(b[metric])}, test "
                  f"accuracy {pct(b['test_accuracy'])} (run "
                  f"{code(folder + '/' + b['run_dir'])})."]
        all_rows = [[x["round"], ", ".join(fmt_value(x["values"][k])
                                           for k in keys), x["status"],
                     num(x.get(metric)), pct(x.get("test_accuracy")),
                     code(x["run_dir"] and f"{folder}/{x['run_dir']}")]
                    for x in
                    sorted(rows, key=lambda x: [x["values"][k] for k in keys
                                                if isinstance(x["values"][k],
                                                              (int, float))])]
        lines += ["", "All runs, by value:", "",
                  table(["round", ", ".join(keys), "status", metric,
                         "test acc", "run folder"], all_rows)]
        blocks = [("md", "\n".join(lines))]
        fig = metric_figure({"name": name, "search": s["search"],
                             "metric": metric}, s["rounds"], rows)
        blocks.append(("fig", f"sweep-{slug(name)}.png", fig,
                       f"{metric} against the searched value, one colour "
                       "per round; shaded: the range of each round."))
        final = self.cfg["final"]
        if final:
            r = study.runs[final]
            spec = study.specs[final]
            cycles = spec["train"]["schedule"].get("cycles")
            blocks.append(("md", f"Run `{final}` trains the same net with "
                           f"{shown} for {r.get('steps')} steps"
                           + (f" ({cycles} cycles)" if cycles and not
                              spec["train"]["steps"] else "")
                           + f": test accuracy **{pct(r.get('test_accuracy'))}**"
                           f" (run {code(r['run_dir'])}).\n\n"
                           + run_table(study, [final])))
            if r["run_dir"]:
                fig = curves_figure([(final, metrics_of(study, r["run_dir"]))],
                                    f"{final}: {shown}")
                blocks.append(("fig", f"curves-{slug(final)}.png", fig,
                               f"Training and validation curves of {final}."))
        return blocks


@SECTIONS.register("sensitivity")
class SensitivitySection(Section):
    """A grid sweep's curves and test accuracies, with a written finding."""

    title = "Sensitivity"
    fields = {"sweep": String(), "vary": String(), "compare": String(),
              "fail_below": Number(default=0.15, low=0, high=1)}

    def check(self, suite, path):
        check_ref(self.cfg["sweep"], suite["sweeps"], "sweep",
                  join(path, "sweep"))
        search = suite["sweeps"][self.cfg["sweep"]]["sweep"]["search"]
        for key in ("vary", "compare"):
            check_ref(self.cfg[key], search, "searched key", join(path, key))

    def render(self, study):
        c = self.cfg
        s = study.sweeps[c["sweep"]]
        folder = rel(s["sweep_dir"], study.out)
        vary, comp = c["vary"], c["compare"]
        rows = s["rows"]
        vs = unique([r["values"][vary] for r in rows])
        cs = unique([r["values"][comp] for r in rows])
        cell = {(json.dumps(r["values"][vary]), json.dumps(r["values"][comp])):
                r for r in rows}

        def get(v, k):
            return cell.get((json.dumps(v), json.dumps(k)))

        trs = []
        for v in vs:
            for k in cs:
                r = get(v, k)
                last = (metrics_of(study, f"{folder}/{r['run_dir']}")[-1]
                        if r and r["run_dir"] else {})
                trs.append([fmt_value(v), fmt_value(k), r["status"] if r
                            else "missing", pct(r and r.get("test_accuracy")),
                            pct(r and r.get("val_accuracy")),
                            num(last.get("train_loss")),
                            code(r and r["run_dir"] and
                                 f"{folder}/{r['run_dir']}")])
        md = [f"Sweep `{c['sweep']}` (folder {code(folder)}) crosses "
              f"{vary} in {{{', '.join(fmt_value(v) for v in vs)}}} with "
              f"{comp} in {{{', '.join(fmt_value(k) for k in cs)}}}.", "",
              table([vary, comp, "status", "test acc", "val acc",
                     "final train loss", "run folder"], trs), "",
              "**Finding.** " + self.finding(vs, cs, get)]
        from .plots import plt
        fig, axes = plt.subplots(1, len(vs), figsize=(4.3 * len(vs), 3.6),
                                 squeeze=False, sharey=True)
        for ax, v in zip(axes[0], vs):
            for i, k in enumerate(cs):
                r = get(v, k)
                if not (r and r["run_dir"]):
                    continue
                m = metrics_of(study, f"{folder}/{r['run_dir']}")
                steps = [x["step"] for x in m]
                for split, style in (("train", "-"), ("val", "--")):
                    ax.plot(steps, [x.get(f"{split}_loss") or math.nan
                                    for x in m], style, color=f"C{i}",
                            label=f"{fmt_value(k)} ({split})")
            ax.set_title(f"{vary} = {fmt_value(v)}", fontsize=9)
            ax.set_xlabel("update step")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("cross-entropy loss")
        axes[0][0].legend(fontsize=7, title=comp, title_fontsize=7)
        fig.tight_layout()
        return [("md", "\n".join(md)),
                ("fig", f"sensitivity-{slug(c['sweep'])}.png", fig,
                 f"Training (solid) and validation (dashed) loss for each "
                 f"{vary}, one colour per {comp}.")]

    def finding(self, vs, cs, get):
        """Sentences drawn from the test accuracies of the grid."""
        c = self.cfg
        acc = {}
        for v in vs:
            for k in cs:
                r = get(v, k)
                ok = r and r["status"] == "finished"
                acc[json.dumps(v), json.dumps(k)] = (
                    r.get("test_accuracy") if ok else None)
        out = []
        for k in cs:
            got = [(acc[json.dumps(v), json.dumps(k)], v) for v in vs]
            ok = [a for a, _ in got if a is not None]
            failed = [fmt_value(v) for a, v in got
                      if a is None or a < c["fail_below"]]
            part = f"With {c['compare']} = {fmt_value(k)}, the test accuracy "
            part += (f"spans {pct(min(ok))} to {pct(max(ok))} over the "
                     f"{c['vary']} values" if ok else "is missing for all")
            part += (f"; {len(failed)} of {len(vs)} settings failed to learn "
                     f"(below {pct(c['fail_below'])} or diverged: "
                     f"{', '.join(failed)})." if failed else
                     "; every setting learned.")
            out.append(part)
        if len(cs) == 2:
            gaps = []
            for v in vs:
                a = acc[json.dumps(v), json.dumps(cs[1])]
                b = acc[json.dumps(v), json.dumps(cs[0])]
                if a is not None and b is not None:
                    gaps.append((a - b, v))
            if gaps:
                big = max(gaps, key=lambda g: abs(g[0]))
                out.append(
                    f"The gap {fmt_value(cs[1])} minus {fmt_value(cs[0])} is "
                    + ", ".join(f"{100 * g:+.1f} points at {fmt_value(v)}"
                                for g, v in gaps)
                    + f"; largest at {c['vary']} = {fmt_value(big[1])}.")
        return " ".join(out)


@SECTIONS.register("table")
class TableSection(Section):
    """Extra runs (extensions) tabulated with their figures."""

    title = "Extensions"
    fields = {"runs": List(String(), default=[]),
              "curves": Number(default=0, integer=True, low=0, high=1,
                               doc="1: also draw their curves")}

    def check(self, suite, path):
        for i, n in enumerate(self.cfg["runs"]):
            check_ref(n, suite["runs"], "run", join(join(path, "runs"), i))

    def render(self, study):
        names = self.cfg["runs"]
        if not names:
            return [("md", "No runs listed.")]
        blocks = [("md", run_table(study, names))]
        if self.cfg["curves"]:
            series = [(n, metrics_of(study, study.runs[n]["run_dir"]))
                      for n in names if study.runs[n]["run_dir"]]
            blocks.append(("fig", f"table-{slug('-'.join(names))}.png",
                           curves_figure(series, self.cfg["title"]),
                           f"Curves of {', '.join(names)}."))
        return blocks


def unique(values):
    seen, out = set(), []
    for v in values:
        t = json.dumps(v, sort_keys=True)
        if t not in seen:
            seen.add(t)
            out.append(v)
    return out


# ---- writing -------------------------------------------------------------

def render_report(study, seconds):
    """Blocks of the whole report, title and set-up first."""
    s = study.suite
    over = {**s["set"], **s["overrides"]}
    head = [f"# {s['title']}", ""]
    if s["description"]:
        head += [s["description"], ""]
    head += [f"Suite `{s['name']}`, written by graphnet on "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Overrides applied to every "
             "run: " + (", ".join(f"`{k}={json.dumps(v)}`" for k, v in
                                  over.items()) or "none") + ". "
             f"{study.trained} runs trained and {study.reused} reused in "
             f"{seconds:.0f} s on {study.runner.where}. Run folders are "
             "named relative to this report's folder.", ""]
    rows = list(study.runs.values()) + [r for sw in study.sweeps.values()
                                        for r in sw["rows"]]
    total = sum(r.get("wall_seconds") or 0 for r in rows)
    head[-2] += (f" The {len(rows)} runs' own training times (wall_seconds "
                 f"in their summary.json) add up to {total:.0f} s.")
    blocks = [("md", "\n".join(head))]
    for i, section in enumerate(s["sections"], start=1):
        blocks.append(("md", f"## {i}. {section.cfg['title']}"))
        if section.cfg["text"]:
            blocks.append(("md", section.cfg["text"]))
        blocks += section.render(study)
    return blocks


def write_report(blocks, out):
    """Write ``report.md``, ``figures/*.png`` and ``report.pdf``."""
    from .pdf import write_pdf
    from .plots import save_figure
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    md = []
    for block in blocks:
        if block[0] == "md":
            md.append(block[1])
        else:
            _, name, fig, caption = block
            md.append(f"![{caption}](figures/{name})\n\n*{caption}*")
    runs.atomic_write(out / "report.md", "\n\n".join(md) + "\n")
    pdf_tmp = out / ".report.pdf.part"
    write_pdf(blocks, pdf_tmp, blocks[0][1].splitlines()[0].lstrip("# "))
    pdf_tmp.replace(out / "report.pdf")
    for block in blocks:
        if block[0] == "fig":
            save_figure(block[2], out / "figures" / block[1])


def make_report(suite_path, out, overrides=None, data_dir=None,
                workers=None, progress=None, runner=None):
    """Run a suite (reusing what is done in ``out``) and write its report.

    Parameters
    ----------
    suite_path : str or Path
    out : str or Path
        The report folder.
    overrides : dict or list of str, optional
        ``--set`` values for every run.
    data_dir : str or Path, optional
    workers : int, optional
        Parallel runs (default: the cores).
    progress : callable, optional
        ``progress(kind, name, row)`` for every run and check.
    runner : graphnet.sweep.Runner, optional
        An open runner to use (``workers`` is then unused).

    Returns
    -------
    dict
        ``report`` (report.md), ``pdf``, ``seconds``, ``trained``,
        ``reused``, ``runs`` and ``sweeps``.
    """
    start = time.perf_counter()
    suite = load_suite(suite_path, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if runner is None:
        with Runner(workers) as runner:
            study = Study(suite, out, runner, data_dir, progress).run()
    else:
        study = Study(suite, out, runner, data_dir, progress).run()
    seconds = time.perf_counter() - start
    write_report(render_report(study, seconds), out)
    result = {"report": str(out / "report.md"), "pdf": str(out / "report.pdf"),
              "seconds": round(seconds, 1), "trained": study.trained,
              "reused": study.reused, "runs": study.runs,
              "sweeps": {k: {"best": v["best"], "rounds": v["rounds"],
                             "sweep_dir": v["sweep_dir"]}
                         for k, v in study.sweeps.items()}}
    runs.write_json(out / "report.json", result)
    log.info("report %s written in %.0f s", out / "report.md", seconds)
    return result


def cli_report(args):
    """``graphnet report``: run a suite and write its report."""
    if args.workers is not None and args.workers < 1:
        raise GraphnetError(f"--workers: expected an integer >= 1, found "
                            f"{args.workers}")

    def progress(kind, name, row):
        if kind == "check":
            print(f"gradcheck {name}: {'reused' if row['reused'] else 'done'}",
                  flush=True)
            return
        where = f"sweep {name} {row['key']}" if kind == "sweep" else \
            f"run {name}"
        took = "reused" if row["reused"] else (
            f"{row['wall_seconds']:.0f} s" if row.get("wall_seconds")
            is not None else "-")
        print(f"{where}: {row['status']}, val acc {pct(row.get('val_accuracy'))}"
              f", test acc {pct(row.get('test_accuracy'))} ({took})",
              flush=True)

    result = make_report(args.suite, args.output, overrides=args.overrides,
                         data_dir=args.data_dir, workers=args.workers,
                         progress=progress)
    print(f"{result['trained']} runs trained, {result['reused']} reused in "
          f"{result['seconds']:.0f} s")
    print(f"report: {result['report']} and {result['pdf']}")
    return 0
