"""Run folders: creation, atomic writes, checkpoints, models.

A run folder ``<out>/<name>-<YYYYmmdd-HHMMSS>/`` holds ``spec.json``,
``metrics.csv``, ``summary.json``, ``model.npz``, ``curves.png``, the
diagram ``network.svg`` and, while a run is unfinished, ``checkpoint.npz``.
Every file is written to a temporary name and renamed into place, so a
crash never leaves half a file; no folder is ever reused.
Arrays are stored with ``numpy.savez`` and read back with
``allow_pickle=False``, so loading a model cannot run code.
"""

import csv
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError, GraphnetError

METRICS = ("step", "epoch", "eta", "train_cost", "train_loss",
           "train_accuracy", "val_cost", "val_loss", "val_accuracy",
           "seconds")


def _file_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def new_run_dir(out, name):
    """Create and return a fresh ``<out>/<name>-<stamp>`` folder.

    When a folder of that stamp exists (two runs in one second), a
    suffix ``-2``, ``-3``... is added: a run never overwrites another.
    """
    out = Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            path = out / (f"{name}-{stamp}" if i == 1
                          else f"{name}-{stamp}-{i}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise GraphnetError(f"{out}: cannot create a run folder there "
                            f"({exc.strerror or exc})") from None
    raise OSError(f"no free run folder name under {out}")


def atomic_write(path, data, mode="w"):
    """Write text or bytes to ``path`` through a temporary file + rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would hide runs from others
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=2, default=_plain) + "\n")


def read_json_or_none(path):
    """Parsed JSON of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def save_npz(path, arrays):
    """Save a flat dict of arrays atomically, no pickled objects."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=".npz")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_npz(path):
    """Load a ``.npz`` file without pickle into a plain dict."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable graphnet array file "
                        f"({exc})") from None


def write_metrics(path, rows):
    """Write the metrics rows (dicts keyed by ``METRICS``) as CSV."""
    lines = [",".join(METRICS)]
    for row in rows:
        lines.append(",".join(_fmt(row.get(k)) for k in METRICS))
    atomic_write(path, "\n".join(lines) + "\n")


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.6g}"


def read_metrics(path):
    """Rows of a metrics.csv as dicts of floats (step as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append({k: (int(v) if k == "step" else float(v)) if v != "" else
                    None for k, v in row.items()})
    return out
