"""The dataset registry: every dataset the suite runs on, loaded as train / test / calibration splits.

Every item is (image, label): image a float tensor [C, H, W] (C = 3, H = W = info.image_size),
normalized with the dataset's mean and std; label an int in [0, info.num_classes).
`calibration` holds the same train images as `train` but without augmentation, for ANN->SNN
threshold calibration. Subsets are class-balanced and fixed by the seed (see `_subset_indices`).

Names: the registered ones (`list_datasets()`) plus `folder:PATH` for any image-folder tree.
"""

import contextlib
import dataclasses
import functools
import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv_datasets
from torchvision.transforms import v2

from bench.data.tiny_imagenette import TINY_IMAGENETTE_PATH, read_tiny_imagenette
from bench.errors import UserError
from bench.registry import Registry, describe

DEFAULT_DATA_ROOT = Path("~/.cache/spikebench/data").expanduser()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Above this size, train augmentation is RandomResizedCrop; at or below it, a padded random crop.
LARGE_IMAGE_SIZE = 64
FOLDER_PREFIX = "folder:"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class DatasetSplits:
    info: DatasetInfo
    train: Dataset
    test: Dataset
    calibration: Dataset


@dataclass
class _RawSplits:
    """What a builder returns: un-normalized images (PIL or uint8 [C, H, W]) and their labels."""

    info: DatasetInfo
    train: Dataset
    test: Dataset
    train_labels: Sequence[int]
    test_labels: Sequence[int]
    # True when every image is already info.image_size square, so no resize is needed.
    square: bool


@dataclass(frozen=True)
class DatasetEntry:
    builder: Callable[[Path], _RawSplits]
    description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, *, description: str):
    """Decorator: register `builder(root: Path) -> _RawSplits` under `name`."""

    def decorator(builder):
        DATASETS.add(name, DatasetEntry(builder, description), origin=describe(builder))
        return builder

    return decorator


def list_datasets(pattern: str = "*") -> list[str]:
    """The registered names, sorted (`folder:PATH` is accepted too but is not listed)."""
    return DATASETS.names(pattern)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    augment: bool = True,
    image_size: int | None = None,
) -> DatasetSplits:
    """Load `name` as normalized tensor splits.

    `root` holds downloaded datasets (default ~/.cache/spikebench/data); tiny-imagenette and
    folder:PATH ignore it. `train_subset` / `test_subset` pick class-balanced subsets fixed by
    `seed`; `image_size` resizes every split to that square size; `augment=False` gives `train`
    the same deterministic transform as `test` and `calibration`.
    """
    for label, value in (("train_subset", train_subset), ("test_subset", test_subset), ("image_size", image_size)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise UserError(f"{label} must be a positive integer or unset, got {value!r}")
    raw = _build_raw(name, Path(root).expanduser() if root is not None else DEFAULT_DATA_ROOT)
    info = dataclasses.replace(raw.info, image_size=image_size or raw.info.image_size)
    needs_fit = not raw.square or info.image_size != raw.info.image_size
    eval_transform = _eval_transform(info, needs_fit)
    train_transform = _train_transform(info, needs_fit) if augment else eval_transform
    train_indices = _subset_indices(raw.train_labels, train_subset, seed)
    test_indices = _subset_indices(raw.test_labels, test_subset, seed)
    return DatasetSplits(
        info=info,
        train=_maybe_subset(_Transformed(raw.train, train_transform), train_indices),
        test=_maybe_subset(_Transformed(raw.test, eval_transform), test_indices),
        calibration=_maybe_subset(_Transformed(raw.train, eval_transform), train_indices),
    )


def _build_raw(name: str, root: Path) -> _RawSplits:
    if name.startswith(FOLDER_PREFIX):
        return _image_folder(name)
    if name not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}; registered datasets: "
            f"{', '.join(list_datasets())}, or folder:PATH for an image-folder tree"
        )
    return DATASETS.get(name).builder(root)


# --- Subsets and transforms -------------------------------------------------------------------


def _subset_indices(labels: Sequence[int], count: int | None, seed: int) -> list[int] | None:
    """Sorted indices of a class-balanced subset of `count` items, fixed by `seed`.

    Items are taken round-robin over classes (every class's first random pick, then every class's
    second, ...), so class counts differ by at most one until a class runs out. A count at or
    above the split's size gives the whole split. None (no subset) gives None.
    """
    if count is None:
        return None
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    shuffled = rng.permutation(len(labels))
    # Group the shuffled indices by class; an item's rank is its position within its group.
    grouped = shuffled[np.argsort(labels[shuffled], kind="stable")]
    group_start = np.searchsorted(labels[grouped], labels[grouped])
    rank_in_class = np.empty(len(labels))
    rank_in_class[grouped] = np.arange(len(labels)) - group_start
    # The random fraction orders classes randomly within each round of the round-robin.
    order = np.argsort(rank_in_class + rng.random(len(labels)), kind="stable")
    return np.sort(order[:count]).tolist()


def _maybe_subset(dataset: Dataset, indices: list[int] | None) -> Dataset:
    return dataset if indices is None else Subset(dataset, indices)


def _to_normalized_tensor(info: DatasetInfo) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std), v2.ToPureTensor()]


def _fit(size: int) -> list:
    # Shorter side to `size`, then the central square: keeps the aspect ratio of the content.
    return [v2.Resize(size, antialias=True), v2.CenterCrop(size)]


def _eval_transform(info: DatasetInfo, needs_fit: bool) -> v2.Compose:
    size = info.image_size
    return v2.Compose([*(_fit(size) if needs_fit else []), *_to_normalized_tensor(info)])


def _train_transform(info: DatasetInfo, needs_fit: bool) -> v2.Compose:
    size = info.image_size
    if size > LARGE_IMAGE_SIZE:
        crop = [v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True)]
    else:
        # The CIFAR recipe, 4 px of padding at 32 px, scaled with the image.
        padding = max(1, round(size * 4 / 32))
        crop = [*(_fit(size) if needs_fit else []), v2.RandomCrop(size, padding=padding)]
    return v2.Compose([*crop, v2.RandomHorizontalFlip(), *_to_normalized_tensor(info)])


class _Transformed(Dataset):
    """A view of `base` with `transform` applied to each image; labels become plain ints."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), int(label)


class _TensorImages(Dataset):
    """In-memory images uint8 [N, C, H, W] with labels [N]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


# --- CIFAR ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: type


_CIFAR10 = _CifarSpec(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "labels",
    10,
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
    tv_datasets.CIFAR10,
)
_CIFAR100 = _CifarSpec(
    "cifar100",
    "cifar-100-python",
    ("train",),
    ("test",),
    "fine_labels",
    100,
    (0.5071, 0.4865, 0.4409),
    (0.2673, 0.2564, 0.2762),
    tv_datasets.CIFAR100,
)


@register_dataset("cifar10", description="CIFAR-10: 10 classes, 32x32, 50k train / 10k test")
def _cifar10(root: Path) -> _RawSplits:
    return _cifar(_CIFAR10, root)


@register_dataset("cifar100", description="CIFAR-100: 100 classes, 32x32, 50k train / 10k test")
def _cifar100(root: Path) -> _RawSplits:
    return _cifar(_CIFAR100, root)


def _cifar(spec: _CifarSpec, root: Path) -> _RawSplits:
    folder = root / spec.folder
    if not folder.is_dir():
        _download_cifar(spec, root)
    train_images, train_labels = _read_cifar_files(spec, folder, spec.train_files)
    test_images, test_labels = _read_cifar_files(spec, folder, spec.test_files)
    info = DatasetInfo(spec.name, spec.num_classes, 32, 3, spec.mean, spec.std)
    return _RawSplits(
        info,
        _TensorImages(train_images, train_labels),
        _TensorImages(test_images, test_labels),
        train_labels,
        test_labels,
        True,
    )


def _download_cifar(spec: _CifarSpec, root: Path) -> None:
    try:
        spec.torchvision_class(str(root), train=True, download=True)
    # Whatever stops a download (no network, proxy, full disk, bad checksum) is the environment's
    # problem, not a bug, so every failure becomes one line telling the user what to do.
    except Exception as error:
        raise UserError(
            f"{spec.name} not found at {root / spec.folder} and downloading it failed "
            f"({type(error).__name__}: {error}); download "
            f"{spec.torchvision_class.url} and extract it into {root}, or pass the data root "
            f"that contains {spec.folder}/"
        ) from error


def _read_cifar_files(spec: _CifarSpec, folder: Path, names: Sequence[str]):
    """Read official pickled CIFAR batches: images uint8 [N, 3, 32, 32] and labels int64 [N]."""
    images, labels = [], []
    for name in names:
        path = folder / name
        # Reading the pickles directly, rather than through torchvision, skips its MD5 check so
        # any files in the official format load (tests write tiny ones).
        try:
            with open(path, "rb") as file:
                batch = pickle.load(file, encoding="latin1")
            batch_images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch[spec.label_key], dtype=np.int64).reshape(-1)
        except Exception as error:  # a damaged pickle can fail in many ways; all mean "corrupt"
            raise _corrupt_cifar(spec, path, f"{type(error).__name__}: {error}") from error
        if len(batch_labels) != len(batch_images):
            raise _corrupt_cifar(spec, path, "image and label counts differ")
        in_range = (batch_labels >= 0) & (batch_labels < spec.num_classes)
        if not in_range.all():
            raise _corrupt_cifar(spec, path, f"labels outside 0..{spec.num_classes - 1}")
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _corrupt_cifar(spec: _CifarSpec, path: Path, reason: str) -> UserError:
    return UserError(
        f"{spec.name} file {path} is missing or corrupt ({reason}); delete "
        f"{path.parent} and download {spec.torchvision_class.url} again"
    )


# --- Imagenette -------------------------------------------------------------------------------


@register_dataset("imagenette", description="Imagenette, 160 px: 10 classes, 9.5k / 3.9k")
def _imagenette_160(root: Path) -> _RawSplits:
    return _imagenette(root, "imagenette", "160px", default_size=160)


@register_dataset("imagenette-320", description="Imagenette, 320 px: 10 classes, 9.5k / 3.9k")
def _imagenette_320(root: Path) -> _RawSplits:
    return _imagenette(root, "imagenette-320", "320px", default_size=320)


@register_dataset("imagenette-full", description="Imagenette, full size, served at 224 px")
def _imagenette_full(root: Path) -> _RawSplits:
    return _imagenette(root, "imagenette-full", "full", default_size=224)


def _imagenette(root: Path, name: str, size: str, default_size: int) -> _RawSplits:
    folder = root / ("imagenette2" if size == "full" else f"imagenette2-{size[:-2]}")
    if not ((folder / "train").is_dir() and (folder / "val").is_dir()):
        raise UserError(
            f"Imagenette ({size}) not found: looked for {folder}/train and {folder}/val; download "
            f"https://s3.amazonaws.com/fast-ai-imageclas/{folder.name}.tgz and extract it into "
            f"{root}, or pass the data root that contains {folder.name}/"
        )
    try:
        splits = [tv_datasets.Imagenette(str(root), split=split, size=size) for split in ("train", "val")]
    except (FileNotFoundError, RuntimeError) as error:
        raise UserError(f"Imagenette at {folder} is incomplete ({error}); extract it again") from error
    # The labels from the file list, as torchvision's loader builds it, without decoding any image.
    train_labels, test_labels = (
        [
            label
            for _, label in tv_datasets.DatasetFolder.make_dataset(
                str(folder / split_name), split.wnid_to_idx, extensions=(".jpeg",)
            )
        ]
        for split_name, split in zip(("train", "val"), splits)
    )
    info = DatasetInfo(name, len(splits[0].wnids), default_size, 3, IMAGENET_MEAN, IMAGENET_STD)
    # Official Imagenette images are not square; greyscale ones are made RGB by the loader.
    return _RawSplits(info, splits[0], splits[1], train_labels, test_labels, square=False)


# --- Tiny Imagenette (shipped) ----------------------------------------------------------------


@register_dataset(
    "tiny-imagenette",
    description="the default: 6,200 train / 2,000 test Imagenette images at 32x32, shipped in the package",
)
def _tiny_imagenette(root: Path) -> _RawSplits:
    del root  # the data ships inside the package
    info, train, test = _read_tiny_imagenette()
    return _RawSplits(info, train, test, train.labels, test.labels, square=True)


@functools.lru_cache(maxsize=1)
def _read_tiny_imagenette():
    try:
        arrays = read_tiny_imagenette(TINY_IMAGENETTE_PATH)
    except (OSError, KeyError, ValueError) as error:
        raise UserError(
            f"the shipped dataset {TINY_IMAGENETTE_PATH} is missing or corrupt ({error}); "
            f"reinstall spikebench or rebuild it with python -m bench.data.make_tiny_imagenette "
            f"--source PATH/imagenette2-160"
        ) from error
    train, test = (
        _TensorImages(
            torch.from_numpy(arrays[f"{split}_images"]).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(arrays[f"{split}_labels"]),
        )
        for split in ("train", "test")
    )
    info = DatasetInfo(
        "tiny-imagenette",
        len(arrays["wnids"]),
        train.images.shape[-1],
        3,
        tuple(arrays["mean"].tolist()),
        tuple(arrays["std"].tolist()),
    )
    return info, train, test


# --- Any image folder -------------------------------------------------------------------------


def _image_folder(name: str) -> _RawSplits:
    """`folder:PATH`: PATH/train plus PATH/val (or PATH/test), one subfolder of images per class."""
    path = Path(name[len(FOLDER_PREFIX) :]).expanduser()
    test_dir = next((path / split for split in ("val", "test") if (path / split).is_dir()), None)
    if not (path / "train").is_dir() or test_dir is None:
        raise UserError(
            f"{name}: expected {path}/train and {path}/val (or {path}/test), each "
            f"holding one folder of images per class"
        )
    try:
        train = tv_datasets.ImageFolder(str(path / "train"))
        test = tv_datasets.ImageFolder(str(test_dir))
    except FileNotFoundError as error:
        raise UserError(f"{name}: {error}") from error
    if train.classes != test.classes:
        raise UserError(
            f"{name}: class folders differ between {path / 'train'} and {test_dir}; both need the same class subfolders"
        )
    if len(train.classes) < 2:
        raise UserError(
            f"{name}: {path / 'train'} holds {len(train.classes)} class folder; a benchmark needs at least two"
        )
    check_decodable(name, [file for file, _ in train.samples + test.samples])
    try:
        with Image.open(train.samples[0][0]) as first:
            image_size = min(first.size)
        mean, std = _sample_channel_stats([file for file, _ in train.samples])
    except OSError as error:  # PIL's error names the unreadable file
        raise UserError(f"{name}: cannot read an image ({error})") from error
    info = DatasetInfo(name, len(train.classes), image_size, 3, mean, std)
    return _RawSplits(info, train, test, train.targets, test.targets, square=False)


CHECKED_DIR = DEFAULT_DATA_ROOT.parent / "checked"


def check_decodable(name: str, files: list[str]) -> None:
    """Decode every image once, before any training, so that a damaged file stops the run up front
    instead of in the middle of an epoch; a folder whose file list, sizes and times are unchanged
    since it passed is not decoded again (a marker under ~/.cache/spikebench/checked)."""
    stats = [(file, os.stat(file).st_size, os.stat(file).st_mtime_ns) for file in files]
    marker = CHECKED_DIR / (hashlib.sha256(repr(stats).encode()).hexdigest()[:24] + ".ok")
    if marker.is_file():
        return
    broken = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as error:
            broken.append(f"{file} ({error})")
    if broken:
        raise UserError(
            f"{name}: {len(broken)} of {len(files)} images cannot be decoded, the first {broken[0]}; "
            f"remove or replace them"
        )
    with contextlib.suppress(OSError):  # a read-only cache only means checking again next time
        CHECKED_DIR.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{name}: {len(files)} images decoded\n")


def _sample_channel_stats(files: Sequence[str], sample_size: int = 256):
    """Per-channel mean and std estimated from a fixed sample of images shrunk to <= 64 px.

    Shrinking (JPEG decodes at reduced scale) keeps this cheap even for large photos.
    """
    picks = np.random.default_rng(0).permutation(len(files))[:sample_size]
    pixels = []
    for index in picks:
        with Image.open(files[index]) as image:
            image.thumbnail((64, 64))
            pixels.append(np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255)
    pixels = np.concatenate(pixels)
    return tuple(pixels.mean(axis=0).round(4).tolist()), tuple(pixels.std(axis=0).round(4).tolist())
