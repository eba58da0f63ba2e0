"""The executor and the Python API, including one example worked by hand."""

import numpy as np
import pytest

import graphnet as gn

from conftest import SPECS, TEST_SPECS, mlp


def tiny_graph():
    """x (2 features) -> linear(2 units) -> relu -> add with x -> linear(2)."""
    return {"inputs": {"x": 2}, "nodes": [
        {"name": "fc", "op": "linear", "inputs": ["x"], "units": 2,
         "init": "he", "bias": True},
        {"name": "h", "op": "relu", "inputs": ["fc"]},
        {"name": "s", "op": "add", "inputs": ["h", "x"]},
        {"name": "out", "op": "linear", "inputs": ["s"], "units": 2,
         "init": "he", "bias": False}], "output": "out"}


def test_worked_example_by_hand():
    net = gn.Network(tiny_graph(), l2=0.1, dtype="float64")
    net.params["fc.W"][...] = [[1.0, -1.0], [0.5, 2.0]]
    net.params["fc.b"][...] = [0.0, -1.0]
    net.params["out.W"][...] = [[1.0, 0.0], [0.0, 1.0]]
    X = np.array([[1.0, 2.0]])
    y = np.array([1])
    # fc = [1 - 2 + 0, 0.5 + 4 - 1] = [-1, 3.5]; h = [0, 3.5]
    # s = h + x = [1, 5.5]; scores = s (identity W)
    # p = softmax([1, 5.5]); loss = -log p1 = log(1 + e^-4.5)
    loss = np.log1p(np.exp(-4.5))
    l2 = 0.1 * (1 + 1 + 0.25 + 4 + 1 + 1)
    assert net.loss(X, y) == pytest.approx(loss + l2, rel=1e-12)
    g = net.backward()
    p0 = 1 / (1 + np.exp(4.5))
    ds = np.array([p0, -p0])             # p - onehot(y)
    assert np.allclose(g["out.W"], np.outer(ds, [1, 5.5]) + 0.2 * np.eye(2))
    # ds flows to s, then to h (masked by relu: fc[0] < 0) and to x
    dfc = ds * np.array([0.0, 1.0])
    assert np.allclose(g["fc.b"], dfc)
    assert np.allclose(g["fc.W"], np.outer(dfc, [1, 2]) +
                       0.2 * net.params["fc.W"])


def test_api_shapes_match_design():
    spec = gn.load_spec(SPECS / "a3" / "3layer-bn.json",
                        overrides={"loss.l2": 0.01})
    net = gn.build(spec, seed=0)
    assert net.params["fc1.W"].shape == (50, 3072)
    assert net.params["fc1.b"].shape == (50,)
    assert set(net.buffers) == {"bn1.mean", "bn1.var", "bn2.mean", "bn2.var"}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 3072)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    cost = net.loss(X, y, train=True)
    assert np.isfinite(cost) and cost > np.log(10) * 0.5
    grads = net.backward()
    assert list(grads) == list(net.params)
    assert all(grads[k].shape == net.params[k].shape for k in grads)
    assert all(grads[k].dtype == np.float32 for k in grads)
    probs = net.predict_proba(X)
    assert probs.shape == (8, 10)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_same_seed_same_init_different_seed_different():
    spec = gn.load_spec(mlp([20]))
    a, b, c = gn.build(spec, seed=1), gn.build(spec, seed=1), gn.build(spec, seed=2)
    assert np.array_equal(a.params["fc1.W"], b.params["fc1.W"])
    assert not np.array_equal(a.params["fc1.W"], c.params["fc1.W"])


def test_test_mode_uses_population_statistics():
    spec = gn.load_spec(mlp([4], "batchnorm"))
    net = gn.build(spec, dtype="float64")
    X = np.random.default_rng(0).normal(3.0, 2.0, (50, 3072))
    net.buffers["bn1.mean"][...] = 100.0   # absurd statistics
    train_scores = net.forward(X, train=True)
    test_scores = net.forward(X, train=False)
    assert not np.allclose(train_scores, test_scores)
    # a single example in test mode is the same as inside a batch
    assert np.allclose(net.forward(X[:1]), test_scores[:1])


def test_evaluate_matches_loss_in_test_mode():
    spec = gn.load_spec(TEST_SPECS / "residual.json")
    net = gn.build(spec, dtype="float64")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3072)), rng.integers(0, 10, 30)
    result = net.evaluate(X, y, chunk=7)
    assert result["cost"] == pytest.approx(net.loss(X, y, train=False))
    assert result["accuracy"] == np.mean(net.predict_proba(X).argmax(1) == y)


def test_backward_without_loss_is_an_error():
    net = gn.build(gn.load_spec(mlp([3])))
    with pytest.raises(RuntimeError, match="loss"):
        net.backward()


@pytest.mark.parametrize("dtype, order", [("float32", "F"),
                                          ("float64", "C")])
def test_weights_and_their_gradients_share_a_memory_order(dtype, order):
    # float32 weights are column-major (W.T, the operand of the first
    # layer's two big products, is contiguous), float64 ones row-major; a
    # gradient in the other order would make every update a strided pass
    flag = "f_contiguous" if order == "F" else "c_contiguous"
    net = gn.build(gn.load_spec(mlp([20, 10])), seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 3072)), rng.integers(0, 10, 6)
    net.loss(X, y, train=True)
    grads = net.backward()
    for key in net.decayed:
        assert getattr(net.params[key].flags, flag), key
        assert getattr(grads[key].flags, flag), key
    expected = sum(np.sum(net.params[k].astype(float) ** 2)
                   for k in net.decayed)
    assert net.l2_term() == pytest.approx(net.l2 * expected, rel=1e-6)
    W = net.params["fc1.W"]
    other = "C" if order == "F" else "F"
    net.load_state({k: np.array(v, order=other)
                    for k, v in net.state().items()})
    assert net.params["fc1.W"] is W and getattr(W.flags, flag)
