"""Fully connected layer."""

import numpy as np

from ..init import check_init, init_sigma
from ..schema import Any, Bool, Number
from .base import OPS, Op


@OPS.register("linear")
class Linear(Op):
    """Affine map of the rows of x.

    Shapes: x (n, d), W (m, d), b (m,), out (n, m).

    Forward:  out = x W^T + b
    Backward: dx = dout W,  dW = dout^T x,  db = sum_n dout

    When x is a graph input (the data) nobody needs dx: the executor
    passes ``need_dx=False`` and the product dout W, a third of a first
    layer's arithmetic, is skipped.
    """

    family = "affine"
    skips_dx = True
    attrs = {
        "units": Number(integer=True, low=1, doc="output width m"),
        "init": Any(check_init, default="he", doc="he, xavier or {normal: s}"),
        "bias": Bool(default=True, doc="add a bias vector b"),
    }
    decayed = ("W",)

    def __init__(self, name, attrs):
        super().__init__(name, attrs)
        self.params = ("W", "b") if self.bias else ("W",)

    def infer_width(self, widths):
        return self.units

    def create(self, widths, rng, dtype):
        m, d = self.units, widths[0]
        sigma = init_sigma(self.init, m, d)
        # The shape is (m, d) either way; the memory order is the one
        # whose two big products OpenBLAS runs faster (100 x 3072 batch,
        # 50 units, one thread): float32 column-major, W.T contiguous
        # (0.78 against 0.91 ms for the pair); float64 row-major (1.57
        # against 1.70 ms). backward keeps the gradient in W's order.
        W = sigma * rng.standard_normal((m, d))
        order = "F" if np.dtype(dtype) == np.float32 else "C"
        arrays = {"W": np.array(W, dtype=dtype, order=order)}
        if self.bias:
            arrays["b"] = np.zeros(m, dtype=dtype)
        return arrays

    def forward(self, xs, arrays, ctx):
        x = xs[0]
        out = x @ arrays["W"].T
        if self.bias:
            out += arrays["b"]
        return out, (x, arrays["W"])

    def backward(self, dout, cache, need_dx=True):
        x, W = cache
        # dout^T x, computed so that it comes out in W's memory order
        dW = (x.T @ dout).T if W.flags.f_contiguous else dout.T @ x
        grads = {"W": dW}
        if self.bias:
            grads["b"] = dout.sum(axis=0)
        return [dout @ W if need_dx else None], grads

    def count_params(self, widths):
        return self.units * widths[0] + (self.units if self.bias else 0)
