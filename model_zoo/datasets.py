"""Datasets for training runs: offline ``digits`` (default), ``synthetic``, Tiny ImageNet, CIFAR-10/100.

Nothing is downloaded. ``digits`` ships with scikit-learn, ``synthetic`` is generated, and the image
datasets are read from their official on-disk layouts. A missing or malformed path raises
:class:`DatasetError` whose one-line message states the layout that was expected, because that is what a
user needs to fix it.

Every split is a map-style dataset returning ``(image float32 [C,H,W], label int64)``; batching order is
decided by the training loop (``training.py``), which draws a seeded permutation per epoch so that a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DATASETS = ("digits", "synthetic", "tiny-imagenet", "cifar10", "cifar100")


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message (one line) names the expected layout."""


@dataclass
class DataSplit:
    """Train and test splits with the facts a model needs (one sample's shape, class count)."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def load_digits(input_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """scikit-learn's 8×8 digits (1797 images, 10 classes) as 3×S×S images, standardized with train stats.

    The split is a fixed permutation (``seed``), so every run and every machine sees the same split."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = _resize(x, int(input_size)).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    return DataSplit("digits", TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]), 10, tuple(x.shape[1:]))


def load_synthetic(num_samples: int = 1024, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                   seed: int = 0, test_fraction: float = 0.2, noise: float = 1.0) -> DataSplit:
    """Gaussian clusters: class means ~ N(0, I), samples = mean + noise · N(0, I); any shape, any K."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(v) for v in input_shape)
    means = torch.randn(num_classes, *shape, generator=g)
    y = torch.arange(num_samples) % num_classes
    y = y[torch.randperm(num_samples, generator=g)]
    x = means[y] + noise * torch.randn(num_samples, *shape, generator=g)
    n_test = int(round(num_samples * test_fraction))
    return DataSplit("synthetic", TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test]),
                     int(num_classes), shape)


class ImageFiles(Dataset):
    """Images read lazily from files (Tiny ImageNet): RGB, resized to ``size``, ImageNet-normalized."""

    def __init__(self, files: list[str], labels: list[int], size: int) -> None:
        self.files, self.labels, self.size = files, labels, int(size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
        return _normalize(x, IMAGENET_MEAN, IMAGENET_STD)[0], self.labels[i]


TINY_LAYOUT = ("expected the official Tiny ImageNet layout: {p}/wnids.txt, {p}/train/<wnid>/images/*.JPEG, "
               "{p}/val/images/*.JPEG and {p}/val/val_annotations.txt")


def load_tiny_imagenet(path: str | os.PathLike, input_size: int = 64) -> DataSplit:
    """Tiny ImageNet (200 classes, 64×64): labels follow the sorted wnids; val labels from the annotations."""
    root = Path(path)
    layout = TINY_LAYOUT.format(p=root)

    def fail(what: str) -> DatasetError:
        return DatasetError(f"Tiny ImageNet: {what}; {layout}")

    if not root.is_dir():
        raise fail(f"{root} is not a directory")
    if not (root / "wnids.txt").is_file():
        raise fail(f"missing {root / 'wnids.txt'}")
    wnids = sorted(w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip())
    if not wnids:
        raise fail("wnids.txt lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    for w in wnids:
        d = root / "train" / w / "images"
        if not d.is_dir():
            raise fail(f"missing {d}")
        imgs = sorted(str(f) for f in d.iterdir() if f.suffix.lower() in (".jpeg", ".jpg"))
        if not imgs:
            raise fail(f"no .JPEG files in {d}")
        files += imgs
        labels += [index[w]] * len(imgs)
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file() or not (root / "val" / "images").is_dir():
        raise fail(f"missing {ann} or {root / 'val' / 'images'}")
    vfiles, vlabels = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not line.strip():
            continue
        if len(parts) < 2 or parts[1] not in index:
            raise fail(f"{ann} line {n} is not '<file>\\t<wnid>\\t…' with a wnid from wnids.txt")
        f = root / "val" / "images" / parts[0]
        if not f.is_file():
            raise fail(f"{ann} line {n} names missing image {f}")
        vfiles.append(str(f))
        vlabels.append(index[parts[1]])
    if not vfiles:
        raise fail(f"{ann} lists no images")
    size = int(input_size)
    return DataSplit("tiny-imagenet", ImageFiles(files, labels, size), ImageFiles(vfiles, vlabels, size),
                     len(wnids), (3, size, size))


def _cifar_class(hundred: bool):
    """torchvision's CIFAR reader with presence checks instead of md5 (files are read as pickles either way)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR100 if hundred else CIFAR10

    class LocalCIFAR(base):  # type: ignore[misc, valid-type]
        train_list = [[n, None] for n, _ in base.train_list]
        test_list = [[n, None] for n, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return LocalCIFAR


def load_cifar(path: str | os.PathLike, hundred: bool = False, input_size: int = 32) -> DataSplit:
    """CIFAR-10/100 from the python pickles (``cifar-10-batches-py/`` or ``cifar-100-python/`` under path)."""
    cls = _cifar_class(hundred)
    root = Path(path)
    files = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    expected = f"{root}/{cls.base_folder}/{{{','.join(files)}}} (python pickles of cifar-{'100' if hundred else '10'}-python.tar.gz)"
    name = "cifar100" if hundred else "cifar10"
    missing = [f for f in files if not (root / cls.base_folder / f).is_file()]
    if missing:
        raise DatasetError(f"{name}: missing {root / cls.base_folder / missing[0]}; expected {expected}")
    try:
        splits = [cls(str(root), train=t, download=False) for t in (True, False)]
    except Exception as exc:  # corrupt pickles raise many types
        raise DatasetError(f"{name}: cannot read the pickles under {root / cls.base_folder} "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())}); expected {expected}") from None
    out = []
    for ds in splits:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float() / 255.0
        x = _normalize(_resize(x, int(input_size)), CIFAR_MEAN, CIFAR_STD)
        out.append(TensorDataset(x, torch.tensor(ds.targets, dtype=torch.long)))
    return DataSplit(name, out[0], out[1], len(splits[0].classes), (3, int(input_size), int(input_size)))


def load_dataset(name: str = "digits", path: str | os.PathLike | None = None, input_size: int | None = None,
                 **options) -> DataSplit:
    """Resolve a dataset name (``digits``, ``synthetic``, ``tiny-imagenet``, ``cifar10``, ``cifar100``)."""
    key = name.lower().replace("_", "-")
    if key == "digits":
        return load_digits(input_size or 32, **options)
    if key == "synthetic":
        if input_size is not None and "input_shape" not in options:
            options["input_shape"] = (3, input_size, input_size)
        return load_synthetic(**options)
    if key in ("tiny-imagenet", "tinyimagenet", "cifar10", "cifar100"):
        if path is None:
            raise DatasetError(f"dataset {name!r} needs --data-path pointing at its extracted files")
        if key.startswith("tiny"):
            return load_tiny_imagenet(path, input_size or 64)
        return load_cifar(path, hundred=key == "cifar100", input_size=input_size or 32)
    import difflib

    close = difflib.get_close_matches(key, DATASETS, n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise DatasetError(f"unknown dataset {name!r}{hint}; choose from {', '.join(DATASETS)}")
