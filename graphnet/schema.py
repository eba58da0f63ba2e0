"""A small declarative schema for JSON values, with path-aware errors.

Each field type checks one JSON value, fills defaults and returns the
normalised value, or raises ``SpecError`` naming the JSON path, what was
expected and what was found. Ops, optimizers, schedules and initializers
declare their attributes with these fields, so the spec validator is
driven by the registries rather than by a hand-kept list.

A hand-written schema was chosen over jsonschema or pydantic because the
messages must name graphnet's own concepts (valid op names, near-miss
keys) in one line, and the whole checker is shorter than the adapter
code either library would need.
"""

import copy
import json
import math
import re

from .errors import SpecError, choices_hint, describe

REQUIRED = object()


# a dot is allowed: dotted keys (a sweep's "loss.l2") name paths themselves
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def join(path, key):
    """Extend a JSON path by an object key or a list index.

    Plain keys are dotted (``graph.nodes[0].units``); any other key is
    written as a quoted index (``["a[0]"]``, ``[""]``), so an error
    never points at a list that is not there.
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


class Field:
    """Base of all field types; ``default`` of REQUIRED means mandatory."""

    def __init__(self, default=REQUIRED, doc=""):
        self.default = default
        self.doc = doc

    def check(self, value, path):
        raise NotImplementedError


class Number(Field):
    """A finite int or float within optional bounds.

    ``low``/``high`` are inclusive unless ``open_low``/``open_high``.
    """

    def __init__(self, default=REQUIRED, low=None, high=None, integer=False,
                 open_low=False, open_high=False, doc=""):
        super().__init__(default, doc)
        self.low, self.high, self.integer = low, high, integer
        self.open_low, self.open_high = open_low, open_high

    def expected(self):
        kind = "an integer" if self.integer else "a number"
        lo = "" if self.low is None else (
            f"{'>' if self.open_low else '>='} {self.low}")
        hi = "" if self.high is None else (
            f"{'<' if self.open_high else '<='} {self.high}")
        bounds = " and ".join(b for b in (lo, hi) if b)
        return f"{kind} {bounds}".strip()

    def check(self, value, path):
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not ok_type or (self.integer and not isinstance(value, int)):
            raise SpecError(path, f"expected {self.expected()}, "
                                  f"found {describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(path, f"expected {self.expected()}, found {value}")
        low_bad = self.low is not None and (
            value <= self.low if self.open_low else value < self.low)
        high_bad = self.high is not None and (
            value >= self.high if self.open_high else value > self.high)
        if low_bad or high_bad:
            raise SpecError(path, f"expected {self.expected()}, found {value}")
        return value


class Bool(Field):
    """true or false."""

    def check(self, value, path):
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, "
                                  f"found {describe(value)}")
        return value


class String(Field):
    """A string, optionally one of fixed ``choices``."""

    def __init__(self, default=REQUIRED, choices=None, doc=""):
        super().__init__(default, doc)
        self.choices = choices

    def check(self, value, path):
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, found {describe(value)}")
        if self.choices is not None and value not in self.choices:
            raise SpecError(path, f"unknown value {value!r}"
                                  f"{choices_hint(value, self.choices)}")
        return value


class Nullable(Field):
    """``null`` or a value of the wrapped field."""

    def __init__(self, inner, default=None, doc=""):
        super().__init__(default, doc)
        self.inner = inner

    def check(self, value, path):
        return None if value is None else self.inner.check(value, path)


class List(Field):
    """A JSON array whose items all match ``item``."""

    def __init__(self, item, default=REQUIRED, min_len=0, doc=""):
        super().__init__(default, doc)
        self.item, self.min_len = item, min_len

    def check(self, value, path):
        if not isinstance(value, list):
            raise SpecError(path, f"expected a list, found {describe(value)}")
        if len(value) < self.min_len:
            raise SpecError(path, f"expected at least {self.min_len} item(s), "
                                  f"found {len(value)}")
        return [self.item.check(v, join(path, i)) for i, v in enumerate(value)]


class Object(Field):
    """A JSON object with known keys; unknown keys are errors with hints."""

    def __init__(self, fields, default=REQUIRED, doc=""):
        super().__init__(default, doc)
        self.fields = fields

    def check(self, value, path):
        if not isinstance(value, dict):
            raise SpecError(path, f"expected an object, found {describe(value)}")
        check_keys(value, self.fields, path)
        return fill(value, self.fields, path)


class Map(Field):
    """A JSON object with free keys and values of one field type."""

    def __init__(self, value_field, default=REQUIRED, min_len=0, doc=""):
        super().__init__(default, doc)
        self.value_field, self.min_len = value_field, min_len

    def check(self, value, path):
        if not isinstance(value, dict):
            raise SpecError(path, f"expected an object, found {describe(value)}")
        if len(value) < self.min_len:
            raise SpecError(path, f"expected at least {self.min_len} entry, "
                                  f"found none")
        return {k: self.value_field.check(v, join(path, k))
                for k, v in value.items()}


class Any(Field):
    """Accept any JSON value; ``validate`` is called for extra checks."""

    def __init__(self, validate=None, default=REQUIRED, doc=""):
        super().__init__(default, doc)
        self.validate = validate

    def check(self, value, path):
        return self.validate(value, path) if self.validate else value


def check_keys(value, fields, path):
    """Raise SpecError for a key of ``value`` not in ``fields``."""
    for key in value:
        if key not in fields:
            raise SpecError(join(path, key), f"unknown key {key!r}"
                                             f"{choices_hint(key, fields)}")


def fill(value, fields, path):
    """Check every field of an object and fill defaults, in field order."""
    out = {}
    for key, field in fields.items():
        if key in value and value[key] is None and field.default is None:
            out[key] = None   # an explicit null is the default, as written
        elif key in value:
            out[key] = field.check(value[key], join(path, key))
        elif field.default is REQUIRED:
            raise SpecError(join(path, key), "required key is missing")
        elif field.default is None:
            out[key] = None
        else:
            # defaults pass through the field too, so nested defaults fill
            out[key] = field.check(copy.deepcopy(field.default),
                                   join(path, key))
    return out
