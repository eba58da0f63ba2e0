"""Ops: one small class each, registered by name in ``OPS``."""

from . import add, batchnorm, dropout, linear, relu  # noqa: F401  (register)
from .base import OPS, Context, Op

__all__ = ["OPS", "Context", "Op"]
