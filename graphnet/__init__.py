"""graphnet: neural networks as JSON graphs with hand-written gradients.

>>> import graphnet as gn
>>> spec = gn.load_spec("specs/a3/3layer-bn.json", overrides={"loss.l2": 0.01})
>>> net = gn.build(spec, seed=0)
"""

from .errors import DataError, GraphError, GraphnetError, RunError, SpecError
from .executor import Network, build
from .spec import Spec, load_spec

__version__ = "0.1.0"


def train(spec, out="runs", **kwargs):
    """Train a spec and write a run folder; see ``graphnet.trainer.train``."""
    from .trainer import train as _train
    return _train(spec, out=out, **kwargs)


__all__ = ["DataError", "GraphError", "GraphnetError", "Network", "RunError",
           "Spec", "SpecError", "build", "load_spec", "train", "__version__"]
