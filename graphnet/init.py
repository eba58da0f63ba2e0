"""Weight initializers: He, Xavier, or a fixed normal standard deviation.

A linear node's ``init`` is ``"he"``, ``"xavier"`` or ``{"normal": sigma}``.
Each initializer returns the standard deviation for a weight matrix of
``m`` output units and ``d`` input features; weights are then drawn from
N(0, sigma^2) by the network's seeded generator.
"""

import math

from .errors import SpecError, choices_hint, describe
from .schema import Number

INITIALIZERS = {
    # He et al. 2015: keeps the variance of ReLU activations constant.
    "he": lambda m, d: math.sqrt(2.0 / d),
    # Glorot and Bengio 2010, the 1/d form used with the study's nets.
    "xavier": lambda m, d: math.sqrt(1.0 / d),
}

_SIGMA = Number(low=0, open_low=True)


def check_init(value, path):
    """Validate an ``init`` attribute; return it normalised."""
    if isinstance(value, str):
        if value not in INITIALIZERS:
            raise SpecError(path, f"unknown init {value!r}"
                            f"{choices_hint(value, INITIALIZERS)}, or "
                            "{\"normal\": sigma} for a fixed sigma")
        return value
    if isinstance(value, dict) and list(value) == ["normal"]:
        return {"normal": _SIGMA.check(value["normal"], f"{path}.normal")}
    raise SpecError(path, "expected \"he\", \"xavier\" or {\"normal\": sigma}, "
                          f"found {describe(value)}")


def init_sigma(init, m, d):
    """Standard deviation for an (m, d) weight matrix under ``init``."""
    if isinstance(init, dict):
        return init["normal"]
    return INITIALIZERS[init](m, d)
