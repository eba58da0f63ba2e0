"""Elementwise sum: the merge point of a skip connection."""

from .base import OPS, Op


@OPS.register("add")
class Add(Op):
    """Sum of two or more inputs of one width.

    Shapes: each x_i (n, d), out (n, d).

    Forward:  out = x_1 + ... + x_k
    Backward: dx_i = dout for every i
    """

    family = "merge"
    arity = (2, None)

    def infer_width(self, widths):
        if len(set(widths)) != 1:
            raise ValueError("add needs inputs of one width, found widths "
                             + ", ".join(map(str, widths)))
        return widths[0]

    def forward(self, xs, arrays, ctx):
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out += x
        return out, len(xs)

    def backward(self, dout, cache):
        # The executor never adds into a received gradient in place, so
        # every input may share the one dout array.
        return [dout] * cache, {}
