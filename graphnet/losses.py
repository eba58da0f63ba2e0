"""Cost functions applied to a graph's output scores."""

import numpy as np

from .registry import Registry

LOSSES = Registry("loss")


@LOSSES.register("softmax_cross_entropy")
class SoftmaxCrossEntropy:
    """Mean cross-entropy of the softmax of the scores.

    Shapes: s (n, k) scores, y (n,) integer labels, p (n, k).

    Forward:  p = softmax(s) row-wise,  loss = -(1/n) sum_i log p[i, y_i]
    Backward: ds = (p - onehot(y)) / n
    """

    @staticmethod
    def probabilities(s):
        """Row-wise softmax, shifted by the row max for stability."""
        e = np.exp(s - s.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return e

    def forward(self, s, y):
        p = self.probabilities(s)
        n = s.shape[0]
        picked = p[np.arange(n), y]
        # the floor keeps log finite when a probability underflows to 0
        loss = -np.log(np.maximum(picked, np.finfo(p.dtype).tiny)).mean()
        # a numpy scalar, not float: gradcheck keeps long double precision
        return loss, (p, y)

    def backward(self, cache):
        p, y = cache
        n = p.shape[0]
        ds = p.copy()
        ds[np.arange(n), y] -= 1
        ds /= n
        return ds
