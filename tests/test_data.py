"""Tests of graphnet.data on a small fake CIFAR-10 (and the real one if set)."""

import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import fakecifar
from graphnet import data
from graphnet.data import (Dataset, augment, find_data_dir, load_cifar10,
                           load_dataset)
from graphnet.errors import DataError

# Read before the autouse fixture below hides the variable from each test.
REAL_DATA = os.environ.get("GRAPHNET_DATA")

SMALL = {"dataset": "cifar10", "train": 300, "val": 150,
         "preprocess": "standardize"}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No GRAPHNET_DATA and an empty home, so ~/.cache is never touched."""
    monkeypatch.delenv("GRAPHNET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "fake"
    written = fakecifar.write_fake_cifar(root)
    written["root"] = root
    return written


class _Response(io.BytesIO):
    """Stands in for the object urllib.request.urlopen returns."""

    def __init__(self, payload):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _serve(monkeypatch, payload):
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return _Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


# ------------------------------------------------------------ finding data


def test_found_via_argument(fake):
    assert find_data_dir(fake["root"], download=False) == fake["root"].resolve()


def test_found_via_env(fake, monkeypatch):
    monkeypatch.setenv("GRAPHNET_DATA", str(fake["root"]))
    assert find_data_dir(download=False) == fake["root"].resolve()


def test_argument_comes_before_env(fake, tmp_path, monkeypatch):
    other = tmp_path / "other"
    fakecifar.write_fake_cifar(other, seed=1)
    monkeypatch.setenv("GRAPHNET_DATA", str(other))
    assert find_data_dir(fake["root"], download=False) == fake["root"].resolve()


def test_found_via_default_cache(tmp_path):
    cache = tmp_path / "home" / ".cache" / "graphnet"
    fakecifar.write_fake_cifar(cache)
    assert find_data_dir(download=False) == cache.resolve()


def test_batches_folder_itself_accepted(fake):
    assert find_data_dir(fake["folder"], download=False) == fake["root"].resolve()


def test_archive_extracted_next_to_itself(tmp_path):
    payload, written = fakecifar.fake_archive_bytes(tmp_path / "staging")
    root = tmp_path / "archive"
    root.mkdir()
    (root / fakecifar.ARCHIVE).write_bytes(payload)

    assert find_data_dir(root, download=False) == root.resolve()
    assert (root / fakecifar.FOLDER / "data_batch_5").is_file()
    assert (root / fakecifar.ARCHIVE).is_file()
    assert sorted(p.name for p in root.iterdir()) == sorted([
        fakecifar.ARCHIVE, fakecifar.FOLDER])  # no temp folder left
    raw = load_cifar10(root, download=False)
    np.testing.assert_array_equal(raw["X_train"], written["X_train"])


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/graphnet-evil.txt",
                                  "cifar-10-batches-py/../../evil.txt"])
def test_archive_unsafe_member_refused(tmp_path, name):
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    payload = fakecifar.archive_bytes({"cifar-10-batches-py/x": b"ok",
                                       name: b"evil"})
    (root / fakecifar.ARCHIVE).write_bytes(payload)

    with pytest.raises(DataError, match=r"refusing member .*evil\.txt"):
        find_data_dir(root, download=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (root / fakecifar.FOLDER).exists()


def test_archive_link_member_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    (tmp_path / fakecifar.ARCHIVE).write_bytes(buf.getvalue())

    with pytest.raises(DataError, match="only regular files and folders"):
        find_data_dir(tmp_path, download=False)


def test_archive_damaged(tmp_path):
    (tmp_path / fakecifar.ARCHIVE).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=r"cannot extract .*tar\.gz"):
        find_data_dir(tmp_path, download=False)


def test_archive_without_batches_folder(tmp_path):
    payload = fakecifar.archive_bytes({"something/else": b"x"})
    (tmp_path / fakecifar.ARCHIVE).write_bytes(payload)
    with pytest.raises(DataError, match="no cifar-10-batches-py/ folder"):
        find_data_dir(tmp_path, download=False)


def test_missing_without_download_names_searched_folders(tmp_path,
                                                         monkeypatch):
    arg, env = tmp_path / "arg", tmp_path / "env"
    monkeypatch.setenv("GRAPHNET_DATA", str(env))
    with pytest.raises(DataError, match="not found and download is off") as err:
        find_data_dir(arg, download=False)
    message = str(err.value)
    cache = tmp_path / "home" / ".cache" / "graphnet"
    for folder in (arg, env, cache):
        assert str(folder) in message
    assert "cifar-10-python.tar.gz" in message
    assert "cifar-10-batches-py/" in message


def test_network_failure_names_searched_folders(tmp_path, monkeypatch):
    def urlopen(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    target = tmp_path / "dl"
    with pytest.raises(DataError, match="could not download .*no network") as err:
        load_cifar10(target)
    assert str(target) in str(err.value)
    assert str(tmp_path / "home" / ".cache" / "graphnet") in str(err.value)
    assert list(target.iterdir()) == []  # the temp file was removed


def test_download_md5_mismatch(tmp_path, monkeypatch):
    payload, _ = fakecifar.fake_archive_bytes(tmp_path / "staging")
    _serve(monkeypatch, payload)
    target = tmp_path / "dl"
    expected = fakecifar.md5(payload)
    with pytest.raises(DataError, match=f"md5 {expected}, expected "
                                        f"{data.CIFAR10_MD5}"):
        find_data_dir(target)
    assert list(target.iterdir()) == []  # nothing kept of a bad download


def test_download_to_default_cache(tmp_path, monkeypatch):
    payload, written = fakecifar.fake_archive_bytes(tmp_path / "staging")
    calls = _serve(monkeypatch, payload)
    monkeypatch.setattr(data, "CIFAR10_MD5", fakecifar.md5(payload))
    cache = tmp_path / "home" / ".cache" / "graphnet"

    assert find_data_dir() == cache.resolve()
    assert calls == [data.CIFAR10_URL]
    assert (cache / fakecifar.ARCHIVE).read_bytes() == payload
    raw = load_cifar10()
    assert calls == [data.CIFAR10_URL]  # found this time, not fetched
    np.testing.assert_array_equal(raw["y_test"], written["y_test"])


# ------------------------------------------------------------ reading files


def test_load_cifar10_contents(fake):
    raw = load_cifar10(fake["root"], download=False)
    assert raw["X_train"].dtype == np.uint8
    assert raw["X_train"].shape == (500, 3072)
    assert raw["X_test"].shape == (100, 3072)
    assert raw["y_train"].dtype == np.int64 and raw["y_test"].dtype == np.int64
    np.testing.assert_array_equal(raw["X_train"], fake["X_train"])
    np.testing.assert_array_equal(raw["y_train"], fake["y_train"])
    np.testing.assert_array_equal(raw["X_test"], fake["X_test"])
    np.testing.assert_array_equal(raw["y_test"], fake["y_test"])
    assert raw["label_names"] == fakecifar.LABEL_NAMES


def test_load_cifar10_cached_until_files_change(fake):
    first = load_cifar10(fake["root"], download=False)
    second = load_cifar10(fake["root"], download=False)
    assert second["X_train"] is first["X_train"]
    assert not first["X_train"].flags.writeable

    path = fake["folder"] / "data_batch_1"
    new = np.zeros((100, 3072), np.uint8)
    fakecifar.write_pickle(path, fakecifar.batch_dict(new, [0] * 100))
    os.utime(path, ns=(1, 1))
    third = load_cifar10(fake["root"], download=False)
    assert not third["X_train"][:100].any()


class _Call:
    """Pickles as a call of ``func(arg)``, the way an attack would."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _payloads(marker):
    touch = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": pickle.dumps({b"data": _Call(os.system, touch),
                                   b"labels": [0]}),
        "builtins.eval": pickle.dumps({b"data": _Call(eval, code),
                                       b"labels": [0]}),
        "protocol 0": f"cos\nsystem\n(S'{touch}'\ntR.".encode(),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "protocol 0"])
def test_pickle_with_code_refused(fake, tmp_path, kind):
    control = tmp_path / "control"
    pickle.loads(_payloads(control)[kind])
    assert control.exists(), "the payload must be live for the test to count"

    marker = tmp_path / "marker"
    (fake["folder"] / "data_batch_3").write_bytes(_payloads(marker)[kind])
    with pytest.raises(DataError, match=r"data_batch_3: refusing to load "
                                        r"global '(posix|os|builtins)\."):
        load_cifar10(fake["root"], download=False)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0, 10, 0.5, -1])
def test_truncated_file(fake, cut):
    path = fake["folder"] / "data_batch_2"
    payload = path.read_bytes()
    keep = int(len(payload) * cut) if isinstance(cut, float) else cut
    path.write_bytes(payload[:keep])
    with pytest.raises(DataError, match="data_batch_2: cannot be read"):
        load_cifar10(fake["root"], download=False)


def test_garbage_file(fake):
    rng = np.random.default_rng(0)
    path = fake["folder"] / "test_batch"
    path.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(fake["root"], download=False)


def test_missing_file(fake):
    (fake["folder"] / "data_batch_4").unlink()
    with pytest.raises(DataError, match="missing or unreadable data_batch_4"):
        load_cifar10(fake["root"], download=False)


@pytest.mark.parametrize("batch, message", [
    ({b"labels": [0] * 4}, r"missing key b'data'"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, r"missing key b'labels'"),
    ({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4},
     r"uint8 array of shape \(N, 3072\), found uint8 array of shape "
     r"\(4, 3000\)"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4},
     r"found float32 array"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3},
     r"3 labels for 4 images"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 10, 2]},
     r"labels must be in 0\.\.9, found 10 at index 2"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, -1, 1, 2]},
     r"found -1 at index 1"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [b"a"] * 4},
     r"should be a list of ints"),
    ([1, 2, 3], r"expected a dict"),
])
def test_malformed_batch(fake, batch, message):
    fakecifar.write_pickle(fake["folder"] / "data_batch_1", batch)
    with pytest.raises(DataError, match=f"data_batch_1: .*{message}"):
        load_cifar10(fake["root"], download=False)


def test_malformed_meta(fake):
    fakecifar.write_pickle(fake["folder"] / "batches.meta",
                           {b"label_names": [b"cat"]})
    with pytest.raises(DataError, match="batches.meta: b'label_names'"):
        load_cifar10(fake["root"], download=False)


# ------------------------------------------------------------ splits


def test_split_sizes_and_val_from_the_end(fake):
    cfg = dict(SMALL, preprocess="none")
    ds = load_dataset(cfg, fake["root"], download=False)
    assert isinstance(ds, Dataset)
    assert ds.X_train.shape == (300, 3072) and ds.y_train.shape == (300,)
    assert ds.X_val.shape == (150, 3072) and ds.y_val.shape == (150,)
    assert ds.X_test.shape == (100, 3072)
    np.testing.assert_array_equal(ds.X_train, fake["X_train"][:300])
    np.testing.assert_array_equal(ds.X_val, fake["X_train"][-150:])
    np.testing.assert_array_equal(ds.y_train, fake["y_train"][:300])
    np.testing.assert_array_equal(ds.y_val, fake["y_train"][-150:])
    np.testing.assert_array_equal(ds.y_test, fake["y_test"])
    assert ds.mean is None and ds.std is None
    assert ds.label_names == fakecifar.LABEL_NAMES


def test_whole_training_set_splits_exactly(fake):
    ds = load_dataset(dict(SMALL, train=450, val=50), fake["root"],
                      download=False)
    assert len(ds.y_train) + len(ds.y_val) == 500


def test_zero_val(fake):
    ds = load_dataset(dict(SMALL, val=0), fake["root"], download=False)
    assert ds.X_val.shape == (0, 3072) and ds.y_val.shape == (0,)


def test_overlapping_split_refused(fake):
    with pytest.raises(DataError, match=r"data.train \(400\) \+ data.val "
                                        r"\(200\) = 600 exceeds the 500"):
        load_dataset(dict(SMALL, train=400, val=200), fake["root"],
                     download=False)


@pytest.mark.parametrize("key, value, message", [
    ("dataset", "cifar100", r"unknown dataset 'cifar100'.*cifar10"),
    ("preprocess", "whiten", r"unknown preprocessing 'whiten'.*none, "
                             r"scale, standardize"),
    ("train", 0, r"data.train: expected an integer >= 1, found 0"),
    ("train", "300", r"data.train: expected an integer"),
    ("val", -1, r"data.val: expected an integer >= 0"),
    ("val", 1.5, r"data.val: expected an integer"),
])
def test_bad_settings(fake, key, value, message):
    with pytest.raises(DataError, match=message):
        load_dataset(dict(SMALL, **{key: value}), fake["root"],
                     download=False)


def test_bad_dtype(fake):
    with pytest.raises(DataError, match="expected one of float32, float64"):
        load_dataset(SMALL, fake["root"], dtype="int8", download=False)


def test_defaults_fill_missing_settings(fake):
    with pytest.raises(DataError, match=r"45000\) \+ data.val \(5000"):
        load_dataset({}, fake["root"], download=False)


# ------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32])
def test_dtype_and_layout(fake, dtype):
    ds = load_dataset(SMALL, fake["root"], dtype=dtype, download=False)
    for X in (ds.X_train, ds.X_val, ds.X_test):
        assert X.dtype == np.dtype(dtype)
        assert X.flags.c_contiguous
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64


def test_standardize_uses_training_statistics(fake):
    ds = load_dataset(SMALL, fake["root"], dtype="float64", download=False)
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1, rtol=1e-10)

    train = fake["X_train"][:300] / 255
    np.testing.assert_allclose(ds.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ds.std, train.std(axis=0), rtol=1e-12)
    val = (fake["X_train"][-150:] / 255 - ds.mean) / ds.std
    test = (fake["X_test"] / 255 - ds.mean) / ds.std
    np.testing.assert_allclose(ds.X_val, val, rtol=1e-12)
    np.testing.assert_allclose(ds.X_test, test, rtol=1e-12)
    assert abs(ds.X_val.mean()) > 1e-4  # not re-centred on its own


def test_standardize_float32_is_the_float64_result_cast(fake):
    ds32 = load_dataset(SMALL, fake["root"], dtype="float32", download=False)
    ds64 = load_dataset(SMALL, fake["root"], dtype="float64", download=False)
    np.testing.assert_array_equal(ds32.X_test, ds64.X_test.astype(np.float32))


def test_standardize_constant_feature(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, size=(500, 3072), dtype=np.uint8)
    X[:, 7] = 42
    fakecifar.write_fake_cifar(tmp_path, X_train=X)
    ds = load_dataset(SMALL, tmp_path, download=False)
    assert ds.std[7] == data.STD_FLOOR
    assert np.isfinite(ds.X_test).all()
    np.testing.assert_allclose(ds.X_train[:, 7], 0, atol=1e-6)


def test_scale(fake):
    ds = load_dataset(dict(SMALL, preprocess="scale"), fake["root"],
                      dtype="float64", download=False)
    np.testing.assert_array_equal(ds.X_test, fake["X_test"] / 255)
    assert ds.mean is None


# ------------------------------------------------------------ augmenting


def _images(rng, n, dtype=np.float32):
    """Images with no zero pixel and every pixel value distinct per row."""
    rows = rng.random((n, 3072)).argsort(axis=1) + 1
    return rows.astype(dtype)


def _shifted(image, dx, dy):
    """Reference translation of one (3, 32, 32) image with zero padding."""
    out = np.zeros_like(image)
    for y in range(32):
        for x in range(32):
            if 0 <= y - dy < 32 and 0 <= x - dx < 32:
                out[:, y, x] = image[:, y - dy, x - dx]
    return out


def _which_transform(row, image, shift):
    """All (mirrored, dx, dy) that turn ``image`` into ``row``."""
    found = []
    for mirrored in (False, True):
        source = image[:, :, ::-1] if mirrored else image
        for dx in range(-shift, shift + 1):
            for dy in range(-shift, shift + 1):
                ref = _shifted(source, dx, dy).reshape(-1)
                if np.array_equal(ref, row):
                    found.append((mirrored, dx, dy))
    return found


def test_flip_reverses_columns_of_each_plane():
    rng = np.random.default_rng(0)
    X = _images(rng, 4)
    out = augment(X, rng, flip=1.0, shift=0)
    expected = X.reshape(4, 3, 32, 32)[:, :, :, ::-1].reshape(4, 3072)
    np.testing.assert_array_equal(out, expected)
    # the red plane's first row, read backwards
    np.testing.assert_array_equal(out[0, :32], X[0, 31::-1])


def test_no_flip_no_shift_is_identity():
    rng = np.random.default_rng(0)
    X = _images(rng, 3)
    np.testing.assert_array_equal(augment(X, rng, flip=0.0, shift=0), X)


def test_shift_moves_pixels_and_pads_with_zeros():
    rng = np.random.default_rng(1)
    X = _images(rng, 60)
    out = augment(X, rng, flip=0.0, shift=2)

    seen = set()
    for row, image in zip(out, X.reshape(-1, 3, 32, 32)):
        found = _which_transform(row, image, 2)
        assert len(found) == 1
        mirrored, dx, dy = found[0]
        assert not mirrored
        seen.add((dx, dy))
        zeros = 3 * (32 * 32 - (32 - abs(dx)) * (32 - abs(dy)))
        assert np.count_nonzero(row == 0) == zeros
    assert len(seen) >= 12  # of the 25 possible shifts


def test_single_pixel_moves_by_the_shift():
    rng = np.random.default_rng(2)
    X = np.zeros((50, 3072))
    X[:, 1024 + 10 * 32 + 20] = 1.0  # green plane, y=10, x=20
    out = augment(X, rng, flip=0.0, shift=3)
    for row in out:
        (index,) = np.flatnonzero(row)
        plane, y, x = np.unravel_index(index, (3, 32, 32))
        assert plane == 1
        assert abs(y - 10) <= 3 and abs(x - 20) <= 3


def test_flip_and_shift_together():
    rng = np.random.default_rng(3)
    X = _images(rng, 40)
    out = augment(X, rng, flip=0.5, shift=1)
    kinds = set()
    for row, image in zip(out, X.reshape(-1, 3, 32, 32)):
        found = _which_transform(row, image, 1)
        assert len(found) == 1
        kinds.add(found[0][0])
    assert kinds == {False, True}


def test_flip_probability():
    rng = np.random.default_rng(4)
    X = _images(rng, 1000)
    out = augment(X, rng, flip=0.3, shift=0)
    mirrored = X.reshape(-1, 3, 32, 32)[..., ::-1].reshape(-1, 3072)
    flipped = np.all(out == mirrored, axis=1)
    assert np.all(flipped | np.all(out == X, axis=1))
    assert 240 < flipped.sum() < 360


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augment_keeps_shape_and_dtype(dtype):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((100, 3072)).astype(dtype)
    out = augment(X, rng)
    assert out.shape == X.shape and out.dtype == dtype
    assert out.flags.c_contiguous


def test_augment_is_deterministic_with_a_seed():
    X = _images(np.random.default_rng(6), 20)
    a = augment(X, np.random.default_rng(7))
    b = augment(X, np.random.default_rng(7))
    c = augment(X, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augment_into_out_and_in_place():
    X = _images(np.random.default_rng(9), 30)
    expected = augment(X, np.random.default_rng(10))
    out = np.empty_like(X)
    assert augment(X, np.random.default_rng(10), out=out) is out
    np.testing.assert_array_equal(out, expected)
    augment(X, np.random.default_rng(10), out=X)
    np.testing.assert_array_equal(X, expected)


def test_augment_batch_sizes_vary():
    rng = np.random.default_rng(11)
    for n in (100, 7, 0, 130, 1):
        X = _images(rng, n)
        assert augment(X, rng).shape == (n, 3072)


@pytest.mark.parametrize("kwargs, message", [
    ({"X": np.zeros((4, 100))}, r"X should have shape \(n, 3072\)"),
    ({"flip": 1.5}, "flip is a probability"),
    ({"shift": -1}, "shift should be an integer"),
    ({"shift": 32}, "shift should be an integer"),
    ({"shift": 1.0}, "shift should be an integer"),
    ({"out": np.zeros((3, 3072))}, "out should be a C-contiguous array"),
])
def test_augment_bad_arguments(kwargs, message):
    args = {"X": np.zeros((4, 3072)), "rng": np.random.default_rng(0)}
    with pytest.raises(DataError, match=message):
        augment(**{**args, **kwargs})


# ------------------------------------------------------------ real data


@pytest.mark.skipif(
    not (REAL_DATA and (Path(REAL_DATA) / "cifar-10-batches-py").is_dir()),
    reason="GRAPHNET_DATA does not point at the real CIFAR-10")
def test_real_cifar10():
    raw = load_cifar10(REAL_DATA, download=False)
    assert raw["X_train"].shape == (50000, 3072)
    assert raw["X_test"].shape == (10000, 3072)
    assert raw["y_train"][:5].tolist() == [6, 9, 9, 4, 1]
    assert raw["y_test"][:5].tolist() == [3, 8, 8, 0, 6]
    assert np.bincount(raw["y_train"]).tolist() == [5000] * 10
    assert raw["label_names"][:2] == ["airplane", "automobile"]
    means = raw["X_train"].reshape(50000, 3, 1024).mean(axis=(0, 2))
    np.testing.assert_allclose(means, [125.31, 122.95, 113.87], atol=0.01)
