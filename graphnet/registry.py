"""Name-to-class registries for ops, optimizers, schedules and more."""

from .errors import SpecError, choices_hint


class Registry(dict):
    """A dict filled by a decorator; duplicates and unknown names are errors.

    Parameters
    ----------
    kind : str
        What the registry holds, for messages ("op", "optimizer", ...).
    """

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def register(self, name):
        """Class decorator that registers ``cls`` under ``name``."""
        def decorate(cls):
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.kind_name = name
            self[name] = cls
            return cls
        return decorate

    def lookup(self, name, path):
        """Return the class for ``name`` or raise SpecError at ``path``."""
        if not isinstance(name, str) or name not in self:
            raise SpecError(path, f"unknown {self.kind} {name!r}"
                                  f"{choices_hint(name, self)}")
        return self[name]
