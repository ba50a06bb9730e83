"""Tests for the dataset registry (`bench.data`) and the shipped tiny-imagenette file.

Fast tests use tiny files written here; tests on the real data in ../shared/data skip when it is
absent. Images come back as float tensors [3, H, W].
"""

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tv_datasets

from bench.data import list_datasets, load_dataset, register_dataset
from bench.data.tiny_imagenette import TINY_IMAGENETTE_PATH, decode_mosaic, encode_mosaic, read_tiny_imagenette
from bench.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} absent")


def labels_of(dataset) -> list[int]:
    return [label for _, label in dataset]


def denormalize(image: torch.Tensor, info) -> torch.Tensor:
    """Back from a normalized [3, H, W] tensor to 0..255 pixel values."""
    mean, std = torch.tensor(info.mean)[:, None, None], torch.tensor(info.std)[:, None, None]
    return (image * std + mean) * 255


def write_cifar100(root: Path, train_count: int = 30, test_count: int = 12) -> dict:
    """Write tiny files in the official cifar-100-python format; returns the data written."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, count in (("train", train_count), ("test", test_count)):
        written[split] = {
            "data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            "fine_labels": [int(label) for label in rng.integers(0, 100, size=count)],
            "coarse_labels": [int(label) for label in rng.integers(0, 20, size=count)],
            "filenames": [f"image_{index}.png" for index in range(count)],
            "batch_label": f"{split} batch",
        }
        (folder / split).write_bytes(pickle.dumps(written[split]))
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return written


def write_image_tree(root: Path, splits=("train", "val"), size=(12, 10), per_class: int = 3):
    """A tree of small PNGs, root/<split>/<class>/<n>.png; `size` is (width, height)."""
    for split in splits:
        for class_index, class_name in enumerate(("cat", "dog")):
            (root / split / class_name).mkdir(parents=True)
            for index in range(per_class):
                pixels = np.full((size[1], size[0], 3), 40 * class_index + index, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / class_name / f"{index}.png")


# --- Registry -----------------------------------------------------------------------------------


def test_list_datasets_has_the_builtin_names():
    names = list_datasets()
    for name in ("tiny-imagenette", "cifar10", "cifar100", "imagenette", "imagenette-320", "imagenette-full"):
        assert name in names
    assert names == sorted(names)


def test_unknown_name_is_a_one_line_user_error_listing_the_names():
    with pytest.raises(UserError) as caught:
        load_dataset("cifar1000")
    message = str(caught.value)
    assert "\n" not in message
    assert "cifar1000" in message and "folder:PATH" in message
    for name in list_datasets():
        assert name in message


def test_duplicate_registration_is_refused():
    with pytest.raises(UserError, match="tiny-imagenette"):
        register_dataset("tiny-imagenette", description="again")(lambda root: None)


@pytest.mark.parametrize("keyword", ["train_subset", "test_subset", "image_size"])
@pytest.mark.parametrize("value", [0, -5, 2.5])
def test_bad_sizes_are_user_errors(keyword, value):
    with pytest.raises(UserError, match=keyword):
        load_dataset("tiny-imagenette", **{keyword: value})


# --- Subsets ------------------------------------------------------------------------------------


def test_subsets_are_balanced_sized_and_fixed_by_the_seed():
    splits = load_dataset("tiny-imagenette", train_subset=103, test_subset=20, seed=3)
    assert len(splits.train) == 103 and len(splits.test) == 20
    train_counts = Counter(splits.train.dataset.base.labels[splits.train.indices].tolist())
    assert len(train_counts) == 10 and max(train_counts.values()) - min(train_counts.values()) <= 1
    assert Counter(labels_of(splits.test)) == {label: 2 for label in range(10)}
    again = load_dataset("tiny-imagenette", train_subset=103, test_subset=20, seed=3)
    assert again.train.indices == splits.train.indices and again.test.indices == splits.test.indices
    other = load_dataset("tiny-imagenette", train_subset=103, seed=4)
    assert other.train.indices != splits.train.indices


def test_subset_larger_than_the_split_gives_the_whole_split():
    splits = load_dataset("tiny-imagenette", train_subset=10**6, test_subset=10**6)
    assert len(splits.train) == 6200 and len(splits.test) == 2000


def test_calibration_is_the_train_subset_without_augmentation():
    splits = load_dataset("tiny-imagenette", train_subset=30, augment=False)
    assert splits.calibration.indices == splits.train.indices
    for index in range(5):
        image, label = splits.train[index]
        calibration_image, calibration_label = splits.calibration[index]
        assert torch.equal(image, calibration_image) and label == calibration_label
    augmented = load_dataset("tiny-imagenette", train_subset=30)
    assert any(not torch.equal(augmented.train[i][0], augmented.calibration[i][0]) for i in range(30))


# --- Tiny Imagenette (shipped) ------------------------------------------------------------------


def test_tiny_imagenette_loads_real_32px_images_within_budget():
    assert TINY_IMAGENETTE_PATH.stat().st_size <= 8_000_000
    splits = load_dataset("tiny-imagenette")
    info = splits.info
    assert (info.num_classes, info.image_size, info.channels) == (10, 32, 3)
    assert len(info.mean) == len(info.std) == 3
    image, label = splits.test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert Counter(labels_of(splits.test)) == {label: 200 for label in range(10)}


def test_tiny_imagenette_file_records_its_provenance_and_stats():
    arrays = read_tiny_imagenette()
    assert "Imagenette" in str(arrays["provenance"])
    assert arrays["train_images"].shape == (6200, 32, 32, 3)
    assert len(arrays["train_sources"]) == 6200 and len(arrays["class_names"]) == 10
    pixels = arrays["train_images"].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(arrays["mean"], pixels.mean(axis=0), atol=1e-4)


def test_tiny_imagenette_resizes_on_request():
    splits = load_dataset("tiny-imagenette", train_subset=4, test_subset=4, image_size=16)
    assert splits.info.image_size == 16
    assert splits.train[0][0].shape == splits.test[0][0].shape == (3, 16, 16)


def test_mosaic_round_trip_keeps_tiles_apart():
    tiles = np.zeros((70, 32, 32, 3), dtype=np.uint8)
    tiles[::2] = 255  # neighbours alternate black and white: any bleeding would show
    decoded = decode_mosaic(encode_mosaic(tiles, quality=95), len(tiles), 32)
    assert decoded.shape == tiles.shape
    assert np.abs(decoded.astype(int) - tiles).max() <= 2


# --- CIFAR --------------------------------------------------------------------------------------


def test_cifar100_reads_official_format_files(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path)
    monkeypatch.setattr(tv_datasets.CIFAR100, "download", lambda self: pytest.fail("downloaded"))
    splits = load_dataset("cifar100", tmp_path, augment=False)
    assert splits.info.num_classes == 100 and splits.info.image_size == 32
    assert len(splits.train) == 30 and len(splits.test) == 12
    image, label = splits.test[5]
    assert image.shape == (3, 32, 32) and label == written["test"]["fine_labels"][5]
    expected = torch.from_numpy(written["test"]["data"][5].reshape(3, 32, 32)).float()
    torch.testing.assert_close(denormalize(image, splits.info), expected, atol=1e-3, rtol=0)
    assert labels_of(splits.train) == written["train"]["fine_labels"]


def test_corrupt_cifar_file_is_a_user_error(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="corrupt") as caught:
        load_dataset("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python" / "train") in str(caught.value)


def test_missing_cifar_with_failed_download_says_where_it_looked(tmp_path, monkeypatch):
    def no_network(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_datasets.CIFAR100, "download", no_network)
    with pytest.raises(UserError) as caught:
        load_dataset("cifar100", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "cifar-100-python") in message and "cifar-100-python.tar.gz" in message
    assert "\n" not in message


# --- Image folders ------------------------------------------------------------------------------


def test_folder_dataset_infers_classes_and_size(tmp_path):
    write_image_tree(tmp_path, splits=("train", "test"))
    splits = load_dataset(f"folder:{tmp_path}", augment=False)
    assert splits.info.num_classes == 2 and splits.info.image_size == 10
    assert len(splits.train) == 6 and len(splits.test) == 6
    image, label = splits.train[4]
    assert image.shape == (3, 10, 10) and label == 1
    torch.testing.assert_close(denormalize(image, splits.info), torch.full((3, 10, 10), 41.0), atol=1e-3, rtol=0)
    resized = load_dataset(f"folder:{tmp_path}", image_size=8, train_subset=2)
    assert resized.train[0][0].shape == (3, 8, 8) and len(resized.train) == 2


def test_folder_without_train_or_val_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="train"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    write_image_tree(tmp_path, splits=("train",))
    with pytest.raises(UserError, match="val"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_with_different_classes_is_a_user_error(tmp_path):
    write_image_tree(tmp_path)
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "wolf")
    with pytest.raises(UserError, match="class folders differ"):
        load_dataset(f"folder:{tmp_path}")


# --- Imagenette and real data -------------------------------------------------------------------


def test_missing_imagenette_names_the_path_it_looked_at(tmp_path):
    with pytest.raises(UserError) as caught:
        load_dataset("imagenette-320", tmp_path)
    assert str(tmp_path / "imagenette2-320") in str(caught.value)


@needs_shared_data
def test_imagenette_from_shared_data():
    splits = load_dataset("imagenette", SHARED_DATA, train_subset=20, test_subset=10)
    assert splits.info.num_classes == 10 and splits.info.image_size == 160
    assert splits.train[0][0].shape == splits.test[0][0].shape == (3, 160, 160)
    assert Counter(labels_of(splits.test)) == {label: 1 for label in range(10)}
    small = load_dataset("imagenette", SHARED_DATA, train_subset=10, test_subset=10, image_size=32)
    assert small.train[3][0].shape == small.calibration[3][0].shape == (3, 32, 32)


def test_imagenette_layout_with_greyscale_images_loads_as_rgb(tmp_path):
    for split in ("train", "val"):
        for wnid in ("n01440764", "n02102040"):
            (tmp_path / "imagenette2-160" / split / wnid).mkdir(parents=True)
            grey = Image.fromarray(np.full((160, 120), 99, dtype=np.uint8), mode="L")
            grey.save(tmp_path / "imagenette2-160" / split / wnid / "a.JPEG")
    splits = load_dataset("imagenette", tmp_path, image_size=32)
    assert splits.info.num_classes == 2 and len(splits.train) == len(splits.test) == 2
    assert splits.train[1][0].shape == splits.test[0][0].shape == (3, 32, 32)
    assert labels_of(splits.test) == [0, 1]


@needs_shared_data
def test_folder_cifar10_jpeg_from_shared_data():
    splits = load_dataset(f"folder:{SHARED_DATA / 'cifar10-jpeg'}", train_subset=20, test_subset=10)
    assert (splits.info.num_classes, splits.info.image_size) == (10, 32)
    assert len(splits.train) == 20 and splits.test[0][0].shape == (3, 32, 32)
