"""Image data for the MLP pruning baseline: scikit-learn's digits and IDX-file MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from graphprior.digits import MNIST_FILES, digits, mnist, read_idx


def write_idx(path, array: np.ndarray, code: int, compress: bool = False) -> None:
    """Write ``array`` as an IDX file: 0, 0, type code, ndim, big-endian dims, data."""
    dtype = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        np.ascontiguousarray(array, dtype=dtype).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_reads_what_was_written(tmp_path, code, compress):
    array = (np.arange(24).reshape(2, 3, 4) % 100).astype("f8")
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, array, code, compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_refuses_a_bad_header_or_size(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="is not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x05")
    with pytest.raises(ValueError, match="needs 11"):
        read_idx(tmp_path / "short")


def test_mnist_reads_small_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"train": 6, "test": 4}
    expected = {}
    for split, (images_name, labels_name) in MNIST_FILES.items():
        images = rng.integers(0, 256, (sizes[split], 28, 28)).astype(np.uint8)
        images[0, 0, 0] = 255
        labels = rng.integers(0, 10, sizes[split]).astype(np.uint8)
        write_idx(tmp_path / images_name, images, 0x08)
        write_idx(tmp_path / f"{labels_name}.gz", labels, 0x08, compress=True)
        expected[split] = (images, labels)
    train, test = mnist(tmp_path)
    for data, (images, labels) in ((train, expected["train"]), (test, expected["test"])):
        assert data.inputs.shape == (len(labels), 1, 784) and data.classes == 10
        np.testing.assert_allclose(data.inputs[:, 0].numpy(), images.reshape(len(labels), -1) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(data.labels.numpy(), labels)
        np.testing.assert_array_equal(data.targets[:, 0].argmax(1).numpy(), labels)


def test_mnist_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist(tmp_path)


def test_digits_split_stratified_and_scaled():
    train, test = digits(test_fraction=0.25, seed=1)
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert train.features == 64 and train.classes == 10
    assert float(train.inputs.min()) == 0.0 and float(train.inputs.max()) == 1.0
    assert set(np.bincount(test.labels.numpy())) <= {43, 44, 45, 46}  # a quarter of 174..183 images per class
    again, _ = digits(test_fraction=0.25, seed=1)
    assert (again.inputs == train.inputs).all()
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=1.0)


def _tiny_mnist(folder, rng) -> None:
    """Four small MNIST IDX files (12 train, 8 test images of 28x28) in ``folder``."""
    for split, (images_name, labels_name) in MNIST_FILES.items():
        n = 12 if split == "train" else 8
        write_idx(folder / images_name, rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), 0x08)
        write_idx(folder / labels_name, (np.arange(n) % 10).astype(np.uint8), 0x08)


def test_the_pruning_benchmark_runs_the_784_100_10_setting_on_idx_files(tmp_path, capsys):
    """``bench_pruning --idx DIR``: the study's MNIST setting end to end, on tiny files."""
    from benchmarks import bench_pruning

    _tiny_mnist(tmp_path, np.random.default_rng(0))
    bench_pruning.main(["--parts", "mnist", "--idx", str(tmp_path), "--seeds", "2", "--epochs", "1",
                        "--retrain", "1"])
    out = capsys.readouterr().out
    assert "MNIST (12 train / 8 test), MLP 784-100-10, 2 seeds" in out
    rows = [line for line in out.splitlines() if line.startswith("| blinded |")]
    assert [row.split(" | ")[1] for row in rows] == ["50%", "80%", "90%"]
    with pytest.raises(SystemExit):
        bench_pruning.main(["--parts", "mnist"])  # no files: the parser says --idx is needed
    assert "--parts mnist needs --idx DIR" in capsys.readouterr().err
