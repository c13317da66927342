"""Vision data: digits split/normalisation and the CIFAR-10 binary reader."""
from __future__ import annotations

import numpy as np
import pytest

from proxyscale.data.vision import (
    CIFAR_RECORD,
    VisionDataConfig,
    load_cifar10,
    load_digits_data,
    load_vision,
    read_cifar_bin,
)
from proxyscale.errors import DataError


def test_digits_split_is_deterministic_disjoint_and_normalised():
    a = load_digits_data(np.random.default_rng(3), n_train=1000)
    b = load_digits_data(np.random.default_rng(3), n_train=1000)
    c = load_digits_data(np.random.default_rng(4), n_train=1000)
    assert a.x_train.shape == (1000, 1, 8, 8) and a.x_test.shape == (797, 1, 8, 8)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train)
    # train split standardised with its own statistics
    assert abs(a.x_train.mean()) < 1e-5 and abs(a.x_train.std() - 1) < 1e-4
    # the split is the permutation drawn from the generator, normalised by train statistics
    from sklearn.datasets import load_digits
    raw = load_digits().images.reshape(1797, -1) / 16.0
    perm = np.random.default_rng(3).permutation(1797)
    mu, sd = raw[perm[:1000]].mean(), raw[perm[:1000]].std()
    both = np.concatenate([a.x_train, a.x_test]).reshape(1797, -1)
    np.testing.assert_allclose(both, (raw[perm] - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([a.y_train, a.y_test]), load_digits().target[perm])
    flat = a.flat()
    assert flat.x_train.shape == (1000, 64)


def test_digits_bad_size_is_data_error():
    with pytest.raises(DataError, match="n_train"):
        load_digits_data(np.random.default_rng(0), n_train=5000)


def _write_cifar(path, labels, rng):
    pix = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    rec = np.concatenate([np.asarray(labels, np.uint8)[:, None], pix.reshape(len(labels), -1)], axis=1)
    rec.tofile(path)
    return pix


def test_cifar_binary_records_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pix = _write_cifar(tmp_path / "one.bin", [3, 9, 0], rng)
    x, y = read_cifar_bin(tmp_path / "one.bin")
    assert y.tolist() == [3, 9, 0]
    np.testing.assert_array_equal(x, pix)  # channel-major (C, H, W) layout preserved


def test_load_cifar10_normalises_with_train_statistics(tmp_path):
    rng = np.random.default_rng(1)
    train = [_write_cifar(tmp_path / f"data_batch_{i}.bin", rng.integers(0, 10, 4), rng) for i in range(1, 6)]
    _write_cifar(tmp_path / "test_batch.bin", [1, 2], rng)
    d = load_cifar10(tmp_path)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (2, 3, 32, 32)
    raw = np.concatenate(train).astype(np.float64) / 255
    mean, std = raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3))
    np.testing.assert_allclose(d.x_train[0, :, 0, 0], (raw[0, :, 0, 0] - mean) / std, rtol=1e-5)
    assert d.y_test.tolist() == [1, 2]
    again = load_vision(VisionDataConfig(name="cifar10", root=str(tmp_path)), np.random.default_rng(0))
    np.testing.assert_array_equal(again.x_test, d.x_test)


def test_cifar_missing_truncated_and_wrong_files_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="missing"):
        read_cifar_bin(tmp_path / "data_batch_1.bin")
    (tmp_path / "cut.bin").write_bytes(b"\x01" * (CIFAR_RECORD + 7))
    with pytest.raises(DataError, match="truncated"):
        read_cifar_bin(tmp_path / "cut.bin")
    (tmp_path / "c100.bin").write_bytes(bytes([57]) + b"\x00" * (CIFAR_RECORD - 1))
    with pytest.raises(DataError, match="not a CIFAR-10"):
        read_cifar_bin(tmp_path / "c100.bin")
    with pytest.raises(DataError, match="no such directory"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DataError, match="root"):
        load_vision(VisionDataConfig(name="cifar10"), np.random.default_rng(0))
