"""Population statistics of batch normalization for test mode.

In training, BN normalises with each mini-batch's mean and variance; in
test mode it needs fixed population statistics, stored as the buffers
``<node>.mean`` and ``<node>.var``. The ``train.bn_stats`` section picks
how they are estimated.
"""

from .registry import Registry
from .schema import Number

BN_STATS = Registry("bn_stats")


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

    def update(self, net, first):
        """Fold the last train-mode pass's batch statistics into ``net``."""
        a = self.alpha
        for node, (mu, var) in net.batch_stats().items():
            mean, pop_var = net.buffers[node + ".mean"], net.buffers[node + ".var"]
            if first:
                mean[...] = mu
                pop_var[...] = var
            else:
                mean *= a
                mean += (1 - a) * mu
                pop_var *= a
                pop_var += (1 - a) * var


def make_bn_stats(cfg):
    """Build the estimator a validated ``train.bn_stats`` section names."""
    return BN_STATS[cfg["type"]](cfg)
