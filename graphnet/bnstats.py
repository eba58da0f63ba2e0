"""Population statistics of batch normalization for test mode.

In training, BN normalises with each mini-batch's mean and variance; in
test mode it needs fixed population statistics, stored as the buffers
``<node>.mean`` and ``<node>.var``. The ``train.bn_stats`` section picks
how they are estimated while training:

- ``ema``: an exponential moving average of the batch statistics, folded
  in after every step.
- ``precise``: PreciseBN (Wu and Johnson, "Rethinking 'Batch' in
  BatchNorm", 2021). With the parameters frozen, ``batches`` training
  batches are passed forward and the per-batch means and the per-batch
  (biased) variances are averaged. This runs ``per_epoch`` times per epoch
  and once more after the last step; between estimates the EMA keeps
  running, so a checkpoint or an evaluation between estimates still sees
  sensible (EMA) figures.

``reestimate(net, spec, data, mode)`` recomputes the statistics of a
trained network on demand: ``precise`` from training batches, or
``adaptive`` (AdaBN, Li et al. 2016) from the test images themselves,
optionally augmented with flips and small shifts.

The frozen forward pass normalises every BN node with its batch
statistics (as in training, so the estimate matches what the layers
above were trained on) but runs every other op in test mode: dropout is
off, as it is when the statistics are used.
"""

import logging

import numpy as np

from .data import augment as augment_batch
from .errors import GraphnetError, choices_hint
from .ops import Context
from .registry import Registry
from .schema import Number

log = logging.getLogger(__name__)

BN_STATS = Registry("bn_stats")
MODES = ("ema", "precise", "adaptive")
PRECISE_BATCHES = 200   # default when the run's spec does not say


@BN_STATS.register("ema")
class EMA:
    """Exponential moving average of the mini-batch statistics.

    mean <- alpha * mean + (1 - alpha) * mu_batch  (likewise var),
    initialised from the first mini-batch of the run.
    """

    fields = {"alpha": Number(default=0.9, low=0, high=1,
                              open_low=True, open_high=True)}

    def __init__(self, cfg):
        self.alpha = cfg["alpha"]
        self._pairs = (None, {})   # (net, {node: (mean, var) buffers})

    def buffer_pairs(self, net):
        """{bn node: (mean, var) buffers} of ``net``, looked up once.

        Buffers are only ever updated in place, so the arrays found for
        one network stay its buffers for its whole life.
        """
        if self._pairs[0] is not net:
            self._pairs = (net, {
                name: (net.buffers[name + ".mean"],
                       net.buffers[name + ".var"])
                for name in (step.name for step in net.steps
                             if is_bn(step.op))})
        return self._pairs[1]

    def update(self, net, first):
        """Fold the last train-mode pass's batch statistics into ``net``."""
        a = self.alpha
        pairs = self.buffer_pairs(net)
        for node, (mu, var) in net.batch_stats().items():
            mean, pop_var = pairs[node]
            if first:
                mean[...] = mu
                pop_var[...] = var
            else:
                mean *= a
                mean += (1 - a) * mu
                pop_var *= a
                pop_var += (1 - a) * var


@BN_STATS.register("precise")
class Precise(EMA):
    """PreciseBN: averages over many batches with the model frozen.

    For B batches drawn without replacement from the training set:
        mean = (1/B) sum_b mu_b,   var = (1/B) sum_b var_b
    with mu_b, var_b the (biased) statistics of batch b at each BN node.
    Estimates are made every ``floor(steps_per_epoch / per_epoch)``
    steps (never when ``per_epoch`` is 0) and after the last step;
    between them the EMA with ``alpha`` runs as in ``ema``. The batches
    are drawn by a generator of their own, seeded by the run's seed and
    the step, so the trained parameters equal those of an ``ema`` run.
    """

    fields = {**EMA.fields,
              # the bound keeps a typo from drawing billions of batches
              "batches": Number(default=PRECISE_BATCHES, integer=True,
                                low=1, high=100000,
                                doc="training batches per estimate"),
              "per_epoch": Number(default=1, integer=True, low=0,
                                  doc="estimates per epoch besides the "
                                      "final one")}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.batches = cfg["batches"]
        self.per_epoch = cfg["per_epoch"]
        self.done_at = None

    def after_step(self, trainer):
        """Estimate when ``trainer.step`` is due (before its evaluation)."""
        due = trainer.step == trainer.total
        if self.per_epoch:
            every = max(1, trainer.per_epoch // self.per_epoch)
            due = due or trainer.step % every == 0
        if due:
            self.estimate(trainer)

    def finish(self, trainer):
        """The final estimate, unless the last step already made it."""
        if self.done_at != trainer.step:
            self.estimate(trainer)

    def estimate(self, trainer):
        rng = np.random.default_rng([trainer.cfg["seed"], trainer.step])
        X = trainer.data.X_train
        chunks = sample_batches(len(X), trainer.batch, self.batches, rng)
        store(trainer.net, population_stats(
            trainer.net, (X[idx] for idx in chunks)))
        self.done_at = trainer.step
        log.debug("PreciseBN at step %d: %d batches", trainer.step,
                  self.batches)


def make_bn_stats(cfg):
    """Build the estimator a validated ``train.bn_stats`` section names."""
    return BN_STATS[cfg["type"]](cfg)


# ---- frozen-model statistics -------------------------------------------

_BN_CTX, _TEST_CTX = Context(train=True), Context(train=False)


def is_bn(op):
    return hasattr(op, "batch_stats")


def batch_statistics(net, X):
    """Per-node batch ``(mean, var)`` of one batch, the model frozen.

    BN nodes normalise with the batch's own statistics; every other op
    runs in test mode (no dropout). The pass stops at the last BN node.

    Parameters
    ----------
    net : graphnet.executor.Network
    X : ndarray (n, d)

    Returns
    -------
    dict of str -> (ndarray, ndarray)
        BN node name -> its input's batch mean and biased variance.
    """
    last = max((i for i, s in enumerate(net.steps) if is_bn(s.op)),
               default=-1)
    values = [None] * net.n_values
    values[0] = np.asarray(X, dtype=net.dtype)
    stats = {}
    for step in net.steps[:last + 1]:
        arrays = {local: net.params[full] if full in net.params
                  else net.buffers[full] for local, full in step.keys.items()}
        ctx = _BN_CTX if is_bn(step.op) else _TEST_CTX
        out, cache = step.op.forward([values[i] for i in step.inputs],
                                     arrays, ctx)
        if is_bn(step.op):
            stats[step.name] = step.op.batch_stats(cache)
        values[step.out] = out
    return stats


def population_stats(net, batches):
    """Average the per-batch means and the per-batch variances.

    Parameters
    ----------
    net : graphnet.executor.Network
    batches : iterable of ndarray (n, d)

    Returns
    -------
    dict of str -> (ndarray, ndarray)
        BN node -> (mean of mu_b, mean of var_b), in float64. The
        variance is the average within-batch variance, not the variance
        of the pooled data (which would add the spread of the mu_b).
    """
    sums, count = {}, 0
    for X in batches:
        for node, (mu, var) in batch_statistics(net, X).items():
            acc = sums.setdefault(node, [0.0, 0.0])
            acc[0] = acc[0] + mu.astype(np.float64)
            acc[1] = acc[1] + var.astype(np.float64)
        count += 1
    if count == 0:
        raise GraphnetError("BN statistics: no batches to estimate from")
    return {node: (m / count, v / count) for node, (m, v) in sums.items()}


def store(net, stats):
    """Write ``{node: (mean, var)}`` into the network's BN buffers."""
    for node, (mean, var) in stats.items():
        net.buffers[node + ".mean"][...] = mean
        net.buffers[node + ".var"][...] = var


def sample_batches(n, size, count, rng):
    """Index arrays of ``count`` batches of ``size`` rows out of ``n``.

    Rows are drawn without replacement within each pass over the data;
    a pass's remainder (fewer than ``size`` rows) is left out.
    """
    size = min(size, n)
    per_pass = n // size
    out = []
    while len(out) < count:
        perm = rng.permutation(n)
        take = min(per_pass, count - len(out))
        out += [perm[k * size:(k + 1) * size] for k in range(take)]
    return out


def reestimate(net, spec, data, mode, batches=None, augment=None,
               passes=1, seed=0):
    """Recompute a trained network's BN statistics, in place.

    Parameters
    ----------
    net : graphnet.executor.Network
        A trained network (its BN buffers are overwritten).
    spec : Spec
        The run's spec: ``train.batch_size`` sets the batch size and a
        ``precise`` ``bn_stats`` section the default number of batches.
    data : graphnet.data.Dataset
    mode : str
        ``"ema"``: leave the saved statistics. ``"precise"``: PreciseBN
        over ``batches`` training batches (default: the spec's, else
        200). ``"adaptive"``: AdaBN over the test images, every image
        once per pass (``passes`` passes, ``batches`` caps the count).
    augment : dict, optional
        ``{"flip": p, "shift": k}``: mirror each image with probability
        p and shift it by up to k pixels before it is passed forward
        (see ``graphnet.data.augment``); default none.
    passes : int
        Passes over the test images in ``adaptive`` mode; more than one
        makes sense with ``augment``.
    seed : int
        Seed of the batch order and the augmentation draws.

    Returns
    -------
    dict of str -> (ndarray, ndarray)
        The statistics stored (empty in ``ema`` mode or without BN).

    Raises
    ------
    GraphnetError
        Unknown ``mode``, or bad ``augment`` or ``passes``.
    """
    if mode not in MODES:
        raise GraphnetError(f"bn_stats mode: unknown mode {mode!r}"
                            f"{choices_hint(mode, MODES)}")
    if isinstance(passes, bool) or not isinstance(passes, int) \
            or passes < 1:
        raise GraphnetError(f"bn_stats passes: expected an integer >= 1, "
                            f"found {passes!r}")
    if mode == "ema":
        return {}
    if not any(is_bn(s.op) for s in net.steps):
        log.warning("the network has no batchnorm node: nothing to "
                    "re-estimate")
        return {}
    rng = np.random.default_rng(seed)
    size = spec["train"]["batch_size"]
    if mode == "precise":
        cfg = spec["train"]["bn_stats"]
        count = batches or cfg.get("batches") or PRECISE_BATCHES
        X = data.X_train
    else:
        X = data.X_test
        count = passes * max(1, len(X) // min(size, len(X)))
        count = min(count, batches) if batches else count
    flip, shift = _augment_args(augment)

    def feed():
        for idx in sample_batches(len(X), size, count, rng):
            Xb = X[idx]
            if augment:
                Xb = augment_batch(Xb, rng, flip, shift, out=Xb)
            yield Xb

    stats = population_stats(net, feed())
    store(net, stats)
    log.info("BN statistics re-estimated (%s) from %d batches of %d%s",
             mode, count, min(size, len(X)),
             f", augmented {augment}" if augment else "")
    return stats


def _augment_args(augment):
    if augment is None:
        return 0.0, 0
    if not isinstance(augment, dict) or set(augment) - {"flip", "shift"}:
        raise GraphnetError("bn_stats augment: expected {\"flip\": p, "
                            f"\"shift\": k}}, found {augment!r}")
    return augment.get("flip", 0.5), augment.get("shift", 1)
