"""Whole-network gradient checks, and proof that the checks can fail."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.gradcheck import check_spec, relative_error
from graphnet.ops.batchnorm import BatchNorm

from conftest import TEST_SPECS, mlp

NETS = {
    "2-layer": mlp([50]),
    "3-layer": mlp([50, 50]),
    "3-layer BN": mlp([50, 50], "batchnorm"),
    "4-layer": mlp([50, 30, 20]),
    "4-layer BN": mlp([50, 30, 20], "batchnorm"),
    "9-layer": mlp([50, 30, 20, 20, 10, 10, 10, 10]),
    "9-layer BN": mlp([50, 30, 20, 20, 10, 10, 10, 10], "batchnorm"),
    "3-layer BN after ReLU": mlp([50, 50], "batchnorm", "after_relu"),
    "3-layer dropout": mlp([30, 30], dropout=0.3),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_network_gradients(name):
    spec = gn.load_spec(NETS[name])
    rows = check_spec(spec, dims=10, batch=5, steps=3)
    assert {r["l2"] for r in rows} == {0.0, 0.005}
    assert {r["param"] for r in rows} == set(gn.build(spec).params)
    worst = max(rows, key=lambda r: r["error"])
    assert worst["error"] < 1e-7, worst


def test_residual_network_gradients():
    spec = gn.load_spec(TEST_SPECS / "residual.json")
    net = gn.build(spec)
    # both skips fan out: h1 feeds fc2 and add3, h3 feeds fc4 and add5
    assert sorted(net.dag.successors("h1")) == ["add3", "fc2"]
    assert sorted(net.dag.successors("h3")) == ["add5", "fc4"]
    rows = check_spec(spec)
    assert max(r["error"] for r in rows) < 1e-7


def test_wrong_backward_is_caught(monkeypatch):
    """A BN backward that forgets the mean-of-gradient term must fail."""
    def wrong(self, dout, cache):
        xhat, inv_std, gamma, train, _, _ = cache
        dgamma = np.einsum("ij,ij->j", dout, xhat)
        n = dout.shape[0]
        dx = (dout * gamma - xhat * (dgamma * gamma / n)) * inv_std
        return [dx], {"gamma": dgamma, "beta": dout.sum(axis=0)}

    monkeypatch.setattr(BatchNorm, "backward", wrong)
    rows = check_spec(gn.load_spec(NETS["3-layer BN"]))
    bad = {r["param"] for r in rows if r["error"] > 1e-3}
    assert "fc1.W" in bad and "bn2.gamma" not in bad


def test_a_lost_skip_gradient_is_caught(monkeypatch):
    """An add that passed its gradient to one input only must fail."""
    spec = gn.load_spec(TEST_SPECS / "residual.json")
    rows_ok = check_spec(spec, steps=1)
    assert max(r["error"] for r in rows_ok) < 1e-7

    def broken_add_backward(self, dout, cache):
        return [dout] + [np.zeros_like(dout)] * (cache - 1), {}

    from graphnet.ops.add import Add
    monkeypatch.setattr(Add, "backward", broken_add_backward)
    rows = check_spec(spec, steps=1)
    assert max(r["error"] for r in rows) > 1e-2


def test_relative_error_counts_both_zero_as_agreement():
    assert relative_error(np.array(0.0), np.array(0.0)) == 0
    assert relative_error(np.array(1.0), np.array(1.0 + 1e-9)) < 1e-9
    assert relative_error(np.array(1.0), np.array(2.0)) > 0.3


def test_cli_gradcheck_passes_and_fails(monkeypatch, capsys):
    from graphnet.cli import main
    path = str(TEST_SPECS / "residual.json")
    assert main(["gradcheck", path, "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "bn3.gamma" in out and "pass" in out

    monkeypatch.setattr(BatchNorm, "backward",
                        lambda self, dout, cache: (
                            [dout * cache[2] * cache[1]],
                            {"gamma": np.einsum("ij,ij->j", dout, cache[0]),
                             "beta": dout.sum(axis=0)}))
    assert main(["gradcheck", path, "--steps", "1"]) == 1
    assert "FAIL" in capsys.readouterr().out
