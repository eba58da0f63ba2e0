"""A small fake CIFAR-10 in the official python layout, for tests.

The files are real pickles of dicts with bytes keys, as in the official
download: ``b'data'`` a uint8 array (N, 3072), ``b'labels'`` a list of
ints, ``b'batch_label'`` and ``b'filenames'`` bytes.
"""

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog",
               "frog", "horse", "ship", "truck"]


def batch_dict(data, labels, batch_label=b"fake batch"):
    """The dict a batch file holds, with bytes keys."""
    return {
        b"batch_label": batch_label,
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"{i}_fake.png".encode() for i in range(len(data))],
    }


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_fake_cifar(root, n_per_batch=100, n_test=100, seed=0, X_train=None):
    """Write ``root/cifar-10-batches-py/`` and return what was written.

    Parameters
    ----------
    root : path-like
        Folder to hold the data set (created if missing).
    n_per_batch : int
        Images in each of the five training batches.
    n_test : int
        Images in the test batch.
    seed : int
        Seed of the random images and labels.
    X_train : ndarray of uint8, shape (5 * n_per_batch, 3072), optional
        Training images to write instead of random ones.

    Returns
    -------
    dict
        ``X_train``, ``y_train``, ``X_test``, ``y_test`` (the arrays
        written, training batches concatenated), ``label_names`` and
        ``folder`` (the path of ``cifar-10-batches-py/``).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    n_train = 5 * n_per_batch
    random_train = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    X_train = random_train if X_train is None else X_train
    y_train = rng.integers(0, 10, size=n_train)
    X_test = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    y_test = rng.integers(0, 10, size=n_test)

    for i, name in enumerate(TRAIN_FILES):
        rows = slice(i * n_per_batch, (i + 1) * n_per_batch)
        label = f"training batch {i + 1} of 5".encode()
        write_pickle(folder / name,
                     batch_dict(X_train[rows], y_train[rows], label))
    write_pickle(folder / "test_batch",
                 batch_dict(X_test, y_test, b"testing batch 1 of 1"))
    write_pickle(folder / "batches.meta", {
        b"num_cases_per_batch": n_per_batch,
        b"label_names": [n.encode() for n in LABEL_NAMES],
        b"num_vis": 3072,
    })
    return {"X_train": X_train, "y_train": y_train, "X_test": X_test,
            "y_test": y_test, "label_names": list(LABEL_NAMES),
            "folder": folder}


def archive_bytes(members):
    """A .tar.gz holding ``members`` (name -> bytes) as regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def fake_archive_bytes(staging, **kwargs):
    """Write a fake set under ``staging`` and return it as .tar.gz bytes.

    Returns
    -------
    bytes, dict
        The archive and what `write_fake_cifar` returned.
    """
    written = write_fake_cifar(staging, **kwargs)
    members = {f"{FOLDER}/{p.name}": p.read_bytes()
               for p in sorted(written["folder"].iterdir())}
    return archive_bytes(members), written


def md5(payload):
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()
