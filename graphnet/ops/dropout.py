"""Inverted dropout (Srivastava et al., 2014)."""

from ..schema import Number
from .base import OPS, Op


@OPS.register("dropout")
class Dropout(Op):
    """Zero each feature with probability p in training, rescale the rest.

    Shapes: x (n, d), mask (n, d), out (n, d).

    Train:    mask_ij = [u_ij >= p] / (1 - p),  out = x * mask
    Backward: dx = dout * mask
    Test:     out = x,  dx = dout
    """

    family = "regularization"
    attrs = {"p": Number(default=0.5, low=0, high=1, open_high=True)}

    def forward(self, xs, arrays, ctx):
        x = xs[0]
        if not ctx.train or self.p == 0:
            return x, None
        if ctx.rng is None:
            raise ValueError(f"node {self.name!r} (dropout): a train-mode "
                             "pass needs a random generator")
        keep = ctx.rng.random(x.shape) >= self.p
        mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * mask, mask

    def backward(self, dout, cache):
        return [dout if cache is None else dout * cache], {}
