"""Typed errors.

Everything a user can get wrong raises a subclass of ``GraphnetError``
(itself a ``ValueError``). The message says where the problem is, what was
expected and what was found; the CLI prints it and exits with code 2.
Failures while running (a diverging cost) raise ``RunError`` and exit 1.
"""

import difflib


class GraphnetError(ValueError):
    """Base class of the errors a user can cause and fix."""


class SpecError(GraphnetError):
    """A spec, an override or a sweep file is malformed.

    Parameters
    ----------
    path : str
        JSON path of the offending value, e.g. ``graph.nodes[3].inputs[0]``.
    message : str
        What was expected and what was found.
    """

    def __init__(self, path, message):
        self.path = path
        self.detail = message
        where = path if path else "spec"
        super().__init__(f"{where}: {message}")


class GraphError(GraphnetError):
    """The graph a spec describes cannot be compiled (cycle, shapes)."""


class DataError(GraphnetError):
    """Data files are missing, malformed or unsafe."""


class RunError(RuntimeError):
    """A run failed while executing (for example the cost diverged)."""


def choices_hint(found, choices):
    """Return '; did you mean X?; valid choices: a, b, c' for an unknown name."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(found), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint}; valid choices: {', '.join(choices)}"


def describe(value):
    """Short, readable rendering of a found value for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
