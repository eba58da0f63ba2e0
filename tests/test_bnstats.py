"""BN population statistics: EMA, PreciseBN and adaptive BN."""

import numpy as np
import pytest

import graphnet as gn
from graphnet import bnstats
from graphnet.data import Dataset
from graphnet.errors import GraphnetError, SpecError
from graphnet.executor import Network
from graphnet.trainer import Trainer

from conftest import mlp

D = 4


def tiny(nodes):
    """A network on D features from explicit nodes ending in scores."""
    nodes = nodes + [{"name": "scores", "op": "linear",
                      "inputs": [nodes[-1]["name"]], "units": 3,
                      "init": "he", "bias": True}]
    graph = {"inputs": {"x": D}, "nodes": nodes, "output": "scores"}
    return Network(graph, seed=0, dtype="float64")


BN_ON_X = [{"name": "bn1", "op": "batchnorm", "inputs": ["x"], "eps": 1e-5}]


def dataset(rng, n_train=300, n_test=100, d=3072):
    X = rng.standard_normal((n_train, d)).astype(np.float32)
    T = (2 + 3 * rng.standard_normal((n_test, d))).astype(np.float32)
    y = rng.integers(0, 10, n_train)
    return Dataset(X, y, X[:50], y[:50], T, rng.integers(0, 10, n_test))


def small_spec(bn_stats, **train):
    raw = mlp([16, 16], "batchnorm", dropout=0.2)
    raw["data"] = {"train": 300, "val": 50}
    raw["train"] = {"steps": 12, "batch_size": 50, "bn_stats": bn_stats,
                    "schedule": {"type": "constant", "eta": 0.05}, **train}
    return gn.load_spec(raw)


def test_population_stats_average_batch_means_and_variances():
    rng = np.random.default_rng(0)
    # batches with different means: the pooled variance is much larger
    batches = [rng.standard_normal((10, D)) + 5 * k for k in range(3)]
    net = tiny(BN_ON_X)
    stats = bnstats.population_stats(net, batches)
    mean, var = stats["bn1"]
    np.testing.assert_allclose(
        mean, np.mean([b.mean(0) for b in batches], axis=0))
    np.testing.assert_allclose(var, np.mean([b.var(0) for b in batches],
                                            axis=0))
    pooled = np.concatenate(batches).var(0)
    assert np.all(pooled > 5 * var)


def test_frozen_pass_has_no_dropout_and_ignores_stored_stats():
    rng = np.random.default_rng(1)
    net = tiny([{"name": "drop", "op": "dropout", "inputs": ["x"],
                 "p": 0.5}] + [dict(BN_ON_X[0], inputs=["drop"])])
    net.buffers["bn1.mean"][...] = 100.0
    X = rng.standard_normal((20, D))
    mu, var = bnstats.batch_statistics(net, X)["bn1"]
    np.testing.assert_allclose(mu, X.mean(0))
    np.testing.assert_allclose(var, X.var(0))


def test_second_bn_sees_the_first_normalised_by_batch_stats():
    rng = np.random.default_rng(2)
    net = tiny(BN_ON_X + [{"name": "bn2", "op": "batchnorm",
                           "inputs": ["bn1"], "eps": 1e-5}])
    net.buffers["bn1.var"][...] = 1e6    # must not be used
    X = 3 + 2 * rng.standard_normal((50, D))
    mu, var = bnstats.batch_statistics(net, X)["bn2"]
    np.testing.assert_allclose(mu, 0, atol=1e-12)
    np.testing.assert_allclose(var, X.var(0) / (X.var(0) + 1e-5))


def test_sample_batches_draw_without_replacement_within_a_pass():
    rng = np.random.default_rng(3)
    chunks = bnstats.sample_batches(10, 3, 5, rng)
    assert [len(c) for c in chunks] == [3] * 5
    assert len(set(np.concatenate(chunks[:3]))) == 9
    assert len(set(np.concatenate(chunks[3:]))) == 6


def test_precise_trains_the_same_params_as_ema(tmp_path):
    rng = np.random.default_rng(4)
    data = dataset(rng)
    nets = {}
    for kind, cfg in (("ema", {"type": "ema"}),
                      ("precise", {"type": "precise", "batches": 4,
                                   "per_epoch": 2})):
        (tmp_path / kind).mkdir()
        trainer = Trainer(small_spec(cfg), data, tmp_path / kind)
        trainer.run()
        nets[kind] = trainer.net
    ema, precise = nets["ema"], nets["precise"]
    for key in ema.params:
        np.testing.assert_array_equal(ema.params[key], precise.params[key])
    assert not np.allclose(ema.buffers["bn1.var"],
                           precise.buffers["bn1.var"])


def test_precise_estimates_per_epoch_and_at_the_end(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bnstats.Precise, "estimate",
                        lambda self, trainer: (
                            calls.append(trainer.step),
                            setattr(self, "done_at", trainer.step)))
    spec = small_spec({"type": "precise", "batches": 2, "per_epoch": 2},
                      steps=13)
    Trainer(spec, dataset(np.random.default_rng(5)), tmp_path).run()
    # 6 steps per epoch, 2 estimates per epoch: every 3 steps, and step 13
    assert calls == [3, 6, 9, 12, 13]


def test_precise_final_estimate_matches_a_fresh_one(tmp_path):
    rng = np.random.default_rng(6)
    data = dataset(rng)
    spec = small_spec({"type": "precise", "batches": 6, "per_epoch": 0})
    trainer = Trainer(spec, data, tmp_path)
    trainer.run()
    stored = {k: v.copy() for k, v in trainer.net.buffers.items()}
    bnstats.reestimate(trainer.net, spec, data, "precise", seed=1)
    # all 6 batches of one pass: the first layer's mean is the mean of
    # all rows whatever the batches; variances depend on their make-up
    np.testing.assert_allclose(trainer.net.buffers["bn1.mean"],
                               stored["bn1.mean"], rtol=1e-5, atol=1e-5)
    for key, value in stored.items():
        np.testing.assert_allclose(trainer.net.buffers[key], value,
                                   rtol=0.2, atol=0.05)
    expect = (data.X_train.astype(np.float64) @ trainer.net.params[
        "fc1.W"].T + trainer.net.params["fc1.b"]).mean(0)
    np.testing.assert_allclose(stored["bn1.mean"], expect, rtol=1e-4,
                               atol=1e-4)


def test_adaptive_uses_the_test_images():
    rng = np.random.default_rng(7)
    data = dataset(rng, n_test=100)
    spec = small_spec({"type": "ema"})
    net = gn.build(spec)
    stats = bnstats.reestimate(net, spec, data, "adaptive")
    mean = net.buffers["bn1.mean"]
    np.testing.assert_allclose(mean, stats["bn1"][0], rtol=1e-6)
    np.testing.assert_allclose(net.buffers["bn1.var"], stats["bn1"][1],
                               rtol=1e-6)
    # two batches of 50 make one pass over all 100 test images
    expect = (data.X_test.astype(np.float64) @ net.params["fc1.W"].T
              + net.params["fc1.b"]).mean(0)
    np.testing.assert_allclose(mean, expect, rtol=1e-4, atol=1e-4)
    precise = bnstats.reestimate(gn.build(spec), spec, data, "precise")
    assert not np.allclose(precise["bn1"][0], stats["bn1"][0], atol=0.1)


def test_adaptive_with_augmentation_changes_the_estimate():
    rng = np.random.default_rng(8)
    data = dataset(rng)
    spec = small_spec({"type": "ema"})
    plain = bnstats.reestimate(gn.build(spec), spec, data, "adaptive")
    flipped = bnstats.reestimate(gn.build(spec), spec, data, "adaptive",
                                 augment={"flip": 1.0, "shift": 0})
    again = bnstats.reestimate(gn.build(spec), spec, data, "adaptive",
                               augment={"flip": 1.0, "shift": 0}, passes=3)
    assert not np.allclose(plain["bn1"][0], flipped["bn1"][0])
    # every image is flipped in every pass: three passes agree with one
    np.testing.assert_allclose(again["bn1"][0], flipped["bn1"][0],
                               rtol=1e-5, atol=1e-6)


def test_ema_mode_leaves_the_statistics():
    spec = small_spec({"type": "ema"})
    net = gn.build(spec)
    net.buffers["bn1.mean"][...] = 7.0
    data = dataset(np.random.default_rng(9))
    assert bnstats.reestimate(net, spec, data, "ema") == {}
    assert np.all(net.buffers["bn1.mean"] == 7.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "precse"}, "unknown mode 'precse'; did you mean 'precise'"),
    ({"mode": "adaptive", "passes": 0}, "passes: expected an integer >= 1"),
    ({"mode": "adaptive", "augment": {"flop": 1}}, "found {'flop': 1}"),
])
def test_reestimate_rejects_bad_arguments(kwargs, match):
    spec = small_spec({"type": "ema"})
    data = dataset(np.random.default_rng(10))
    with pytest.raises(GraphnetError, match=match):
        bnstats.reestimate(gn.build(spec), spec, data, **kwargs)


def test_precise_section_is_validated():
    spec = small_spec({"type": "precise"})
    assert spec["train"]["bn_stats"] == {"type": "precise", "alpha": 0.9,
                                         "batches": 200, "per_epoch": 1}
    with pytest.raises(SpecError, match=r"train\.bn_stats\.batches"):
        small_spec({"type": "precise", "batches": 0})
    with pytest.raises(SpecError, match="unknown key 'per_epochs'"):
        small_spec({"type": "precise", "per_epochs": 2})
