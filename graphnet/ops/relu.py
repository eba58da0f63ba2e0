"""Rectified linear unit."""

import numpy as np

from .base import OPS, Op


@OPS.register("relu")
class ReLU(Op):
    """Elementwise max(x, 0).

    Shapes: x (n, d), out (n, d).

    Forward:  out = max(x, 0)
    Backward: dx = dout * [x > 0]
    """

    family = "activation"

    def forward(self, xs, arrays, ctx):
        out = np.maximum(xs[0], 0)
        return out, out

    def backward(self, dout, cache):
        return [dout * (cache > 0)], {}
