"""Loaders read generated trees/files in the official layouts with correct labels; wrong layouts fail in one line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from model_zoo.datasets import DatasetError, load_dataset


def test_digits_shapes_split_and_normalization() -> None:
    d = load_dataset("digits", input_size=32)
    assert d.num_classes == 10 and d.input_shape == (3, 32, 32)
    assert len(d.train) == 1438 and len(d.test) == 359  # 1797 images, round(0.2·1797) test
    x = d.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    again = load_dataset("digits", input_size=64)
    assert again.input_shape == (3, 64, 64)
    assert torch.equal(again.test.tensors[1], d.test.tensors[1])  # same deterministic split


def test_synthetic_any_shape() -> None:
    d = load_dataset("synthetic", num_samples=100, num_classes=4, input_shape=(5,), seed=3)
    assert d.input_shape == (5,) and d.num_classes == 4 and len(d.train) == 80
    assert set(d.train.tensors[1].tolist()) == {0, 1, 2, 3}


def _jpeg(path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path, "JPEG", quality=95)


COLOURS = {"n02": (250, 10, 10), "n01": (10, 250, 10), "n03": (10, 10, 250)}


def _tiny_tree(root) -> None:
    (root / "wnids.txt").write_text("n02\nn01\nn03\n")
    lines = []
    for w, c in COLOURS.items():
        for i in range(2):
            _jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", c)
        _jpeg(root / "val" / "images" / f"val_{w}.JPEG", c)
        lines.append(f"val_{w}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_layout_and_labels(tmp_path) -> None:
    _tiny_tree(tmp_path)
    d = load_dataset("tiny-imagenet", tmp_path)
    assert d.num_classes == 3 and len(d.train) == 6 and len(d.test) == 3 and d.input_shape == (3, 64, 64)
    # labels follow sorted wnids: n01 → 0 (green), n02 → 1 (red), n03 → 2 (blue)
    for ds in (d.train, d.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 64, 64)
            assert int(x.mean(dim=(1, 2)).argmax()) == {0: 1, 1: 0, 2: 2}[y]
    small = load_dataset("tiny-imagenet", tmp_path, input_size=32)
    assert small.train[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("breakage,needle", [
    (lambda r: (r / "wnids.txt").unlink(), "missing"),
    (lambda r: [p.unlink() for p in (r / "train" / "n01" / "images").iterdir()], "no .JPEG files"),
    (lambda r: (r / "val" / "val_annotations.txt").write_text("val_n01.JPEG\tn99\n"), "line 1"),
    (lambda r: (r / "val" / "images" / "val_n01.JPEG").unlink(), "missing image"),
])
def test_tiny_imagenet_wrong_layouts(tmp_path, breakage, needle) -> None:
    _tiny_tree(tmp_path)
    breakage(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset("tiny-imagenet", tmp_path)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and "train/<wnid>/images/*.JPEG" in msg


def _cifar_files(root, hundred: bool) -> None:
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for j, n in enumerate(names):
        labels = [(3 * j + i) % 5 for i in range(4)]
        data = rng.integers(0, 255, (4, 3072), dtype=np.uint8)
        data[:, :1024] = np.array(labels, dtype=np.uint8)[:, None] * 40  # red channel encodes the label
        with open(folder / n, "wb") as fh:
            pickle.dump({"data": data, key: labels}, fh)
    meta = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    with open(folder / meta[0], "wb") as fh:
        pickle.dump({meta[1]: [f"c{i}" for i in range(5)]}, fh)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickles(tmp_path, hundred) -> None:
    _cifar_files(tmp_path, hundred)
    name = "cifar100" if hundred else "cifar10"
    d = load_dataset(name, tmp_path)
    assert d.num_classes == 5 and d.input_shape == (3, 32, 32)
    assert len(d.train) == (4 if hundred else 20) and len(d.test) == 4
    x, y = d.train.tensors
    red = (x[:, 0] * 0.2470 + 0.4914) * 255  # undo normalization of the red channel
    assert torch.allclose(red.mean(dim=(1, 2)), y.float() * 40, atol=0.01)
    assert load_dataset(name, tmp_path, input_size=64).train.tensors[0].shape[-1] == 64


def test_cifar_and_unknown_errors(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"missing .*data_batch_1.*expected .*cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)
    _cifar_files(tmp_path, False)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="cannot read the pickles"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DatasetError, match="did you mean cifar10"):
        load_dataset("cifar-10x")
    with pytest.raises(DatasetError, match="needs --data-path"):
        load_dataset("tiny-imagenet")
