"""The compiled network: parameters, forward pass and reverse pass.

``build(spec)`` turns a validated spec into a ``Network``. The forward
pass walks the nodes in topological order, keeping each op's cache; the
reverse pass walks them backwards, handing each op the gradient of its
output and summing the gradients of values that feed several nodes (a
skip connection's fan-out).

Per-step bookkeeping is kept small: every node is compiled into a tuple
of (op, input slots, param keys) once, and values live in a list indexed
by slot, so a step costs a few dict look-ups per node besides the numpy
work.
"""

import logging

import numpy as np

from . import graph as graph_mod
from .losses import LOSSES
from .ops import Context
from .spec import Spec, load_spec

log = logging.getLogger(__name__)

INPUT_SLOT = 0   # values[0] is the graph input: it needs no gradient


class Step:
    """One compiled node: its op, where it reads and writes, its arrays.

    ``arrays`` maps the op's local names to the network's own param and
    buffer arrays, built once: those arrays are only ever updated in
    place (optimizers, EMA, ``load_state``), never rebound. ``skip_dx``
    is set when every input is a graph input and the op can leave out
    its input gradients (``op.skips_dx``).
    """

    __slots__ = ("name", "op", "inputs", "out", "keys", "arrays",
                 "skip_dx")

    def __init__(self, name, op, inputs, out, keys, arrays):
        self.name, self.op, self.inputs, self.out = name, op, inputs, out
        self.keys = keys  # local array name -> "<node>.<local>"
        self.arrays = arrays
        self.skip_dx = (getattr(op, "skips_dx", False)
                        and all(i == INPUT_SLOT for i in inputs))


class Network:
    """A compiled graph with its parameters and buffers.

    Attributes
    ----------
    params : dict of str -> ndarray
        Trainable arrays, ``<node>.<param>`` (``fc1.W`` is (m, d)).
    buffers : dict of str -> ndarray
        Non-trainable arrays (BN population ``mean`` and ``var``).
    widths : dict of str -> int
        Width of every value of the graph.
    dag : networkx.MultiDiGraph
        The graph, for rendering and inspection.
    """

    def __init__(self, graph, l2=0.0, loss="softmax_cross_entropy",
                 seed=0, dtype="float64"):
        self.graph = graph
        self.l2 = l2
        self.dtype = np.dtype(dtype)
        self.loss_fn = LOSSES[loss]()
        self.dag = graph_mod.to_digraph(graph)
        self.widths = graph_mod.infer_widths(graph, dag=self.dag)
        self.input_name = next(iter(graph["inputs"]))
        self.params, self.buffers = {}, {}
        self.decayed = []
        rng = np.random.default_rng(seed)
        slot = {self.input_name: INPUT_SLOT}
        self.steps = []
        for node in graph_mod.topological_nodes(graph, self.dag):
            op = graph_mod.make_op(node)
            widths = [self.widths[s] for s in node["inputs"]]
            arrays = op.create(widths, rng, self.dtype)
            keys = {}
            for local, value in arrays.items():
                full = f"{node['name']}.{local}"
                store = self.params if local in op.params else self.buffers
                store[full] = value
                keys[local] = full
            self.decayed += [f"{node['name']}.{p}" for p in op.decayed]
            slot[node["name"]] = len(slot)
            self.steps.append(Step(node["name"], op,
                                   [slot[s] for s in node["inputs"]],
                                   slot[node["name"]], keys, arrays))
            log.debug("node %s (%s) <- %s: width %d", node["name"],
                      node["op"], ", ".join(node["inputs"]),
                      self.widths[node["name"]])
        # steps whose op keeps batch statistics (BN), for batch_stats()
        self.bn_steps = [(i, step.name) for i, step in enumerate(self.steps)
                         if hasattr(step.op, "batch_stats")]
        self.output_slot = slot[graph["output"]]
        self.n_values = len(slot)
        self._caches = None
        self._loss_cache = None

    # ---- forward -------------------------------------------------------

    def forward(self, X, train=False, rng=None):
        """Output scores of ``X`` (n, d); caches kept for ``backward``.

        Parameters
        ----------
        X : ndarray (n, d)
            Rows are examples; cast to the network's dtype if needed.
        train : bool
            Train mode: BN uses batch statistics, dropout is active.
        rng : numpy.random.Generator, optional
            For stochastic ops in train mode.
        """
        X = np.asarray(X)
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        ctx = Context(train, rng)
        values = [None] * self.n_values
        values[INPUT_SLOT] = X
        caches = []
        for step in self.steps:
            xs = [values[i] for i in step.inputs]
            out, cache = step.op.forward(xs, step.arrays, ctx)
            values[step.out] = out
            caches.append(cache)
        self._caches = caches
        return values[self.output_slot]

    def l2_term(self):
        """l2 * sum of squared entries of the weight matrices."""
        if not self.l2:
            return 0.0
        total = 0.0
        for key in self.decayed:
            # ravel("K") is a view in either memory order (vdot alone
            # would copy a column-major W first)
            w = self.params[key].ravel("K")
            total += np.dot(w, w)
        return self.l2 * total

    def loss(self, X, y, train=True, rng=None):
        """Cost of a batch: mean cross-entropy plus the L2 term.

        Keeps what ``backward`` needs. ``self.last_loss`` is the cost
        without the L2 term.
        """
        scores = self.forward(X, train=train, rng=rng)
        self.last_loss, self._loss_cache = self.loss_fn.forward(
            scores, np.asarray(y))
        return self.last_loss + self.l2_term()

    # ---- reverse -------------------------------------------------------

    def backward(self):
        """Gradients of the last ``loss`` w.r.t. every param.

        Returns
        -------
        dict of str -> ndarray
            Same keys and shapes as ``params``.
        """
        if self._loss_cache is None:
            raise RuntimeError("backward() needs a preceding loss() call")
        grads = {}
        dvalues = [None] * self.n_values
        dvalues[self.output_slot] = self.loss_fn.backward(self._loss_cache)
        for step, cache in zip(reversed(self.steps), reversed(self._caches)):
            dout = dvalues[step.out]
            dvalues[step.out] = None
            if dout is None:
                # the node does not reach the output: zero gradients
                dout = np.zeros((self._loss_cache[0].shape[0],
                                 self.widths[step.name]), self.dtype)
            if step.skip_dx:
                _, dparams = step.op.backward(dout, cache, need_dx=False)
            else:
                dxs, dparams = step.op.backward(dout, cache)
                for i, dx in zip(step.inputs, dxs):
                    if i == INPUT_SLOT:
                        continue
                    # never += into a received array: ops may share dout
                    prev = dvalues[i]
                    dvalues[i] = dx if prev is None else prev + dx
            for local, g in dparams.items():
                grads[step.keys[local]] = g
        if self.l2:
            for key in self.decayed:
                # dW += 2 l2 W in place: dW is the op's own new product
                grads[key] += (2 * self.l2) * self.params[key]
        self._loss_cache = None
        return {key: grads[key] for key in self.params}

    # ---- test mode -----------------------------------------------------

    def batch_stats(self):
        """{bn node: (mean, var)} of the last train-mode forward pass."""
        caches = self._caches
        return {name: self.steps[i].op.batch_stats(caches[i])
                for i, name in self.bn_steps if caches[i][3]}

    def predict_proba(self, X, chunk=10000):
        """Class probabilities in test mode (population BN statistics)."""
        return np.concatenate([
            self.loss_fn.probabilities(self.forward(X[i:i + chunk]))
            for i in range(0, len(X), chunk)])

    def evaluate(self, X, y, chunk=10000):
        """Cost, loss and accuracy of ``(X, y)`` in test mode, in chunks.

        Returns
        -------
        dict with ``cost``, ``loss`` and ``accuracy`` (a fraction).
        """
        total, correct = 0.0, 0
        for i in range(0, len(X), chunk):
            scores = self.forward(X[i:i + chunk])
            yi = y[i:i + chunk]
            loss, _ = self.loss_fn.forward(scores, yi)
            total += loss * len(yi)
            correct += int((scores.argmax(axis=1) == yi).sum())
        self._caches = None
        loss = float(total) / len(X)
        return {"cost": loss + float(self.l2_term()), "loss": loss,
                "accuracy": correct / len(X)}

    def state(self):
        """Params and buffers in one flat dict, for ``model.npz``."""
        return {**self.params, **self.buffers}

    def load_state(self, arrays):
        """Copy arrays saved by ``state()`` into this network, in place."""
        for store in (self.params, self.buffers):
            for key, value in store.items():
                if key not in arrays:
                    raise KeyError(f"saved model lacks {key!r}")
                if arrays[key].shape != value.shape:
                    raise ValueError(f"saved {key!r} has shape "
                                     f"{arrays[key].shape}, network expects "
                                     f"{value.shape}")
                value[...] = arrays[key]

    def n_params(self):
        """Total number of trainable scalars."""
        return sum(v.size for v in self.params.values())


def build(spec, seed=None, dtype=None):
    """Compile a spec into a ``Network`` with initialised parameters.

    Parameters
    ----------
    spec : Spec, dict, str or Path
        A validated spec, or something ``load_spec`` accepts.
    seed : int, optional
        Seed of the initialisation; default ``train.seed``.
    dtype : str, optional
        Default ``train.dtype``.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    train = spec["train"]
    return Network(spec["graph"], l2=spec["loss"]["l2"],
                   loss=spec["loss"]["op"],
                   seed=train["seed"] if seed is None else seed,
                   dtype=dtype or train["dtype"])
