"""``python -m graphnet`` is the ``graphnet`` command."""

from .cli import run

run()
