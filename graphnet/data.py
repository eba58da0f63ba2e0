"""CIFAR-10: find it, load it safely, split it, standardize it, augment it.

The data set is used in its official python layout: a folder
``cifar-10-batches-py/`` holding ``data_batch_1`` ... ``data_batch_5``,
``test_batch`` and ``batches.meta``, or the archive
``cifar-10-python.tar.gz`` that contains that folder. Each batch file is a
pickle of a dict with bytes keys: ``b'data'`` is a uint8 array (N, 3072),
one image per row, stored as three 32x32 planes (red, green, blue), each
row-major; ``b'labels'`` is a list of N ints in 0..9.

Pickles can run code while they load, so the batches are read with an
unpickler that admits only numpy's array reconstruction helpers, and a
file that asks for anything else is refused before it can do harm.

Shape letters: ``n`` examples, ``d`` features (3072 for CIFAR-10).
"""

import hashlib
import http.client
import logging
import numbers
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided
from tqdm import tqdm

from graphnet.errors import DataError, choices_hint, describe

try:  # numpy >= 2 keeps the helpers in numpy._core
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

logger = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
ENV_VAR = "GRAPHNET_DATA"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
N_FEATURES = 3072
N_CLASSES = 10
SIDE = 32
STD_FLOOR = 1e-8

# Everything the batch files may name, mapped to the object it stands for.
# The official files name the first, third and fourth entry; the others are
# what numpy 1.x/2.x write when a batch is re-saved from Python 3.
# Resolving from this table means find_class never imports anything.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}

DATASETS = ("cifar10",)
DTYPES = ("float32", "float64")
DATA_DEFAULTS = {
    "dataset": "cifar10",
    "train": 45000,
    "val": 5000,
    "preprocess": "standardize",
}

# preprocess name -> (divide raw values by, standardize with train stats)
PREPROCESS = {
    "none": (1.0, False),
    "scale": (255.0, False),
    "standardize": (255.0, True),
}

# float64 working block of 256 x 3072 (6 MB): larger blocks were slower,
# the allocator hands them back and they page-fault again each time.
_CHUNK_ROWS = 256
_TRANSFORM_THREADS = 2    # the gain stops at the memory bandwidth
_SCRATCH_MAX_ROWS = 4096  # larger augment calls get a fresh frame


# ---------------------------------------------------------------- finding


def _candidate_dirs(data_dir):
    """Folders to search, in order, each with the reason it is searched."""
    found = []
    if data_dir is not None:
        found.append((Path(data_dir).expanduser(), "data_dir argument"))
    env = os.environ.get(ENV_VAR)
    if env:
        found.append((Path(env).expanduser(), f"${ENV_VAR}"))
    cache = Path.home() / ".cache" / "graphnet"
    found.append((cache, "default cache"))

    unique, seen = [], set()
    for folder, why in found:
        key = os.path.abspath(folder)
        if key not in seen:
            seen.add(key)
            unique.append((folder, why))
    return unique


def _where_to_put(searched):
    """The part of an error message that says what was searched."""
    places = "; ".join(f"{folder} ({why})" for folder, why in searched)
    return (
        f"searched: {places}. Put the folder {FOLDER_NAME}/ or the archive "
        f"{ARCHIVE_NAME} (from {CIFAR10_URL}) into one of these folders, or "
        f"point --data-dir or ${ENV_VAR} at the folder that holds it"
    )


def _look_in(folder):
    """Return the folder holding an extracted set, extracting if needed."""
    if (folder / FOLDER_NAME).is_dir():
        return folder.resolve()
    # Accept being pointed at cifar-10-batches-py/ itself.
    if folder.name == FOLDER_NAME and (folder / TRAIN_FILES[0]).is_file():
        return folder.parent.resolve()
    archive = folder / ARCHIVE_NAME
    if archive.is_file():
        _warn_if_unofficial(archive)
        _extract(archive, folder)
        return folder.resolve()
    return None


def find_data_dir(data_dir=None, download=True):
    """Locate CIFAR-10 and return the folder that contains its batches.

    Searched in order: ``data_dir``, the ``GRAPHNET_DATA`` environment
    variable, ``~/.cache/graphnet``. In each, the extracted folder
    ``cifar-10-batches-py/`` is accepted, and so is the archive
    ``cifar-10-python.tar.gz``, which is then extracted next to itself.
    When nothing is found and ``download`` is true, the archive is
    downloaded into the first folder searched (``data_dir``, else
    ``GRAPHNET_DATA``, else the cache), checked against its published
    md5 and extracted. The progress bar is drawn only when stderr is a
    terminal.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder to look in first.
    download : bool
        Whether to fetch the archive when the data set is not found.

    Returns
    -------
    pathlib.Path
        Absolute path of the folder holding ``cifar-10-batches-py/``.

    Raises
    ------
    DataError
        The data set is missing (and may not or could not be downloaded),
        the archive is damaged or unsafe, or the download failed its md5.
    """
    searched = _candidate_dirs(data_dir)
    for folder, _ in searched:
        root = _look_in(folder)
        if root is not None:
            logger.debug("CIFAR-10 found in %s", root)
            return root

    if not download:
        raise DataError(f"CIFAR-10 not found and download is off; "
                        f"{_where_to_put(searched)}")
    target = searched[0][0]
    _download(target, searched)
    _extract(target / ARCHIVE_NAME, target)
    return target.resolve()


def _download(target, searched):
    """Fetch the archive into ``target`` through a temp file and a rename."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{ARCHIVE_NAME}.", suffix=".part", dir=target)
    except OSError as exc:
        raise DataError(f"cannot download CIFAR-10 into {target}: {exc}; "
                        f"{_where_to_put(searched)}") from exc
    tmp = Path(tmp_name)
    logger.info("downloading %s into %s", CIFAR10_URL, target)

    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(CIFAR10_URL, timeout=60) as resp:
                size = resp.headers.get("Content-Length")
                total = int(size) if size and size.isdigit() else None
                quiet = not sys.stderr.isatty()
                with tqdm(total=total, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=ARCHIVE_NAME,
                          disable=quiet) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != CIFAR10_MD5:
            raise DataError(
                f"the download from {CIFAR10_URL} has md5 "
                f"{digest.hexdigest()}, expected {CIFAR10_MD5}; it was "
                f"discarded (damaged transfer or changed file). Try again, "
                f"or put a good {ARCHIVE_NAME} into {target}")
        os.replace(tmp, target / ARCHIVE_NAME)
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"could not download {CIFAR10_URL} ({exc}); "
                        f"{_where_to_put(searched)}") from exc
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename


def _file_md5(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _warn_if_unofficial(archive):
    """Log, without refusing, a local archive that is not the official one."""
    try:
        md5 = _file_md5(archive)
    except OSError as exc:
        raise DataError(f"cannot read {archive}: {exc}") from exc
    if md5 != CIFAR10_MD5:
        logger.warning("%s has md5 %s, not the official %s; using it anyway",
                       archive, md5, CIFAR10_MD5)


def _check_member(member, archive):
    """Refuse a tar member that could land outside the extraction folder."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        raise DataError(f"{archive}: refusing member {name!r}: absolute "
                        f"paths and '..' are not extracted")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {name!r}: only "
                        f"regular files and folders are extracted")
    return member


def _extract(archive, dest):
    """Extract ``archive`` into ``dest`` atomically (temp folder, rename)."""
    logger.info("extracting %s", archive)
    final = dest / FOLDER_NAME
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=dest))
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {dest}: {exc}") from exc

    # The "data" filter (Python >= 3.11.4) is a second line of defence.
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [_check_member(m, archive) for m in tar.getmembers()]
            tar.extractall(tmp, members=members, **extra)
        if not (tmp / FOLDER_NAME).is_dir():
            raise DataError(f"{archive}: has no {FOLDER_NAME}/ folder inside")
        try:
            os.replace(tmp / FOLDER_NAME, final)
        except OSError:
            if not final.is_dir():  # else a parallel run extracted it first
                raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc} (damaged archive "
                        f"or unwritable folder)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- reading


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals listed in _SAFE_GLOBALS."""

    def __init__(self, file, source):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source}: refusing to load global '{module}.{name}'; "
                f"CIFAR-10 batch files hold only numpy arrays, lists, bytes "
                f"and ints, so this file is not one (or was tampered with)"
            ) from None


def _read_pickle(path):
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # a damaged pickle can fail in many ways
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); the "
            f"file is truncated or corrupted, replace it") from exc


def _entry(batch, key, path):
    """``batch[key]`` for a bytes or str key, or a DataError naming both."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: missing key b'{key}'; found keys "
                    f"{sorted(map(repr, batch))}")


def _check_batch(batch, path):
    """Return ``(data, labels)`` of a loaded batch after validating it."""
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict of arrays, found "
                        f"{type(batch).__name__}")
    data = _entry(batch, "data", path)
    labels = _entry(batch, "labels", path)

    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8
            and data.ndim == 2 and data.shape[1] == N_FEATURES):
        found = (f"{data.dtype} array of shape {data.shape}"
                 if isinstance(data, np.ndarray) else describe(data))
        raise DataError(f"{path}: b'data' should be a uint8 array of shape "
                        f"(N, {N_FEATURES}), found {found}")
    n = data.shape[0]
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: b'labels' is not a list of ints: {exc}") \
            from exc
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: b'labels' should be a list of ints, found "
                        f"{describe(labels)}")
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels for {n} images")
    bad = np.flatnonzero((y < 0) | (y >= N_CLASSES))
    if bad.size:
        raise DataError(f"{path}: labels must be in 0..{N_CLASSES - 1}, found "
                        f"{y[bad[0]]} at index {bad[0]} ({bad.size} bad)")
    return data, y.astype(np.int64)


def _read_label_names(path):
    meta = _read_pickle(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a dict, found "
                        f"{type(meta).__name__}")
    names = _entry(meta, "label_names", path)
    if not isinstance(names, list) or len(names) != N_CLASSES:
        raise DataError(f"{path}: b'label_names' should be a list of "
                        f"{N_CLASSES} names, found {describe(names)}")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n)
                for n in names]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: unreadable label name: {exc}") from exc


def _signature(folder):
    """Size and mtime of every file, so a replaced file is read again."""
    sig = []
    for name in (*TRAIN_FILES, TEST_FILE, META_FILE):
        try:
            st = (folder / name).stat()
        except OSError as exc:
            raise DataError(f"{folder}: missing or unreadable {name} "
                            f"({exc}); the folder is incomplete") from exc
        sig.append((name, st.st_size, st.st_mtime_ns))
    return tuple(sig)


def _read_train(folder):
    """The training batches stacked, copied in one at a time.

    Stacking the five batches with one concatenate held them all twice,
    and the freed copies stayed in the process's heap for the whole run.
    The array is sized from the first batch (official batches hold
    10,000 rows each) and grown only if a later batch does not fit.
    """
    X, labels, at = None, [], 0
    for name in TRAIN_FILES:
        x, y = _check_batch(_read_pickle(folder / name), folder / name)
        if X is None:
            X = np.empty((len(x) * len(TRAIN_FILES), N_FEATURES), np.uint8)
        elif at + len(x) > len(X):
            X = np.concatenate([X[:at], x])
        X[at:at + len(x)] = x
        labels.append(y)
        at += len(x)
        del x   # free each batch before the next one is read
    return (X if at == len(X) else X[:at].copy()), np.concatenate(labels)


def _read_batches(folder):
    """Read and validate all batches of ``folder`` into read-only arrays."""
    start = time.perf_counter()
    folder = Path(folder)
    X_train, y_train = _read_train(folder)
    X_test, y_test = _check_batch(_read_pickle(folder / TEST_FILE),
                                  folder / TEST_FILE)
    arrays = {
        "X_train": X_train,
        "y_train": y_train,
        "X_test": np.ascontiguousarray(X_test),
        "y_test": y_test,
    }
    for a in arrays.values():
        a.flags.writeable = False  # shared by every caller of the cache
    arrays["label_names"] = tuple(_read_label_names(folder / META_FILE))
    logger.info("read CIFAR-10 from %s: %d train, %d test images (%.2f s)",
                folder, len(arrays["y_train"]), len(arrays["y_test"]),
                time.perf_counter() - start)
    return arrays


_RAW_CACHE = {}   # (folder, signature) -> arrays, the last two read
_RAW_CACHE_SIZE = 2


def _raw_arrays(data_dir, download, keep):
    """The raw arrays of the data set, from the cache or the files.

    ``keep`` puts freshly read arrays into the cache; without it they
    live only as long as the caller holds them (176 MiB for CIFAR-10).
    """
    folder = find_data_dir(data_dir, download) / FOLDER_NAME
    key = (str(folder), _signature(folder))
    arrays = _RAW_CACHE.get(key)
    if arrays is None:
        arrays = _read_batches(folder)
        if keep:
            while len(_RAW_CACHE) >= _RAW_CACHE_SIZE:
                del _RAW_CACHE[next(iter(_RAW_CACHE))]
            _RAW_CACHE[key] = arrays
    return arrays


def load_cifar10(data_dir=None, download=True):
    """Load the raw CIFAR-10 arrays.

    The arrays of the last two folders read are cached in-process, keyed
    on the resolved folder and the size and mtime of its files, and are
    shared read-only between callers. `load_dataset` reads through this
    cache but does not fill it, so a run does not keep the raw arrays.

    Parameters
    ----------
    data_dir : str or path-like, optional
        See `find_data_dir`.
    download : bool
        See `find_data_dir`.

    Returns
    -------
    dict
        ``X_train`` uint8 (50000, 3072), ``y_train`` int64 (50000,),
        ``X_test`` uint8 (10000, 3072), ``y_test`` int64 (10000,),
        ``label_names`` list of 10 str.

    Raises
    ------
    DataError
        Data missing, a file truncated, corrupted, of the wrong shape,
        with labels out of range, or naming a global it may not load.
    """
    cached = _raw_arrays(data_dir, download, keep=True)
    raw = dict(cached)
    raw["label_names"] = list(cached["label_names"])
    return raw


# ---------------------------------------------------------------- splitting


class Dataset:
    """Splits of one data set, preprocessed and ready to train on.

    Parameters
    ----------
    X_train, X_val, X_test : ndarray, shape (n, d)
        Float features, C-contiguous, one example per row.
    y_train, y_val, y_test : ndarray of int64, shape (n,)
        Class labels.
    mean, std : ndarray of float64, shape (d,), optional
        Per-feature statistics of the training split on the [0, 1] scale,
        used as ``(x / 255 - mean) / std``; None when not standardized.
    label_names : list of str, optional
        Class names, indexed by label.
    """

    def __init__(self, X_train, y_train, X_val, y_val, X_test, y_test,
                 mean=None, std=None, label_names=None):
        self.X_train, self.y_train = X_train, y_train
        self.X_val, self.y_val = X_val, y_val
        self.X_test, self.y_test = X_test, y_test
        self.mean, self.std = mean, std
        self.label_names = label_names

    def __repr__(self):
        return (f"Dataset(train={self.X_train.shape}, val={self.X_val.shape}, "
                f"test={self.X_test.shape}, dtype={self.X_train.dtype})")


def _count(cfg, key, minimum):
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise DataError(f"data.{key}: expected an integer >= {minimum}, "
                        f"found {describe(value)}")
    return int(value)


def _settings(data_cfg):
    """Validated ``(train, val, preprocess)`` with defaults filled in."""
    if not isinstance(data_cfg, Mapping):
        raise DataError(f"data: expected a dict like {DATA_DEFAULTS}, found "
                        f"{describe(data_cfg)}")
    cfg = {**DATA_DEFAULTS, **data_cfg}
    if cfg["dataset"] not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {cfg['dataset']!r}"
                        f"{choices_hint(cfg['dataset'], DATASETS)}")
    if cfg["preprocess"] not in PREPROCESS:
        raise DataError(f"data.preprocess: unknown preprocessing "
                        f"{cfg['preprocess']!r}"
                        f"{choices_hint(cfg['preprocess'], PREPROCESS)}")
    return _count(cfg, "train", 1), _count(cfg, "val", 0), cfg["preprocess"]


def _float_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise DataError(f"dtype: expected one of {', '.join(DTYPES)}, found "
                        f"{describe(dtype)}")
    return dt


def _blocks(n):
    for start in range(0, n, _CHUNK_ROWS):
        yield slice(start, min(start + _CHUNK_ROWS, n))


def _feature_stats(X, divisor):
    """Per-feature mean and std (divide by n) of ``X / divisor``.

    ``X`` holds integers, so its sums and sums of squares are exact in
    float64 (below 2**53 for any CIFAR-sized set); one pass suffices and
    the variance suffers no cancellation beyond the final rounding.
    """
    n, d = X.shape
    total, squares = np.zeros(d), np.zeros(d)
    for rows in _blocks(n):
        block = X[rows].astype(np.float64)
        total += block.sum(axis=0)
        squares += np.einsum("ij,ij->j", block, block)
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    std = np.sqrt(var) / divisor
    np.maximum(std, STD_FLOOR, out=std)  # a constant pixel must not blow up
    return mean / divisor, std


def _transform(X, divisor, mean, std, dtype):
    """``(X / divisor - mean) / std`` in float64, cast once into ``dtype``.

    Blocks are independent and numpy releases the GIL inside each
    operation, so two threads do the work in about half the time (0.55
    -> 0.21 s for the 60,000 images, identical bits).
    """
    out = np.empty(X.shape, dtype=dtype)

    def one_block(rows):
        block = X[rows] / divisor
        if mean is not None:
            block -= mean
            block /= std
        out[rows] = block

    with ThreadPoolExecutor(_TRANSFORM_THREADS) as pool:
        for _ in pool.map(one_block, _blocks(X.shape[0])):
            pass   # re-raises a block's exception, if any
    return out


def load_dataset(data_cfg, data_dir=None, dtype="float32", download=True):
    """Load CIFAR-10, split it and preprocess it as ``data_cfg`` says.

    ``train`` images are taken from the start of the 50,000 training
    images and ``val`` from their end, so the two never overlap. The
    preprocessing is fitted on the training split only and applied
    unchanged to the validation and test splits: ``"standardize"`` is
    ``(x / 255 - mean) / std`` per feature (std divides by n, floor 1e-8),
    ``"scale"`` is ``x / 255`` and ``"none"`` the raw values as floats.

    Parameters
    ----------
    data_cfg : dict
        The spec's ``data`` section: ``dataset`` ("cifar10"), ``train``
        (default 45000), ``val`` (default 5000), ``preprocess`` (default
        "standardize"). Other keys are left to their own readers.
    data_dir : str or path-like, optional
        See `find_data_dir`.
    dtype : str or numpy dtype
        "float32" or "float64", the dtype of the returned features.
    download : bool
        See `find_data_dir`.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        Bad settings (unknown name, overlapping split, bad dtype) or any
        problem `load_cifar10` reports.
    """
    n_train, n_val, preprocess = _settings(data_cfg)
    dtype = _float_dtype(dtype)
    # Not kept in the cache: a run holds only the prepared splits.
    # Callers that load many times keep the Dataset itself (sweeps do).
    raw = _raw_arrays(data_dir, download, keep=False)
    n_all = raw["X_train"].shape[0]
    if n_train + n_val > n_all:
        raise DataError(
            f"data.train ({n_train}) + data.val ({n_val}) = "
            f"{n_train + n_val} exceeds the {n_all} training images; train "
            f"counts from the start and val from the end, so they would "
            f"overlap")

    start = time.perf_counter()
    train, val = slice(0, n_train), slice(n_all - n_val, n_all)
    divisor, standardize = PREPROCESS[preprocess]
    X_train = raw["X_train"][train]
    mean = std = None
    if standardize:
        mean, std = _feature_stats(X_train, divisor)

    def prepare(X):
        return _transform(X, divisor, mean, std, dtype)

    data = Dataset(
        prepare(X_train), raw["y_train"][train].copy(),
        prepare(raw["X_train"][val]), raw["y_train"][val].copy(),
        prepare(raw["X_test"]), raw["y_test"].copy(),
        mean=mean, std=std, label_names=list(raw["label_names"]))
    logger.info("dataset: %d train, %d val, %d test, %s, %s (%.2f s)",
                n_train, n_val, len(data.y_test), preprocess, dtype.name,
                time.perf_counter() - start)
    return data


# ---------------------------------------------------------------- augmenting


_scratch = threading.local()


def _padded_frames(n, shift, dtype):
    """A (n, 3, 32 + 2 shift, 32 + 2 shift) array whose border is zero.

    Reused per thread: only the interior is ever written, so the border
    stays zero, and a training loop does not allocate (and page-fault) a
    few megabytes on every step.
    """
    side = SIDE + 2 * shift
    if n > _SCRATCH_MAX_ROWS:
        return np.zeros((n, 3, side, side), dtype)
    frames = getattr(_scratch, "frames", None)
    if frames is None:
        frames = _scratch.frames = {}
    key = (shift, dtype.str)
    buf = frames.get(key)
    if buf is None or buf.shape[0] < n:
        buf = frames[key] = np.zeros((n, 3, side, side), dtype)
    return buf[:n]


def _windows(frames):
    """View (n, 3, k, k, 32, 32): every 32x32 window of every frame."""
    k = frames.shape[-1] - SIDE + 1
    s0, s1, s2, s3 = frames.strides
    return as_strided(frames, shape=(frames.shape[0], 3, k, k, SIDE, SIDE),
                      strides=(s0, s1, s2, s3, s2, s3), writeable=False)


def augment(X, rng, flip=0.5, shift=2, out=None):
    """Randomly mirror and translate a batch of CIFAR images.

    Each row is independently mirrored left-right with probability
    ``flip``, then translated by integers ``dx``, ``dy`` drawn uniformly
    from ``[-shift, shift]``: output pixel (y, x) is pixel
    (y - dy, x - dx) of the mirrored image, or 0 where that lies outside
    (0 is the mean once standardized). The draws are, in this order,
    ``rng.random(n)``, then ``rng.integers`` for dx and for dy.

    Parameters
    ----------
    X : ndarray, shape (n, 3072)
        Rows are images stored as 3 planes of 32x32 (R, G, B), row-major;
        raw or standardized.
    rng : numpy.random.Generator
        Source of the random draws.
    flip : float
        Probability of mirroring a row, in [0, 1].
    shift : int
        Largest translation in pixels, in 0..31.
    out : ndarray, shape (n, 3072), optional
        C-contiguous array to write into (may be ``X`` itself); reusing
        one saves an allocation per batch.

    Returns
    -------
    ndarray, shape (n, 3072)
        ``out`` if given, else a new array of ``X``'s dtype.

    Raises
    ------
    DataError
        ``X``, ``out``, ``flip`` or ``shift`` have the wrong shape or value.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise DataError(f"augment: X should have shape (n, {N_FEATURES}), "
                        f"found {X.shape}")
    if not isinstance(flip, numbers.Real) or not 0.0 <= flip <= 1.0:
        raise DataError(f"augment: flip is a probability in [0, 1], found "
                        f"{describe(flip)}")
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) \
            or not 0 <= shift < SIDE:
        raise DataError(f"augment: shift should be an integer in "
                        f"0..{SIDE - 1}, found {describe(shift)}")
    if out is None:
        out = np.empty_like(X, order="C")
    elif out.shape != X.shape or not out.flags.c_contiguous:
        raise DataError(f"augment: out should be a C-contiguous array of "
                        f"shape {X.shape}, found shape {out.shape}")
    n = X.shape[0]
    mirrored = rng.random(n) < flip
    dx = rng.integers(-shift, shift + 1, size=n)
    dy = rng.integers(-shift, shift + 1, size=n)

    frames = _padded_frames(n, shift, X.dtype)
    frames[:, :, shift:shift + SIDE, shift:shift + SIDE] = \
        X.reshape(n, 3, SIDE, SIDE)
    top, left = shift - dy, shift - dx
    images = out.reshape(n, 3, SIDE, SIDE)

    # A window of the reversed view is the mirrored image, shifted.
    plain = np.flatnonzero(~mirrored)
    images[plain] = _windows(frames)[plain, :, top[plain], left[plain]]
    flips = np.flatnonzero(mirrored)
    images[flips] = _windows(frames[..., ::-1])[
        flips, :, top[flips], left[flips]]
    return out
