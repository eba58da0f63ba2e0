"""Batch normalization (Ioffe and Szegedy, 2015)."""

import numpy as np

from ..schema import Number
from .base import OPS, Op


@OPS.register("batchnorm")
class BatchNorm(Op):
    """Normalise each feature, then scale and shift.

    Shapes: x (n, d), gamma, beta, mean, var (d,), out (n, d).

    Train mode (mini-batch statistics, biased variance):
        mu = mean_n x,  var = mean_n (x - mu)^2
        xhat = (x - mu) / sqrt(var + eps),  out = gamma * xhat + beta
    Backward, closed form with g = dout * gamma:
        dx = (g - mean_n g - xhat * mean_n(g * xhat)) / sqrt(var + eps)
        dgamma = sum_n dout * xhat,  dbeta = sum_n dout
    Test mode uses the stored population ``mean`` and ``var``; the
    statistics are then constants, so dx = g / sqrt(var + eps).
    """

    family = "normalization"
    attrs = {"eps": Number(default=1e-5, low=0, open_low=True, high=1)}
    params = ("gamma", "beta")
    buffers = ("mean", "var")

    def create(self, widths, rng, dtype):
        d = widths[0]
        return {"gamma": np.ones(d, dtype), "beta": np.zeros(d, dtype),
                "mean": np.zeros(d, dtype), "var": np.ones(d, dtype)}

    def forward(self, xs, arrays, ctx):
        x = xs[0]
        if ctx.train:
            n = x.shape[0]
            mu = x.sum(axis=0) / n
            xc = x - mu
            var = np.einsum("ij,ij->j", xc, xc) / n
        else:
            mu, var = arrays["mean"], arrays["var"]
            xc = x - mu
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = xc
        xhat *= inv_std     # xc is this call's own array: no new one
        out = xhat * arrays["gamma"]
        out += arrays["beta"]
        return out, (xhat, inv_std, arrays["gamma"], ctx.train, mu, var)

    def backward(self, dout, cache):
        xhat, inv_std, gamma, train, _, _ = cache
        dgamma = np.einsum("ij,ij->j", dout, xhat)
        dbeta = dout.sum(axis=0)
        dx = dout * gamma                       # g
        if train:
            n = dout.shape[0]
            dx -= dbeta * gamma / n
            dx -= xhat * (dgamma * gamma / n)
        dx *= inv_std
        return [dx], {"gamma": dgamma, "beta": dbeta}

    def count_params(self, widths):
        return 2 * widths[0]

    @staticmethod
    def batch_stats(cache):
        """The (mean, var) a train-mode forward pass computed."""
        return cache[4], cache[5]
