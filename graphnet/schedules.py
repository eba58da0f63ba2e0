"""Learning-rate schedules: eta as a function of the update step.

Each schedule is a small class registered by ``type``, built from its
validated spec section, and called with the 0-based update count ``t``.
"""

import math

from .registry import Registry
from .schema import Number

SCHEDULES = Registry("schedule")

_ETA = Number(low=0, open_low=True)


class Schedule:
    """Base: ``fields`` is the schema of the spec section besides ``type``."""

    fields = {}

    def __init__(self, cfg, total_steps=None):
        self.cfg = cfg
        self.total_steps = total_steps
        for key in self.fields:
            setattr(self, key, cfg[key])

    def length(self):
        """Steps this schedule defines by itself, or None."""
        return None

    def __call__(self, t):
        raise NotImplementedError


@SCHEDULES.register("constant")
class Constant(Schedule):
    """eta_t = eta."""

    fields = {"eta": _ETA}

    def __call__(self, t):
        return self.eta


@SCHEDULES.register("cyclic")
class Cyclic(Schedule):
    """Triangular cyclical rate (Smith, 2015).

    One cycle is 2 * step_size updates: eta rises linearly from eta_min to
    eta_max over step_size updates, then falls back. With ``decay`` below
    1 the amplitude of cycle l is (eta_max - eta_min) * decay^l (1/2 is
    the "triangular2" policy).
    """

    fields = {
        "eta_min": _ETA,
        "eta_max": _ETA,
        "step_size": Number(integer=True, low=1),
        "cycles": Number(default=None, integer=True, low=1),
        "decay": Number(default=1.0, low=0, high=1, open_low=True),
    }

    def length(self):
        return None if self.cycles is None else 2 * self.step_size * self.cycles

    def __call__(self, t):
        cycle, pos = divmod(t, 2 * self.step_size)
        rise = pos if pos <= self.step_size else 2 * self.step_size - pos
        amplitude = (self.eta_max - self.eta_min) * self.decay ** cycle
        return self.eta_min + amplitude * rise / self.step_size


@SCHEDULES.register("step")
class StepDecay(Schedule):
    """eta_t = eta * gamma^floor(t / every)."""

    fields = {"eta": _ETA, "every": Number(integer=True, low=1),
              "gamma": Number(default=0.1, low=0, high=1, open_low=True)}

    def __call__(self, t):
        return self.eta * self.gamma ** (t // self.every)


@SCHEDULES.register("exponential")
class Exponential(Schedule):
    """eta_t = eta * gamma^t (gamma per update, e.g. 0.9995)."""

    fields = {"eta": _ETA,
              "gamma": Number(low=0, high=1, open_low=True)}

    def __call__(self, t):
        return self.eta * self.gamma ** t


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """Cosine annealing from eta_max to eta_min over the whole run.

    eta_t = eta_min + (eta_max - eta_min) (1 + cos(pi t / T)) / 2,
    T the run's total number of updates.
    """

    fields = {"eta_max": _ETA, "eta_min": Number(default=0.0, low=0)}

    def __call__(self, t):
        frac = min(t / max(self.total_steps or 1, 1), 1.0)
        span = self.eta_max - self.eta_min
        return self.eta_min + span * (1 + math.cos(math.pi * frac)) / 2


def make_schedule(cfg, total_steps=None):
    """Build the schedule a validated ``train.schedule`` section names."""
    return SCHEDULES[cfg["type"]](cfg, total_steps)
