"""Every registered op's backward rule against centred differences.

The test is parametrized over the registry: an op added without a case
here fails ``test_every_op_has_a_case``.
"""

import numpy as np
import pytest

from graphnet.ops import OPS, Context
from graphnet.gradcheck import centred_differences as numeric
from graphnet.gradcheck import relative_error
from graphnet.graph import make_op

# op -> (node attributes, number of inputs, train modes to check)
CASES = {
    "linear": ({"units": 4, "init": "he", "bias": True}, 1, (True,)),
    "relu": ({}, 1, (True,)),
    "batchnorm": ({"eps": 1e-5}, 1, (True, False)),
    "add": ({}, 3, (True,)),
    "dropout": ({"p": 0.3}, 1, (True, False)),
}


def rel_err(a, b):
    return np.max(relative_error(a.astype(np.float64), b.astype(np.float64)))


def test_every_op_has_a_case():
    assert sorted(CASES) == sorted(OPS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_gradients(name):
    attrs, k, modes = CASES[name]
    rng = np.random.default_rng(0)
    op = make_op({"name": "node", "op": name, "inputs": ["x"] * k, **attrs})
    n, d = 6, 5
    # long double keeps the centred differences' rounding noise near 1e-15
    ld = np.longdouble
    xs = [rng.standard_normal((n, d)).astype(ld) for _ in range(k)]
    arrays = op.create([d] * k, rng, ld)
    for key in arrays:  # move away from the initial ones and zeros
        arrays[key] = arrays[key] + 0.3 * rng.standard_normal(arrays[key].shape)
    if "var" in arrays:
        arrays["var"] = np.abs(arrays["var"]) + 0.5
    m = op.infer_width([d] * k)
    R = rng.standard_normal((n, m)).astype(ld)
    for train in modes:
        def cost():
            ctx = Context(train, np.random.default_rng(1))
            return np.sum(op.forward(xs, arrays, ctx)[0] * R)

        out, cache = op.forward(xs, arrays, Context(train,
                                                    np.random.default_rng(1)))
        assert out.shape == (n, m)
        dxs, dparams = op.backward(R, cache)
        assert len(dxs) == k
        for x, dx in zip(xs, dxs):
            assert rel_err(dx, numeric(cost, x)) < 1e-7
        assert set(dparams) == set(op.params)
        for key, g in dparams.items():
            assert g.shape == arrays[key].shape
            assert rel_err(g, numeric(cost, arrays[key])) < 1e-7


def test_linear_without_bias_has_only_W():
    op = make_op({"name": "fc", "op": "linear", "inputs": ["x"], "units": 3,
                  "init": "he", "bias": False})
    arrays = op.create([4], np.random.default_rng(0), np.float64)
    assert list(arrays) == ["W"] and op.count_params([4]) == 12


def test_batchnorm_train_mode_normalises():
    op = make_op({"name": "bn", "op": "batchnorm", "inputs": ["x"],
                  "eps": 1e-10})
    arrays = op.create([3], None, np.float64)
    x = np.random.default_rng(0).normal(5.0, 3.0, (200, 3))
    out, cache = op.forward([x], arrays, Context(True))
    assert np.allclose(out.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(out.var(axis=0), 1, atol=1e-8)  # biased variance
    mu, var = op.batch_stats(cache)
    assert np.allclose(var, x.var(axis=0))


def test_dropout_is_identity_in_test_mode_and_scales_in_train():
    op = make_op({"name": "d", "op": "dropout", "inputs": ["x"], "p": 0.5})
    x = np.ones((1000, 50))
    out, _ = op.forward([x], {}, Context(False))
    assert out is x
    out, _ = op.forward([x], {}, Context(True, np.random.default_rng(0)))
    assert set(np.unique(out)) == {0.0, 2.0}
    assert abs(out.mean() - 1.0) < 0.02


def test_he_and_fixed_sigma_initialisation_scales():
    rng = np.random.default_rng(0)
    he = make_op({"name": "a", "op": "linear", "inputs": ["x"], "units": 200,
                  "init": "he", "bias": True})
    W = he.create([800], rng, np.float64)["W"]
    assert abs(W.std() - np.sqrt(2 / 800)) < 0.002
    fixed = make_op({"name": "b", "op": "linear", "inputs": ["x"],
                     "units": 200, "init": {"normal": 1e-3}, "bias": True})
    W = fixed.create([800], rng, np.float64)["W"]
    assert abs(W.std() - 1e-3) < 2e-5
