"""Shared fixtures: spec builders and the real data location."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TEST_SPECS = Path(__file__).resolve().parent / "specs"


def real_data_dir():
    """The folder holding cifar-10-batches-py, or None."""
    for candidate in (os.environ.get("GRAPHNET_DATA"),
                      str(ROOT.parent / "shared" / "data")):
        if candidate and (Path(candidate) / "cifar-10-batches-py").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def real_data():
    path = real_data_dir()
    if path is None:
        pytest.skip("real CIFAR-10 not found (set GRAPHNET_DATA)")
    return path


def mlp(hidden, norm="none", position="before_relu", **extra):
    """A minimal spec dict for an MLP template."""
    return {"graph": {"mlp": {"hidden": hidden, "norm": norm,
                              "norm_position": position, **extra}},
            "loss": {"l2": 0.005}}
