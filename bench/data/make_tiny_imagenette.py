"""Build `bench/data/tiny_imagenette.npz`, the default dataset shipped with the package.

Draws a fixed, class-balanced sample of Imagenette (train images from its train split, test images
from its val split), center-crops each to a square, resizes it to 32x32 with PIL's antialiasing
LANCZOS filter and stores each split as a JPEG mosaic (see `bench.data.tiny_imagenette`). Images are [N, 32, 32, 3]
uint8. The output is deterministic: the same source and arguments give the same bytes.

    python -m bench.data.make_tiny_imagenette --source ../shared/data/imagenette2-160 \
        --out bench/data/tiny_imagenette.npz
"""

import argparse
import random
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.tiny_imagenette import TILES_PER_ROW, decode_mosaic, encode_mosaic, save_npz

READABLE_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="an imagenette2-160 folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("tiny_imagenette.npz"))
    parser.add_argument("--train-per-class", type=int, default=620)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the mosaics")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def pick_files(split_dir: Path, per_class: int, seed: int) -> tuple[list[Path], list[int]]:
    """A seeded sample of `per_class` files from each class folder, in sorted order."""
    files, labels = [], []
    for label, wnid in enumerate(sorted(READABLE_NAMES)):
        class_files = sorted((split_dir / wnid).iterdir())
        # One generator per class and split, so changing one count leaves the other picks alone.
        chosen = random.Random(f"{seed}/{split_dir.name}/{wnid}").sample(class_files, per_class)
        files += sorted(chosen)
        labels += [label] * per_class
    return files, labels


def load_small(path: Path, size: int) -> np.ndarray:
    """One image as [size, size, 3] uint8: RGB, center-cropped square, LANCZOS-resized."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        return np.asarray(square.resize((size, size), Image.LANCZOS))


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images [N, H, W, 3] uint8, on the 0..1 scale."""
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return pixels.mean(axis=0).astype(np.float32), pixels.std(axis=0).astype(np.float32)


def provenance(args: argparse.Namespace) -> str:
    return (
        f"Imagenette (fastai, https://github.com/fastai/imagenette; ImageNet images, ImageNet "
        f"terms of use) from '{args.source.resolve().name}'. Train: {args.train_per_class} "
        f"images per class sampled from its train split, test: {args.test_per_class} per class "
        f"from its val split (seed {args.seed}). Center-cropped to square, resized to "
        f"{args.image_size}x{args.image_size} with PIL LANCZOS, stored as JPEG mosaics "
        f"(quality {args.quality}, 4:4:4, {TILES_PER_ROW} tiles per row). "
        f"Made by bench/data/make_tiny_imagenette.py."
    )


def build_split(split_dir: Path, per_class: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    files, labels = pick_files(split_dir, per_class, args.seed)
    images = np.stack([load_small(path, args.image_size) for path in files])
    prefix = "train" if split_dir.name == "train" else "test"
    return {
        f"{prefix}_jpeg": encode_mosaic(images, args.quality),
        f"{prefix}_labels": np.array(labels, dtype=np.uint8),
        f"{prefix}_sources": np.array([f"{path.parent.name}/{path.name}" for path in files]),
    }


def main() -> None:
    args = parse_args()
    arrays = build_split(args.source / "train", args.train_per_class, args)
    arrays |= build_split(args.source / "val", args.test_per_class, args)
    # Stats come from the decoded images: exactly the pixels the loader will see.
    train_images = decode_mosaic(arrays["train_jpeg"], len(arrays["train_labels"]), args.image_size)
    mean, std = channel_stats(train_images)
    wnids = sorted(READABLE_NAMES)
    arrays |= {
        "image_size": np.array(args.image_size),
        "wnids": np.array(wnids),
        "class_names": np.array([READABLE_NAMES[wnid] for wnid in wnids]),
        "mean": mean,
        "std": std,
        "provenance": np.array(provenance(args)),
    }
    save_npz(args.out, arrays)
    size_mb = args.out.stat().st_size / 1e6
    print(
        f"wrote {args.out}: {len(train_images)} train + {len(arrays['test_labels'])} test "
        f"images, {size_mb:.2f} MB, mean {mean.round(4)}, std {std.round(4)}"
    )


if __name__ == "__main__":
    main()
