"""Optimizers: in-place parameter updates from gradients.

Each optimizer is registered by ``type``. ``step(params, grads, eta)``
updates the arrays of ``params`` in place, so the network's references
stay valid and no large arrays are allocated per step beyond the update.
``state()`` and ``load_state()`` carry the moments through checkpoints.
"""

import numpy as np

from .registry import Registry
from .schema import Bool, Number

OPTIMIZERS = Registry("optimizer")


class Optimizer:
    """Base: ``fields`` is the schema of the spec section besides ``type``."""

    fields = {}

    def __init__(self, cfg):
        self.cfg = cfg
        for key in self.fields:
            setattr(self, key, cfg[key])
        self.slots = {}   # name -> array, the optimizer's moments
        self.scratch = {}   # name -> reused temporary, not checkpointed
        self.t = 0

    def state(self):
        """Arrays to checkpoint, as a flat dict of name -> array."""
        out = {f"{slot}": value for slot, value in self.slots.items()}
        out["t"] = np.array(self.t)
        return out

    def load_state(self, state):
        """Restore what ``state()`` returned."""
        self.t = int(state.pop("t"))
        self.slots = {k: np.array(v) for k, v in state.items()}

    def slot(self, key, like):
        """The moment array ``key``, zeros like ``like`` when first asked."""
        if key not in self.slots:
            self.slots[key] = np.zeros_like(like)
        return self.slots[key]

    def scaled(self, key, factor, g):
        """``factor * g`` in a buffer reused across steps (no allocation)."""
        buf = self.scratch.get(key)
        if buf is None or buf.shape != g.shape or buf.dtype != g.dtype:
            buf = self.scratch[key] = np.empty_like(g)
        return np.multiply(g, factor, out=buf)


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """Gradient descent, with optional (Nesterov) momentum.

    v <- mu v - eta g;  W <- W + v  (Nesterov: W <- W + mu v - eta g)
    """

    fields = {"momentum": Number(default=0.0, low=0, high=1, open_high=True),
              "nesterov": Bool(default=False)}

    def step(self, params, grads, eta):
        self.t += 1
        for key, g in grads.items():
            W = params[key]
            step = self.scaled(key, eta, g)    # eta g
            if self.momentum == 0:
                W -= step
                continue
            v = self.slot(key, W)
            v *= self.momentum
            v -= step
            if self.nesterov:
                W -= step
                W += self.scaled(key, self.momentum, v)
            else:
                W += v


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias-corrected moments.

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
    W <- W - eta * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
    """

    fields = {"beta1": Number(default=0.9, low=0, high=1, open_high=True),
              "beta2": Number(default=0.999, low=0, high=1, open_high=True),
              "eps": Number(default=1e-8, low=0, open_low=True)}

    def step(self, params, grads, eta):
        self.t += 1
        c1 = 1 - self.beta1 ** self.t
        c2 = 1 - self.beta2 ** self.t
        for key, g in grads.items():
            W = params[key]
            m = self.slot("m." + key, W)
            v = self.slot("v." + key, W)
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            W -= (eta / c1) * m / (np.sqrt(v / c2) + self.eps)


def make_optimizer(cfg):
    """Build the optimizer a validated ``train.optimizer`` section names."""
    return OPTIMIZERS[cfg["type"]](cfg)
