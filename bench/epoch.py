"""Seconds per training epoch: graphnet, PyTorch CPU and fused numpy.

One epoch is 450 steps of batch 100 drawn from a shuffled permutation
of 45,000 CIFAR-10 rows: gather the batch, forward, backward, SGD update
with the triangular cyclic rate, EMA of the BN statistics. The three
contestants train the same nets from the same initial weights on the
same data:

* graphnet: ``gn.build`` through ``graphnet.trainer.Trainer``; every
  epoch is 450 calls of ``Trainer.train_step``.
* torch: ``nn.Linear``, ``nn.BatchNorm1d``, ``nn.ReLU``, cross-entropy
  plus the L2 term, ``torch.optim.SGD`` (optional: skipped with a note
  when PyTorch is not installed).
* fused: the whole MLP's forward and backward written out by hand in
  one numpy function, the baseline of what numpy can do.

The contestants take turns within every epoch, 150 steps each by default
(``--chunk``): graphnet, torch, fused, graphnet, ... until each has done
its 450 steps, so that bursts of load from other users of the machine hit
all three alike; an epoch's time is the sum of its chunks. After a turn
at more than one thread the driver waits 0.2 s, untimed: OpenBLAS's idle
threads spin on a core for about 0.1 s after their last call, and would
otherwise slow the next contestant's turn. The table gives the median
and the best of the repeats.

``--threads 1 2`` measures every contestant at each thread count, in the
same rotation, and adds a table that compares each one at
its own fastest count: the libraries do not share a best count (on the
2-core machine PyTorch is fastest with one thread, graphnet with two),
so ratios at one shared count flatter one side or the other.

``--memory`` runs each contestant alone in a fresh process and reports
the resident memory (``VmRSS``/``VmHWM`` from /proc) before and at the
peak of one epoch, and for the numpy contestants the peak of Python
allocations traced by ``tracemalloc`` (numpy reports its arrays to it;
PyTorch does not, so that column is empty for torch).

Run ``python bench/epoch.py --help``.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

import graphnet as gn
from graphnet.data import Dataset, load_dataset
from graphnet.trainer import Trainer

NETS = {"3": [50, 50], "9": [50, 30, 20, 20, 10, 10, 10, 10]}
STEPS, BATCH, N_TRAIN, N_VAL, D, K = 450, 100, 45000, 5000, 3072, 10
L2, ALPHA, EPS = 0.005, 0.9, 1e-5
ETA_MIN, ETA_MAX, STEP_SIZE = 1e-5, 0.1, 2250
SETTLE = 0.2   # seconds between turns after a multi-threaded one


def blas_threads():
    """Threads of numpy's BLAS (threadpoolctl), or None if unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info()
              if p["user_api"] == "blas"]
    return counts[0] if counts else None


def eta_at(t):
    """The triangular cyclic rate of the specs in specs/a3."""
    pos = t % (2 * STEP_SIZE)
    rise = pos if pos <= STEP_SIZE else 2 * STEP_SIZE - pos
    return ETA_MIN + (ETA_MAX - ETA_MIN) * rise / STEP_SIZE


def make_spec(depth, bn, dtype):
    """The spec of specs/a3/<depth>layer[-bn].json in ``dtype``."""
    return gn.load_spec({
        "name": f"{depth}layer{'-bn' if bn else ''}",
        "data": {"train": N_TRAIN, "val": N_VAL},
        "graph": {"mlp": {"inputs": D, "hidden": NETS[depth], "classes": K,
                          "norm": "batchnorm" if bn else "none",
                          "init": "he"}},
        "loss": {"l2": L2},
        "train": {"batch_size": BATCH, "dtype": dtype,
                  "schedule": {"type": "cyclic", "eta_min": ETA_MIN,
                               "eta_max": ETA_MAX, "step_size": STEP_SIZE,
                               "cycles": 2},
                  "bn_stats": {"type": "ema", "alpha": ALPHA}}})


def get_data(synthetic, dtype, data_dir=None):
    """45,000 training rows: real CIFAR-10, or N(0, 1) of its shape."""
    if not synthetic:
        return load_dataset({"train": N_TRAIN, "val": N_VAL},
                            data_dir=data_dir, dtype=dtype)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_TRAIN, D), dtype=np.dtype(dtype).type)
    y = rng.integers(0, K, N_TRAIN)
    Xv = rng.standard_normal((N_VAL, D), dtype=np.dtype(dtype).type)
    return Dataset(X, y, Xv, y[:N_VAL].copy(), Xv, y[:N_VAL].copy())


def layer_params(net, depth, bn):
    """[(W, b, gamma, beta)] per layer of a graphnet net (copies)."""
    n_layers = len(NETS[depth]) + 1
    out = []
    for i in range(1, n_layers + 1):
        name = f"fc{i}" if i < n_layers else "scores"
        p = net.params
        W, b = p[f"{name}.W"].copy(), p[f"{name}.b"].copy()
        has_bn = bn and i < n_layers
        g = p[f"bn{i}.gamma"].copy() if has_bn else None
        be = p[f"bn{i}.beta"].copy() if has_bn else None
        out.append((W, b, g, be))
    return out


class Contestant:
    """One way of training the net: an epoch can be run in pieces.

    ``begin_epoch()`` draws the epoch's permutation; ``run_steps(n)``
    trains its next n steps and returns the last batch cost. Pieces let
    the driver interleave contestants within an epoch (``--chunk``).
    """

    def epoch(self):
        self.begin_epoch()
        return self.run_steps(STEPS)


# ---- graphnet ----------------------------------------------------------

class GraphnetEpoch(Contestant):
    """450 calls of ``Trainer.train_step``."""

    name = "graphnet"

    def __init__(self, spec, data, init):
        self.tmp = tempfile.TemporaryDirectory()
        self.trainer = Trainer(spec, data, self.tmp.name)
        self.trainer.net.load_state(init)

    def begin_epoch(self):
        pass   # the trainer draws its permutation at the epoch's first step

    def run_steps(self, n):
        for _ in range(n):
            cost, _ = self.trainer.train_step()
        return float(cost)


# ---- fused numpy -------------------------------------------------------

class FusedEpoch(Contestant):
    """The MLP's forward and backward by hand, in one function.

    Same math as graphnet: out = x W^T + b, BN with batch statistics
    (biased variance) before the ReLU, softmax cross-entropy plus
    l2 * sum ||W||^2, SGD, EMA of the BN statistics initialised from the
    first batch. The first layer's input gradient is not computed.
    """

    name = "fused"

    def __init__(self, layers, data, seed=0):
        self.layers = layers
        self.bn = layers[0][2] is not None
        self.X, self.y = data.X_train, data.y_train
        self.rng = np.random.default_rng(seed)
        self.xbuf = np.empty((BATCH, D), self.X.dtype)
        self.stats = [None] * (len(layers) - 1)
        self.t = 0

    def step(self, X, y, eta):
        n = X.shape[0]
        h, saved = X, []
        for i, (W, b, gamma, beta) in enumerate(self.layers[:-1]):
            h_in = h
            z = h_in @ W.T
            z += b
            xhat = inv_std = None
            if self.bn:
                mu = z.mean(axis=0)
                zc = z - mu
                var = np.einsum("ij,ij->j", zc, zc) / n
                inv_std = 1.0 / np.sqrt(var + EPS)
                xhat = zc * inv_std
                z = xhat * gamma + beta
                self._ema(i, mu, var)
            h = np.maximum(z, 0)
            saved.append((h_in, xhat, inv_std, h))
        W, b = self.layers[-1][:2]
        s = h @ W.T + b
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        cost = -np.log(p[rows, y]).mean()
        cost += L2 * sum(np.vdot(W, W) for W, *_ in self.layers)
        dz = p
        dz[rows, y] -= 1
        dz /= n

        h_in, dh = h, None   # dh: gradient of the layer below's output
        for i in range(len(self.layers) - 1, -1, -1):
            W, b, gamma, beta = self.layers[i]
            if i < len(self.layers) - 1:
                h_in, xhat, inv_std, h = saved[i]
                dz = dh * (h > 0)
                if self.bn:
                    dgamma = np.einsum("ij,ij->j", dz, xhat)
                    dbeta = dz.sum(axis=0)
                    dz = (dz * gamma - dbeta * gamma / n
                          - xhat * (dgamma * gamma / n))
                    dz *= inv_std
                    gamma -= eta * dgamma
                    beta -= eta * dbeta
            dW = dz.T @ h_in
            dW += (2 * L2) * W
            if i:
                dh = dz @ W
            W -= eta * dW
            b -= eta * dz.sum(axis=0)
        return cost

    def _ema(self, i, mu, var):
        if self.stats[i] is None:
            self.stats[i] = [mu.copy(), var.copy()]
            return
        mean, pop_var = self.stats[i]
        mean *= ALPHA
        mean += (1 - ALPHA) * mu
        pop_var *= ALPHA
        pop_var += (1 - ALPHA) * var

    def begin_epoch(self):
        self.perm, self.k = self.rng.permutation(len(self.X)), 0

    def run_steps(self, n):
        for k in range(self.k, self.k + n):
            idx = self.perm[k * BATCH:(k + 1) * BATCH]
            X = np.take(self.X, idx, axis=0, out=self.xbuf, mode="clip")
            cost = self.step(X, self.y[idx], eta_at(self.t))
            self.t += 1
        self.k += n
        return float(cost)


# ---- PyTorch -----------------------------------------------------------

def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


class TorchEpoch(Contestant):
    """The same MLP in PyTorch CPU, same init, data and schedule.

    PyTorch's BatchNorm1d keeps the unbiased variance in its running
    estimate and starts it from (0, 1) rather than the first batch;
    neither changes the work done per step.
    """

    name = "torch"

    def __init__(self, layers, data, threads, seed=0):
        import torch
        from torch import nn
        self.torch = torch
        torch.set_num_threads(threads)
        dtype = getattr(torch, str(data.X_train.dtype))
        mods, self.weights = [], []
        for i, (W, b, gamma, beta) in enumerate(layers):
            fc = nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(W))
                fc.bias.copy_(torch.from_numpy(b))
            mods.append(fc)
            self.weights.append(fc.weight)
            if i == len(layers) - 1:
                break
            if gamma is not None:
                mods.append(nn.BatchNorm1d(W.shape[0], eps=EPS,
                                           momentum=1 - ALPHA, dtype=dtype))
            mods.append(nn.ReLU())
        self.model = nn.Sequential(*mods).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=ETA_MIN)
        self.X = torch.from_numpy(data.X_train)
        self.y = torch.from_numpy(data.y_train)
        self.xbuf = torch.empty((BATCH, D), dtype=dtype)
        self.gen = torch.Generator().manual_seed(seed)
        self.t = 0

    def begin_epoch(self):
        self.perm = self.torch.randperm(len(self.X), generator=self.gen)
        self.k = 0

    def run_steps(self, n):
        torch = self.torch
        F = torch.nn.functional
        for k in range(self.k, self.k + n):
            idx = self.perm[k * BATCH:(k + 1) * BATCH]
            X = torch.index_select(self.X, 0, idx, out=self.xbuf)
            for group in self.opt.param_groups:
                group["lr"] = eta_at(self.t)
            scores = self.model(X)
            cost = F.cross_entropy(scores, self.y[idx])
            cost = cost + L2 * sum((W * W).sum() for W in self.weights)
            self.opt.zero_grad(set_to_none=True)
            cost.backward()
            self.opt.step()
            self.t += 1
        self.k += n
        return float(cost.detach())


# ---- the driver --------------------------------------------------------

def contestants(names, depth, bn, data, threads):
    """Fresh contestants for one net, all from graphnet's initial weights."""
    spec = make_spec(depth, bn, str(data.X_train.dtype))
    init_net = gn.build(spec)
    init = init_net.state()
    layers = lambda: layer_params(init_net, depth, bn)  # noqa: E731
    made = {}
    for name in names:
        if name == "graphnet":
            made[name] = GraphnetEpoch(spec, data, init)
        elif name == "fused":
            made[name] = FusedEpoch(layers(), data)
        elif name == "torch":
            made[name] = TorchEpoch(layers(), data, threads)
    return made


def configs(args):
    for dtype in args.dtype:
        for depth in args.depth:
            for bn in args.bn:
                yield depth, bn, dtype


def label(depth, bn, dtype):
    return f"{depth}-layer{' BN' if bn else ''} {dtype}"


class Threads:
    """Run a contestant's turn at a given thread count.

    numpy's BLAS is limited through threadpoolctl; PyTorch through
    ``torch.set_num_threads``. Each turn sets its own count, so that
    counts can be interleaved turn by turn in one process.
    """

    def __init__(self):
        from threadpoolctl import ThreadpoolController
        self.controller = ThreadpoolController()

    def run(self, contestant, threads, steps):
        """``contestant.run_steps(steps)`` at ``threads`` threads."""
        if contestant.name == "torch":
            contestant.torch.set_num_threads(threads)
            return contestant.run_steps(steps)
        with self.controller.limit(limits=threads, user_api="blas"):
            return contestant.run_steps(steps)


def time_epochs(args, names, thread_counts):
    """{(config, contestant, threads): [seconds per epoch, ...]}.

    Interleaved within each epoch: every contestant at every thread
    count trains ``args.chunk`` steps in turn (graphnet, torch, fused at
    the first count, then at the next, then the next chunk), so a burst
    of load from elsewhere on the machine falls on all of them alike.
    An epoch's time is the sum of its chunks. Each (contestant, threads)
    pair trains its own copy of the net, so all start from the same
    weights.
    """
    times, threads = {}, Threads()
    chunks = [args.chunk] * (STEPS // args.chunk)
    if STEPS % args.chunk:
        chunks.append(STEPS % args.chunk)
    for dtype in args.dtype:
        data = get_data(args.synthetic, dtype, args.data_dir)
        for depth, bn, dt in configs(args):
            if dt != dtype:
                continue
            made = {(name, t): c for t in thread_counts
                    for name, c in contestants(names, depth, bn, data,
                                               t).items()}
            for rep in range(args.repeats + 1):   # 0: warm-up, not kept
                secs = dict.fromkeys(made, 0.0)
                for c in made.values():
                    c.begin_epoch()
                for steps in chunks:
                    for (name, t), c in made.items():
                        start = time.perf_counter()
                        threads.run(c, t, steps)
                        secs[(name, t)] += time.perf_counter() - start
                        if t > 1:
                            # OpenBLAS's idle workers spin for about 0.1 s
                            # after a call (PyTorch's for about 0.01 s): let
                            # them sleep before the next turn is timed
                            time.sleep(SETTLE)
                if rep == 0:
                    continue
                for (name, t), sec in secs.items():
                    times.setdefault((depth, bn, dtype, name, t),
                                     []).append(sec)
                    if args.verbose:
                        print(f"  {label(depth, bn, dtype)} {name} "
                              f"({t} thread{'s' * (t > 1)}): {sec:.3f} s",
                              flush=True)
        del data
    return times


def status_kb():
    """VmRSS and VmHWM of this process, in kB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def measure_one(args):
    """Run one contestant's epoch in this process; print JSON memory."""
    depth, bn, dtype, name = args.one.split(",")
    bn = bn == "bn"
    data = get_data(args.synthetic, dtype, args.data_dir)
    made = contestants([name], depth, bn, data, blas_threads() or 1)[name]
    data_mb = data.X_train.nbytes / 2**20
    before = status_kb()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # reset VmHWM to the current VmRSS
    traced = name != "torch"
    if traced:
        tracemalloc.start()
    made.epoch()
    made.epoch()
    traced_peak = tracemalloc.get_traced_memory()[1] if traced else None
    after = status_kb()
    print(json.dumps({"rss_before_mb": before / 1024,
                      "rss_peak_mb": after["VmHWM"] / 1024,
                      "traced_peak_mb": traced_peak and traced_peak / 2**20,
                      "train_data_mb": data_mb}))


def measure_memory(args, names):
    """{(config, contestant): memory dict}, one fresh process each."""
    out = {}
    for depth, bn, dtype in configs(args):
        for name in names:
            cmd = [sys.executable, __file__, "--one",
                   f"{depth},{'bn' if bn else 'plain'},{dtype},{name}"]
            if args.synthetic:
                cmd.append("--synthetic")
            if args.threads:
                cmd += ["--threads", str(args.threads[0])]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            res = subprocess.run(cmd, capture_output=True, text=True,
                                 check=True)
            out[(depth, bn, dtype, name)] = json.loads(
                res.stdout.strip().splitlines()[-1])
    return out


def table(args, names, thread_counts, times, memory):
    """Markdown: every (contestant, threads) cell, ratios at equal threads."""
    head = ["net", "contestant", "threads", "median s/epoch",
            "best s/epoch", "median vs torch", "median vs fused"]
    if memory:
        head += ["RSS before MB", "RSS peak MB", "traced peak MB"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for depth, bn, dtype in configs(args):
        for t in thread_counts:
            med = {n: statistics.median(times[(depth, bn, dtype, n, t)])
                   for n in names}
            for name in names:
                secs = times[(depth, bn, dtype, name, t)]
                row = [label(depth, bn, dtype), name, str(t),
                       f"{med[name]:.3f}", f"{min(secs):.3f}"]
                for ref in ("torch", "fused"):
                    row.append(f"{med[name] / med[ref]:.2f}" if ref in med
                               else "-")
                if memory:
                    m = memory[(depth, bn, dtype, name)]
                    tp = m["traced_peak_mb"]
                    row += [f"{m['rss_before_mb']:.0f}",
                            f"{m['rss_peak_mb']:.0f}",
                            "-" if tp is None else f"{tp:.1f}"]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def best_table(args, names, thread_counts, times):
    """Markdown: each contestant at its fastest thread count (by median)."""
    head = ["net"] + [f"{n} best median (threads)" for n in names]
    head += [f"graphnet vs {ref}" for ref in ("torch", "fused")
             if ref in names and "graphnet" in names]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for depth, bn, dtype in configs(args):
        best = {}
        for name in names:
            best[name] = min(
                (statistics.median(times[(depth, bn, dtype, name, t)]), t)
                for t in thread_counts)
        row = [label(depth, bn, dtype)]
        row += [f"{best[n][0]:.3f} ({best[n][1]})" for n in names]
        row += [f"{best['graphnet'][0] / best[ref][0]:.2f}"
                for ref in ("torch", "fused")
                if ref in names and "graphnet" in names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", action="store_true",
                        help="random data of CIFAR-10's shape")
    parser.add_argument("--data-dir", help="default: GRAPHNET_DATA")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed epochs per contestant (after a warm-up)")
    parser.add_argument("--depth", nargs="+", default=["3", "9"],
                        choices=sorted(NETS))
    parser.add_argument("--bn", nargs="+", default=["bn", "plain"],
                        choices=["bn", "plain"])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--only", nargs="+",
                        choices=["graphnet", "torch", "fused"],
                        help="run only these contestants")
    parser.add_argument("--chunk", type=int, default=150,
                        help="steps each contestant trains in turn within "
                             "an epoch (450: whole epochs in turn)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure memory, one process per cell")
    parser.add_argument("--threads", type=int, nargs="+",
                        help="BLAS (and torch) thread counts to measure, "
                             "each contestant at each, interleaved; "
                             "default: numpy's own count")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.bn = [b == "bn" for b in args.bn]
    if not 1 <= args.chunk <= STEPS:
        parser.error(f"--chunk: expected 1 to {STEPS}, found {args.chunk}")
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads[0], user_api="blas")
    if args.one:
        return measure_one(args)

    thread_counts = args.threads or [blas_threads() or 1]
    names = args.only or ["graphnet", "torch", "fused"]
    if "torch" in names and torch_or_none() is None:
        print("note: PyTorch is not installed; skipping it "
              "(pip install torch==2.13.0)")
        names = [n for n in names if n != "torch"]
    torch = torch_or_none()
    print(f"{STEPS} steps of batch {BATCH} per epoch, "
          f"{'synthetic' if args.synthetic else 'CIFAR-10'} data, "
          f"threads {', '.join(map(str, thread_counts))}, "
          f"numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch and "torch" in names
             else "") + f", {args.repeats} repeats", flush=True)
    times = time_epochs(args, names, thread_counts)
    memory = measure_memory(args, names) if args.memory else None
    print(table(args, names, thread_counts, times, memory))
    if len(thread_counts) > 1:
        print()
        print(best_table(args, names, thread_counts, times))


if __name__ == "__main__":
    sys.exit(main())
