"""Mini-batch training of a spec, writing a run folder.

One update step t (0-based) draws batch t mod B of the current epoch's
permutation (B = floor(n_train / batch_size) batches per epoch, the
remainder of a shuffled epoch left out), computes the cost in train mode,
runs the reverse pass, folds the batch's BN statistics into the
population estimate and lets the optimizer update the params with the
schedule's eta_t. Every ``eval_every`` steps the network is evaluated in
test mode on the training and validation sets and a checkpoint is kept,
so an interrupted run loses at most one interval and can be resumed.

With ``eval_thread`` (the command line's default), an evaluation runs on
a second thread, on copies of the parameters, BN statistics and the rest
of the checkpoint of its step, while training goes on; its row and its
checkpoint are written when it ends, before the next evaluation. The
figures are the same as inline: only where the time is spent changes.
"""

import json
import logging
import math
import os
import platform
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import __version__, runs
from .bnstats import make_bn_stats
from .data import augment, load_dataset
from .errors import DataError, GraphnetError, RunError
from .executor import build
from .optim import make_optimizer
from .schedules import make_schedule
from .spec import Spec, load_spec, validate

log = logging.getLogger(__name__)


def plan(spec, n_train):
    """Steps per epoch, total steps and the evaluation interval of a spec."""
    t = spec["train"]
    per_epoch = max(1, n_train // t["batch_size"])
    sched = t["schedule"]
    if t["steps"]:
        total = t["steps"]
    elif t["epochs"]:
        total = t["epochs"] * per_epoch
    else:
        total = 2 * sched["step_size"] * sched["cycles"]
    if t["eval_every"]:
        every = t["eval_every"]
    elif sched["type"] == "cyclic":
        every = max(1, (2 * sched["step_size"]) // 10)   # ten per cycle
    else:
        every = per_epoch
    return per_epoch, total, min(every, total)


def net_state(arrays):
    """The network's params and buffers out of checkpoint arrays.

    A checkpoint keys them ``param/<name>`` and ``buffer/<name>``
    (`Trainer.checkpoint_arrays`); ``Network.load_state`` takes the names.
    """
    return {k.split("/", 1)[1]: v for k, v in arrays.items()
            if k.startswith(("param/", "buffer/"))}


_eval_pool = None


def _eval_thread():
    """The process's one evaluation thread, started on first use."""
    global _eval_pool
    if _eval_pool is None:
        _eval_pool = ThreadPoolExecutor(1, thread_name_prefix="graphnet-eval")
    return _eval_pool


class Trainer:
    """The state of one run: network, optimizer, position, metrics.

    Parameters
    ----------
    spec : Spec
        Validated spec.
    data : graphnet.data.Dataset
    run_dir : Path
        The run folder (already created).
    progress : callable, optional
        Called as ``progress(step, total, cost, eta)`` after every step.
    eval_thread : bool
        Run the evaluations between the first and the last on a second
        thread while training goes on (see the module's docstring).
        Worth it with one BLAS thread on a machine with two cores or
        more; with a multi-threaded BLAS the two compete for cores.
    """

    def __init__(self, spec, data, run_dir, progress=None, eval_thread=False):
        self.spec, self.data, self.run_dir = spec, data, Path(run_dir)
        self.progress = progress
        self.eval_thread = eval_thread
        self.eval_net = None   # the evaluation thread's own network
        self.pending = None    # (future, checkpoint arrays) in flight
        t = spec["train"]
        self.cfg = t
        self.net = build(spec)
        self.optimizer = make_optimizer(t["optimizer"])
        self.per_epoch, self.total, self.eval_every = plan(
            spec, len(data.X_train))
        self.schedule = make_schedule(t["schedule"], self.total)
        self.bn = make_bn_stats(t["bn_stats"])
        self.rng = np.random.default_rng(t["seed"])
        self.step = 0
        self.stop = None    # the name of a signal asking the run to stop
        self.saved_step = None   # step of the last checkpoint written
        self.perm = None
        self.rows = []
        self.elapsed = 0.0
        b = min(t["batch_size"], len(data.X_train))
        self.batch = b
        self.xbuf = np.empty((b, data.X_train.shape[1]), data.X_train.dtype)

    # ---- the loop ------------------------------------------------------

    def next_batch(self):
        """Gather the rows of step ``self.step`` into a reused buffer."""
        k = self.step % self.per_epoch
        if k == 0 or self.perm is None:
            n = len(self.data.X_train)
            self.perm = (self.rng.permutation(n) if self.cfg["shuffle"]
                         else np.arange(n))
        idx = self.perm[k * self.batch:(k + 1) * self.batch]
        # mode="raise" (the default) gathers into a temporary and copies
        # it into out; the indices come from a permutation, so clip.
        X = np.take(self.data.X_train, idx, axis=0, out=self.xbuf,
                    mode="clip")
        aug = self.cfg["augment"]
        if aug:
            X = augment(X, self.rng, aug["flip"], aug["shift"], out=X)
        return X, self.data.y_train[idx]

    def train_step(self):
        """One update; returns the batch cost and the rate used."""
        X, y = self.next_batch()
        eta = self.schedule(self.step)
        cost = self.net.loss(X, y, train=True, rng=self.rng)
        if not math.isfinite(cost):
            self.collect()   # its checkpoint, if finite, is the one kept
            raise RunError(
                f"the cost became {cost} at step {self.step + 1} (eta "
                f"{eta:.3g}); the learning rate is likely too high or the "
                f"initialization too large. {self.kept()}")
        grads = self.net.backward()
        self.bn.update(self.net, first=self.step == 0)
        self.optimizer.step(self.net.params, grads, eta)
        self.step += 1
        after = getattr(self.bn, "after_step", None)
        if after:   # e.g. PreciseBN, before this step's evaluation
            after(self)
        return cost, eta

    def run(self):
        """Train to the end, evaluating and checkpointing; return summary.

        A signal only sets ``self.stop`` (see ``_StopAtStep``); the loop
        stops before the next update, so the checkpoint written on the
        way out holds whole steps. A KeyboardInterrupt raised inside an
        update (a second signal) keeps the previous checkpoint instead.
        """
        start = time.perf_counter() - self.elapsed
        ck_every = self.cfg["checkpoint_every"]   # besides every evaluation
        in_update = False
        try:
            if self.step == 0 and not self.rows:
                self.check_finite(self.evaluate())
            while self.step < self.total:
                if self.stop:
                    raise KeyboardInterrupt
                in_update = True
                cost, eta = self.train_step()
                in_update = False
                if self.progress:
                    self.progress(self.step, self.total, cost, eta)
                if self.step % self.eval_every == 0 or self.step == self.total:
                    self.elapsed = time.perf_counter() - start
                    if self.eval_thread and self.step < self.total:
                        self.evaluate_later(eta)
                    else:
                        self.collect()
                        self.check_finite(self.evaluate(eta))
                        self.checkpoint()
                elif ck_every and self.step % ck_every == 0:
                    self.elapsed = time.perf_counter() - start
                    self.collect()   # an older checkpoint must not win
                    self.checkpoint()
        except KeyboardInterrupt:
            self.elapsed = time.perf_counter() - start
            try:
                self.collect()
            except RunError:
                self._diverged(start)
                raise
            except KeyboardInterrupt:   # a second signal while waiting
                log.warning("interrupted again while an evaluation ran: "
                            "its row is dropped")
            if in_update:
                log.warning("interrupted inside update %d: the last "
                            "checkpoint is kept", self.step + 1)
            else:
                self.checkpoint()
            self.write_summary("interrupted")
            # the run folder travels with the interrupt when resumable
            resumable = (self.run_dir / "checkpoint.npz").exists()
            where = (str(self.run_dir),) if resumable else ()
            raise KeyboardInterrupt(*where) from None
        except RunError:
            self._diverged(start)
            raise
        finish = getattr(self.bn, "finish", None)
        if finish:
            finish(self)
        self.elapsed = time.perf_counter() - start
        return self.finish()

    def _diverged(self, start):
        """Keep the metrics and mark the run diverged (a RunError follows)."""
        self.elapsed = time.perf_counter() - start
        runs.write_metrics(self.run_dir / "metrics.csv", self.rows)
        self.write_summary("diverged")

    def check_finite(self, row):
        """Stop with RunError when an evaluation's cost is not finite.

        Checked before the checkpoint is written, so the last checkpoint
        always holds parameters that evaluated to a finite cost.
        """
        for key in ("train_cost", "val_cost"):
            if key in row and not math.isfinite(row[key]):
                raise RunError(
                    f"the {key.replace('_', ' ')} evaluated after step "
                    f"{row['step']} is {row[key]} (eta {row['eta']:.3g}); the "
                    "learning rate is likely too high or the "
                    f"initialization too large. {self.kept()}")

    def kept(self):
        """What a failed run leaves behind, for its message."""
        if self.saved_step is None:
            return (f"metrics.csv is kept in {self.run_dir} (no checkpoint "
                    "was written yet)")
        return (f"metrics.csv and the checkpoint of step {self.saved_step} "
                f"are kept in {self.run_dir}")

    def evaluate(self, eta=None):
        """Append a metrics row: test-mode figures on train and val."""
        row = self.metrics_row(self.net, self.step, eta, self.elapsed)
        self.rows.append(row)
        return row

    def metrics_row(self, net, step, eta, elapsed):
        """Test-mode figures of ``net`` on train and val, as of ``step``."""
        d, n = self.data, self.cfg["eval_train"]
        row = {"step": step, "epoch": step / self.per_epoch,
               "eta": self.schedule(step) if eta is None else eta}
        train = net.evaluate(d.X_train[:n], d.y_train[:n])
        row.update({f"train_{k}": v for k, v in train.items()})
        if len(d.X_val):
            val = net.evaluate(d.X_val, d.y_val)
            row.update({f"val_{k}": v for k, v in val.items()})
        row["seconds"] = elapsed
        log.info("step %d/%d: train cost %.4f acc %.4f, val acc %s",
                 step, self.total, row["train_cost"], row["train_accuracy"],
                 f"{row['val_accuracy']:.4f}" if "val_accuracy" in row
                 else "-")
        return row

    def evaluate_later(self, eta):
        """Evaluate this step on the evaluation thread; return at once.

        The thread gets copies of everything this step's checkpoint
        holds; `collect` writes the row and that checkpoint.
        """
        self.collect()
        arrays = self.checkpoint_arrays(copy=True)
        if self.eval_net is None:
            self.eval_net = build(self.spec)
        self.pending = (_eval_thread().submit(
            self._evaluate_copy, arrays, self.step, eta, self.elapsed),
            arrays)

    def _evaluate_copy(self, arrays, step, eta, elapsed):
        """On the evaluation thread: the row of a copied state."""
        self.eval_net.load_state(net_state(arrays))
        # numpy's error state is per thread: silence it here as train() does
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self.metrics_row(self.eval_net, step, eta, elapsed)

    def collect(self):
        """Wait for the evaluation in flight, if any; keep its row and
        write its checkpoint (after the finiteness check, as inline)."""
        if self.pending is None:
            return
        (future, arrays), self.pending = self.pending, None
        row = future.result()
        self.rows.append(row)
        self.check_finite(row)
        self.checkpoint(arrays)

    # ---- files ---------------------------------------------------------

    def checkpoint(self, arrays=None):
        """Save everything needed to continue at ``self.step``.

        ``arrays``: a `checkpoint_arrays` copy taken at an earlier step
        (an evaluation's), saved instead of the current state.
        """
        if arrays is None:
            arrays = self.checkpoint_arrays()
        runs.save_npz(self.run_dir / "checkpoint.npz", arrays)
        runs.write_metrics(self.run_dir / "metrics.csv", self.rows)
        self.saved_step = int(arrays["step"])

    def checkpoint_arrays(self, copy=False):
        """The flat dict of arrays a checkpoint holds (copied if asked)."""
        arrays = {f"param/{k}": v for k, v in self.net.params.items()}
        arrays.update({f"buffer/{k}": v for k, v in self.net.buffers.items()})
        arrays.update({f"opt/{k}": v
                       for k, v in self.optimizer.state().items()})
        arrays["step"] = np.array(self.step)
        arrays["elapsed"] = np.array(self.elapsed)
        arrays["perm"] = (self.perm if self.perm is not None
                          else np.zeros(0, np.int64))
        arrays["rng"] = np.array(json.dumps(self.rng.bit_generator.state))
        if copy:
            arrays = {k: np.array(v) for k, v in arrays.items()}
        return arrays

    def restore(self):
        """Load ``checkpoint.npz`` and ``metrics.csv`` of the run folder.

        Raises
        ------
        DataError
            The checkpoint does not belong to this run's spec or is
            damaged.
        """
        path = self.run_dir / "checkpoint.npz"
        ck = runs.load_npz(path)
        try:
            self.net.load_state(net_state(ck))
            self.optimizer.load_state({k[4:]: v for k, v in ck.items()
                                       if k.startswith("opt/")})
            self.step = int(ck["step"])
            self.elapsed = float(ck["elapsed"])
            self.perm = ck["perm"] if ck["perm"].size else None
            self.rng.bit_generator.state = json.loads(str(ck["rng"]))
            self.saved_step = self.step
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a checkpoint of this run's "
                            f"spec.json ({exc})") from None
        path = self.run_dir / "metrics.csv"
        try:
            rows = runs.read_metrics(path)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); the run cannot "
                            "be resumed without its metrics") from None
        self.rows = [r for r in rows if r["step"] <= self.step]

    def finish(self):
        """Test figures, model.npz, curves.png and summary.json."""
        d = self.data
        test = self.net.evaluate(d.X_test, d.y_test)
        runs.save_npz(self.run_dir / "model.npz", self.net.state())
        runs.write_metrics(self.run_dir / "metrics.csv", self.rows)
        try:
            from .plots import save_curves
            save_curves(self.rows, self.run_dir / "curves.png",
                        title=self.spec.name)
        except Exception as exc:  # a plot must never lose a finished run
            log.warning("could not draw curves.png: %s", exc)
        summary = self.write_summary("finished", test)
        ck = self.run_dir / "checkpoint.npz"
        if ck.exists():
            ck.unlink()
        return summary

    def write_summary(self, status, test=None):
        last = self.rows[-1] if self.rows else {}
        val_rows = [r for r in self.rows if r.get("val_accuracy") is not None]
        best = max(val_rows, key=lambda r: r["val_accuracy"], default={})
        summary = {
            "name": self.spec.name,
            "status": status,
            "run_dir": str(self.run_dir),
            "test_accuracy": test and test["accuracy"],
            "test_cost": test and test["cost"],
            "test_loss": test and test["loss"],
            "val_accuracy": last.get("val_accuracy"),
            "val_cost": last.get("val_cost"),
            "train_accuracy": last.get("train_accuracy"),
            "train_cost": last.get("train_cost"),
            "best_val_accuracy": best.get("val_accuracy"),
            "best_val_step": best.get("step"),
            "steps": self.step,
            "epochs": self.step / self.per_epoch,
            "total_steps": self.total,
            "wall_seconds": round(self.elapsed, 3),
            "params": self.net.n_params(),
            "seed": self.cfg["seed"],
            "dtype": self.cfg["dtype"],
            "versions": versions(),
        }
        runs.write_json(self.run_dir / "summary.json", summary)
        return summary


def versions():
    import networkx
    return {"graphnet": __version__, "numpy": np.__version__,
            "networkx": networkx.__version__,
            "python": platform.python_version()}


class _StopAtStep:
    """Within the block, SIGINT and SIGTERM stop a trainer between steps.

    The first signal only sets ``trainer.stop``; the training loop then
    raises KeyboardInterrupt before its next update, after a checkpoint
    of whole steps. A second signal raises KeyboardInterrupt at once.
    Outside the main thread, signals are left alone.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, self._handle)
            except ValueError:      # not the main thread
                break
        return self

    def _handle(self, signum, frame):
        if self.trainer.stop:
            raise KeyboardInterrupt
        self.trainer.stop = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def train(spec, out="runs", data_dir=None, seed=None, overrides=None,
          progress=None, data=None, download=True, eval_thread=False):
    """Train a spec and write its run folder.

    Parameters
    ----------
    spec : Spec, dict, str or Path
    out : str or Path
        Parent folder of the new run folder.
    data_dir : str or Path, optional
        Where CIFAR-10 is; see ``graphnet.data.find_data_dir``.
    seed : int, optional
        Overrides ``train.seed``.
    overrides : dict or list of str, optional
        Dotted-path overrides applied before validation.
    progress : callable, optional
        ``progress(step, total, cost, eta)`` after every step.
    data : graphnet.data.Dataset, optional
        Already loaded data (must match the spec's ``data`` section).
    eval_thread : bool
        Evaluate on a second thread while training goes on (`Trainer`).

    Returns
    -------
    dict
        The run's ``summary.json``.

    Raises
    ------
    SpecError, DataError
        Bad spec or data (nothing is written before both are checked).
    RunError
        The cost diverged; the run folder keeps what it had.
    KeyboardInterrupt
        SIGINT or SIGTERM; a checkpoint was written first.
    """
    if not isinstance(spec, Spec) or overrides:
        spec = load_spec(spec, overrides=overrides)
    if seed is not None:
        raw = json.loads(spec.to_json())
        raw["train"]["seed"] = seed
        spec = validate(raw)
    if data is None:
        data = load_dataset(spec["data"], data_dir=data_dir,
                            dtype=spec["train"]["dtype"], download=download)
    run_dir = runs.new_run_dir(out, spec.name)
    runs.atomic_write(run_dir / "spec.json", spec.to_json())
    draw_diagram(spec, run_dir)
    log.info("run folder %s", run_dir)
    trainer = Trainer(spec, data, run_dir, progress, eval_thread)
    # non-finite values are caught by the cost checks, not by warnings
    with _StopAtStep(trainer), np.errstate(over="ignore", invalid="ignore",
                                           divide="ignore"):
        return trainer.run()


def resume(run_dir, data_dir=None, progress=None, data=None,
           eval_thread=False):
    """Continue an interrupted run from its checkpoint; return summary."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.npz").exists():
        done = (run_dir / "summary.json").exists()
        raise GraphnetError(f"{run_dir}: no checkpoint.npz to resume from"
                            + (" (the run has finished)" if done else ""))
    spec = load_spec(run_dir / "spec.json")
    if data is None:
        data = load_dataset(spec["data"], data_dir=data_dir,
                            dtype=spec["train"]["dtype"])
    trainer = Trainer(spec, data, run_dir, progress, eval_thread)
    trainer.restore()
    with _StopAtStep(trainer), np.errstate(over="ignore", invalid="ignore",
                                           divide="ignore"):
        return trainer.run()


def draw_diagram(spec, run_dir):
    """Put ``network.svg`` (or ``.gv``) in the run folder; never fails."""
    try:
        from .render import render_spec
        render_spec(spec, run_dir / "network.svg")
    except Exception as exc:  # a diagram must never stop a run
        log.warning("could not draw the network diagram: %s", exc)


def load_run(run_dir):
    """Spec and network (with its saved params) of a finished run."""
    run_dir = Path(run_dir)
    if not (run_dir / "spec.json").exists():
        raise GraphnetError(f"{run_dir}: not a run folder (no spec.json)")
    spec = load_spec(run_dir / "spec.json")
    net = build(spec)
    arrays = runs.load_npz(run_dir / "model.npz")
    try:
        net.load_state(arrays)
    except (KeyError, ValueError) as exc:
        raise GraphnetError(f"{run_dir / 'model.npz'}: {exc}") from None
    return spec, net


# ---- command line ------------------------------------------------------

def progress_bar(total_hint=None):
    """A tqdm-backed progress callback (silent when not a terminal)."""
    from tqdm import tqdm
    bar = tqdm(total=total_hint, unit="step", disable=None, dynamic_ncols=True)

    def update(step, total, cost, eta):
        if bar.total != total:
            bar.total = total
        bar.n = step
        if step % 25 == 0 or step == total:
            bar.set_postfix(cost=f"{cost:.3f}", eta=f"{eta:.2e}",
                            refresh=False)
            bar.refresh()
    update.close = bar.close
    return update


def print_summary(s):
    print(f"run folder: {s['run_dir']}")
    fig = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"test accuracy {fig(s['test_accuracy'])}  test cost "
          f"{fig(s['test_cost'])}  val accuracy {fig(s['val_accuracy'])}  "
          f"train accuracy {fig(s['train_accuracy'])}")
    print(f"{s['steps']} steps, {s['epochs']:.1f} epochs, "
          f"{s['wall_seconds']:.1f} s")


def cli_run(args):
    if bool(args.spec) == bool(args.resume):
        raise GraphnetError("give either SPEC or --resume RUN_DIR")
    if args.resume and (args.overrides or args.seed is not None):
        raise GraphnetError("--resume continues a run as its spec.json "
                            "says; --set and --seed cannot change it")
    if args.threads is not None and args.threads < 1:
        raise GraphnetError(f"--threads: expected an integer >= 1, "
                            f"found {args.threads}")
    # Default: one BLAS thread for training and, with a second core, the
    # evaluations on a thread of their own. The study's narrow nets gain
    # little from a second BLAS thread inside one product, and the
    # evaluations (a quarter of a run) then cost almost no wall time.
    eval_thread = args.threads is None and (os.cpu_count() or 1) >= 2
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads or 1):
        return _run(args, eval_thread)


def _run(args, eval_thread=False):
    """The body of ``graphnet run``: train or resume, with a progress bar."""
    bar = progress_bar()
    try:
        if args.resume:
            summary = resume(args.resume, data_dir=args.data_dir,
                             progress=bar, eval_thread=eval_thread)
        else:
            summary = train(args.spec, out=args.out, data_dir=args.data_dir,
                            seed=args.seed, overrides=args.overrides,
                            progress=bar, eval_thread=eval_thread)
    except KeyboardInterrupt as exc:
        bar.close()
        if exc.args:
            print(f"interrupted: checkpoint written in {exc.args[0]}; "
                  f"continue with graphnet run --resume {exc.args[0]}")
        else:
            print("interrupted before a checkpoint was written; nothing "
                  "to resume")
        raise
    bar.close()
    print_summary(summary)
    return 0


def cli_eval(args):
    spec, net = load_run(args.run_dir)
    data = load_dataset(spec["data"], data_dir=args.data_dir,
                        dtype=spec["train"]["dtype"])
    if args.bn_stats != "ema":
        from .bnstats import reestimate
        augment = None
        if args.flip or args.shift:
            augment = {"flip": args.flip, "shift": args.shift}
        reestimate(net, spec, data, args.bn_stats, augment=augment,
                   passes=args.passes)
    test = net.evaluate(data.X_test, data.y_test)
    print(f"{args.run_dir}: test accuracy {test['accuracy']:.4f}, "
          f"test cost {test['cost']:.4f}, loss {test['loss']:.4f} "
          f"(BN statistics: {args.bn_stats})")
    return 0
