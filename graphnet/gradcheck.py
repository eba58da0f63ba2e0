"""Numerical gradient checks of whole networks.

The analytic gradients (the ops' hand-written backward rules, run in
float64) are compared entry by entry with centred differences

    n_i = (J(theta + h e_i) - J(theta - h e_i)) / (2 h)

of the cost J, BN using mini-batch statistics in every evaluation. The
differences are taken on an extended-precision (``numpy.longdouble``)
copy of the network: in float64 the cancellation in J(+h) - J(-h) leaves
about 4e-11 of noise in every n_i, which would swamp the 1e-7 agreement
the checks ask for on small entries; in long double it is about 1e-14.

The error of entry i is |a_i - n_i| / max(|a_i| + |n_i|, floor): a
relative error, except that entries below ``floor`` in size (including a
pair that are both zero, such as the bias of a layer followed by BN) are
compared absolutely.
"""

import copy

import numpy as np

from .executor import Network

FLOOR = 1e-5


def relative_error(a, n, floor=FLOOR):
    """Entrywise |a - n| / max(|a| + |n|, floor)."""
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def numerical_gradients(net, X, y, h=1e-6, seed=0, keys=None):
    """Centred-difference gradients of ``net``'s train-mode cost.

    Parameters
    ----------
    net : Network
        Evaluated as it is (use a long double network for accuracy).
    X, y : ndarray
        The batch.
    h : float
        Step of the centred difference.
    seed : int
        Seed of the generator given to every evaluation, so stochastic
        ops (dropout) draw the same mask each time.
    keys : iterable of str, optional
        Params to differentiate; default all.
    """
    def cost():
        return net.loss(X, y, train=True, rng=np.random.default_rng(seed))

    return {key: centred_differences(cost, net.params[key], h)
            for key in keys or net.params}


def centred_differences(f, x, h=1e-6):
    """(f(x + h e_i) - f(x - h e_i)) / 2h for every entry i of ``x``.

    ``x`` is perturbed in place and restored; ``f`` takes no arguments
    and must read ``x``. The result is float64 whatever ``x``'s dtype.
    """
    g = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def check_network(net, X, y, h=1e-6, seed=0, floor=FLOOR):
    """Compare ``net``'s backward pass with numerical gradients.

    Returns
    -------
    dict of str -> dict
        Per param: ``error`` (worst entry), ``analytic`` and ``numeric``
        values at that entry, and ``max_abs`` (largest |analytic|).
    """
    net.loss(X, y, train=True, rng=np.random.default_rng(seed))
    analytic = net.backward()
    ref = Network(net.graph, l2=net.l2, dtype=np.longdouble)
    ref.load_state(net.state())
    numeric = numerical_gradients(ref, X.astype(np.longdouble), y, h=h,
                                  seed=seed)
    report = {}
    for key, a in analytic.items():
        n = numeric[key]
        err = relative_error(a.astype(np.float64), n, floor)
        i = np.unravel_index(np.argmax(err), err.shape)
        report[key] = {"error": float(err[i]), "analytic": float(a[i]),
                       "numeric": float(n[i]),
                       "max_abs": float(np.abs(a).max())}
    return report


def reduced_graph(graph, dims):
    """A copy of explicit graph JSON whose input has ``dims`` features."""
    graph = copy.deepcopy(graph)
    name = next(iter(graph["inputs"]))
    graph["inputs"] = {name: dims}
    return graph


def check_spec(spec, dims=10, batch=5, steps=3, l2_values=None, seed=0,
               eta=0.05, h=1e-6, floor=FLOOR):
    """Gradient-check a spec's network on a reduced copy.

    The input is cut to ``dims`` features, random data of ``batch``
    examples is drawn, and ``steps`` SGD updates are taken first so the
    check is not made at the initialisation (where BN's gamma is 1 and
    beta 0). Each L2 strength of ``l2_values`` is checked in turn.

    Returns
    -------
    list of dict
        One row per (l2, param): ``l2``, ``param``, ``shape``,
        ``error``, ``analytic``, ``numeric``, ``max_abs``.
    """
    if l2_values is None:
        l2_values = sorted({0.0, spec["loss"]["l2"] or 0.01})
    graph = reduced_graph(spec["graph"], dims)
    classes = None
    rows = []
    for l2 in l2_values:
        rng = np.random.default_rng(seed)
        net = Network(graph, l2=l2, loss=spec["loss"]["op"], seed=seed,
                      dtype="float64")
        classes = classes or net.widths[graph["output"]]
        X = rng.standard_normal((batch, dims))
        y = rng.integers(0, classes, batch)
        for _ in range(steps):
            net.loss(X, y, train=True, rng=np.random.default_rng(seed))
            for key, g in net.backward().items():
                net.params[key] -= eta * g
        for key, r in check_network(net, X, y, h=h, seed=seed,
                                    floor=floor).items():
            rows.append({"l2": l2, "param": key,
                         "shape": tuple(net.params[key].shape), **r})
    return rows
