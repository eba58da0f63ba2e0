"""Wall time of a whole study: ``graphnet run`` against the same in PyTorch.

The graphnet side is the command line, ``graphnet run SPEC`` (default
specs/a3/3layer-bn.json: 2 cycles of 2 * 2250 steps of batch 100, a
test-mode evaluation of the training and validation sets every 450
steps and at the start, a checkpoint at each, the test set at the end,
the run folder with its plots and diagram). The PyTorch side trains the
same net on the same data (loaded by graphnet.data) with the same
schedule, evaluates as often on as much data in chunks of 10,000 under
``torch.no_grad()``, saves a checkpoint at each evaluation, and writes
metrics.csv; it draws no plots.

Each side runs in its own process, interleaved (graphnet, torch,
graphnet, ...); the table gives the process's wall time (start to exit,
data loading and imports included), the training loop's own time, and
the peak resident memory of the process (``ru_maxrss`` from ``wait4``)
next to the size of the training data in the run's dtype.

    python bench/study.py                       # the full study, twice
    python bench/study.py --cycles 1 --subset 10000 --repeats 1   # quick
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 10000


def measured(cmd, env):
    """Run ``cmd``; return (wall seconds, its peak RSS in MB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode})")
    return wall, usage.ru_maxrss / 1024, out


def overrides(args):
    sets = []
    if args.cycles:
        sets.append(f"train.schedule.cycles={args.cycles}")
    if args.subset:
        sets.append(f"data.train={args.subset}")
    return sets


def graphnet_cmd(args, out_dir):
    cmd = [sys.executable, "-m", "graphnet", "run", args.spec,
           "--out", out_dir]
    for s in overrides(args):
        cmd += ["--set", s]
    return cmd


def graphnet_loop_seconds(out_dir):
    """wall_seconds of the one run folder under ``out_dir``."""
    (summary,) = Path(out_dir).glob("*/summary.json")
    return json.loads(summary.read_text())["wall_seconds"]


# ---- the PyTorch study -------------------------------------------------

def torch_study(args, out_dir):
    """Train the spec's MLP in PyTorch as graphnet would; print JSON."""
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    import graphnet as gn
    from graphnet.data import load_dataset
    from graphnet.trainer import plan

    spec = gn.load_spec(args.spec, overrides=overrides(args))
    t, tmpl = spec["train"], spec["graph"]
    data = load_dataset(spec["data"], dtype=t["dtype"])
    dtype = getattr(torch, t["dtype"])
    per_epoch, total, every = plan(spec, len(data.X_train))
    sched = t["schedule"]
    alpha = t["bn_stats"]["alpha"]
    l2 = spec["loss"]["l2"]

    net = gn.build(spec)   # the same initial weights
    steps = net.steps
    mods, weights = [], []
    for step in steps:
        kind = type(step.op).__name__
        a = step.arrays
        if kind == "Linear":
            fc = nn.Linear(a["W"].shape[1], a["W"].shape[0], dtype=dtype)
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(a["W"]))
                fc.bias.copy_(torch.from_numpy(a["b"]))
            mods.append(fc)
            weights.append(fc.weight)
        elif kind == "BatchNorm":
            mods.append(nn.BatchNorm1d(len(a["gamma"]), eps=step.op.eps,
                                       momentum=1 - alpha, dtype=dtype))
        elif kind == "ReLU":
            mods.append(nn.ReLU())
        else:
            raise SystemExit(f"torch study: op {kind} not supported")
    del net, tmpl
    model = nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=sched["eta_min"])

    def eta_at(step):
        pos = step % (2 * sched["step_size"])
        size = sched["step_size"]
        rise = pos if pos <= size else 2 * size - pos
        return sched["eta_min"] + (sched["eta_max"] - sched["eta_min"]) \
            * rise / size

    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    sets = {"train": (X, y), "val": (torch.from_numpy(data.X_val),
                                     torch.from_numpy(data.y_val))}

    def evaluate(Xs, ys):
        model.eval()
        total_loss, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(Xs), CHUNK):
                s = model(Xs[i:i + CHUNK])
                yi = ys[i:i + CHUNK]
                total_loss += float(F.cross_entropy(s, yi,
                                                    reduction="sum"))
                correct += int((s.argmax(1) == yi).sum())
            reg = l2 * float(sum((W * W).sum() for W in weights))
        model.train()
        loss = total_loss / len(Xs)
        return {"cost": loss + reg, "loss": loss,
                "accuracy": correct / len(Xs)}

    rows = []

    def log_row(step):
        row = {"step": step, "eta": eta_at(step)}
        for name, (Xs, ys) in sets.items():
            for k, v in evaluate(Xs, ys).items():
                row[f"{name}_{k}"] = v
        rows.append(row)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "step": step}, Path(out_dir) / "checkpoint.pt")

    gen = torch.Generator().manual_seed(t["seed"])
    xbuf = torch.empty((t["batch_size"], X.shape[1]), dtype=dtype)
    b = t["batch_size"]
    start = time.perf_counter()
    log_row(0)
    perm = None
    for step in range(total):
        k = step % per_epoch
        if k == 0:
            perm = torch.randperm(len(X), generator=gen)
        idx = perm[k * b:(k + 1) * b]
        xb = torch.index_select(X, 0, idx, out=xbuf)
        for group in opt.param_groups:
            group["lr"] = eta_at(step)
        cost = F.cross_entropy(model(xb), y[idx])
        cost = cost + l2 * sum((W * W).sum() for W in weights)
        opt.zero_grad(set_to_none=True)
        cost.backward()
        opt.step()
        if not np.isfinite(float(cost)):
            raise SystemExit(f"torch study diverged at step {step + 1}")
        if (step + 1) % every == 0 or step + 1 == total:
            log_row(step + 1)
    test = evaluate(torch.from_numpy(data.X_test),
                    torch.from_numpy(data.y_test))
    loop = time.perf_counter() - start
    torch.save(model.state_dict(), Path(out_dir) / "model.pt")
    with open(Path(out_dir) / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(json.dumps({"loop_seconds": loop,
                      "test_accuracy": test["accuracy"],
                      "val_accuracy": rows[-1]["val_accuracy"],
                      "train_bytes": data.X_train.nbytes}))


# ---- the driver --------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "a3" /
                                              "3layer-bn.json"))
    parser.add_argument("--cycles", type=int, help="override the cycles")
    parser.add_argument("--subset", type=int,
                        help="train on this many images (data.train)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int,
                        help="BLAS and torch threads; default: the libraries'")
    parser.add_argument("--only", choices=["graphnet", "torch"])
    parser.add_argument("--torch-run", metavar="DIR",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_run:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        return torch_study(args, args.torch_run)

    env = dict(os.environ)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
    names = [args.only] if args.only else ["graphnet", "torch"]
    try:
        import torch  # noqa: F401
    except ImportError:
        if "torch" in names:
            print("note: PyTorch is not installed; timing graphnet only")
            names.remove("torch")
    passthrough = ["--spec", args.spec]
    if args.cycles:
        passthrough += ["--cycles", str(args.cycles)]
    if args.subset:
        passthrough += ["--subset", str(args.subset)]
    if args.threads:
        passthrough += ["--threads", str(args.threads)]

    results = {n: [] for n in names}
    for rep in range(args.repeats):
        for name in names:
            with tempfile.TemporaryDirectory() as out_dir:
                if name == "graphnet":
                    wall, rss, _ = measured(graphnet_cmd(args, out_dir), env)
                    loop = graphnet_loop_seconds(out_dir)
                    (summ,) = Path(out_dir).glob("*/summary.json")
                    acc = json.loads(summ.read_text())["test_accuracy"]
                else:
                    cmd = [sys.executable, __file__, "--torch-run",
                           out_dir] + passthrough
                    wall, rss, out = measured(cmd, env)
                    info = json.loads(out.strip().splitlines()[-1])
                    loop, acc = info["loop_seconds"], info["test_accuracy"]
            results[name].append((wall, loop, rss, acc))
            print(f"  {name}: wall {wall:.1f} s, loop {loop:.1f} s, "
                  f"peak RSS {rss:.0f} MB, test accuracy {acc:.4f}",
                  flush=True)

    print("| contestant | median wall s | best wall s | median loop s "
          "| peak RSS MB | test acc | wall vs torch |")
    print("|---|---|---|---|---|---|---|")
    med = {n: statistics.median(r[0] for r in results[n]) for n in names}
    for name in names:
        r = results[name]
        ratio = (f"{med[name] / med['torch']:.2f}" if "torch" in med
                 else "-")
        print(f"| {name} | {med[name]:.1f} | {min(x[0] for x in r):.1f} "
              f"| {statistics.median(x[1] for x in r):.1f} "
              f"| {max(x[2] for x in r):.0f} | {r[-1][3]:.4f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
