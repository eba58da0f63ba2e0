"""The op interface and its registry.

An op is one kind of computation. A node of a graph holds one configured
op instance (its attributes, e.g. ``units``), never per-call state: the
executor keeps the caches. Shapes are widths: every value flowing through
a graph is an ``(n, d)`` array, ``n`` examples by ``d`` features.
"""

from ..registry import Registry

OPS = Registry("op")


class Context:
    """What a forward pass needs besides inputs and arrays.

    Attributes
    ----------
    train : bool
        True: batch statistics, dropout active. False: test mode.
    rng : numpy.random.Generator or None
        Source of randomness for stochastic ops (dropout).
    """

    __slots__ = ("train", "rng")

    def __init__(self, train, rng=None):
        self.train = train
        self.rng = rng


class Op:
    """Base class: subclasses set the class attributes and four methods.

    Class attributes
    ----------------
    family : str
        affine, normalization, activation, merge or regularization;
        used for diagram colours.
    attrs : dict
        Attribute schema (``graphnet.schema`` fields) of a node's JSON.
    params, buffers : tuple of str
        Local names of trainable and non-trainable arrays.
    decayed : tuple of str
        Params that L2 regularization applies to (weight matrices).
    arity : (int, int or None)
        Least and most number of inputs; None means no upper bound.
    """

    family = "other"
    attrs = {}
    params = ()
    buffers = ()
    decayed = ()
    arity = (1, 1)

    def __init__(self, name, attrs):
        self.name = name
        self.config = attrs
        for key, value in attrs.items():
            setattr(self, key, value)

    def infer_width(self, widths):
        """Output width from input widths; raise ValueError on mismatch."""
        return widths[0]

    def create(self, widths, rng, dtype):
        """Initial params and buffers as a dict of local name -> array."""
        return {}

    def forward(self, xs, arrays, ctx):
        """Return ``(out, cache)``; ``arrays`` maps local names to arrays."""
        raise NotImplementedError

    def backward(self, dout, cache):
        """Return ``(dxs, dparams)``: a list per input, a dict per param."""
        raise NotImplementedError

    def count_params(self, widths):
        """Number of trainable scalars, for tables and diagrams."""
        return 0
