"""The Imagenette subset that travels with the working tree to a device machine (which reaches no network).

    python scripts/make_device_data.py [--source ../shared/data] [--out device-data] [--per-class 60]

Copies the first `--per-class` JPEGs (sorted names) of every class of `imagenette2-160/train` and a
third as many of `val` into `OUT/imagenette2-160/`, the layout the `imagenette` dataset reads (6 MB
at 60 per class). `device-data/` is git-ignored; the device tool carries it (`carry`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data")
    parser.add_argument("--out", default="device-data")
    parser.add_argument("--per-class", type=int, default=60)
    args = parser.parse_args(argv)
    source = Path(args.source) / "imagenette2-160"
    if not (source / "train").is_dir():
        print(f"error: {source}/train not found; point --source at the folder with imagenette2-160", file=sys.stderr)
        return 2
    copied = 0
    for split, count in (("train", args.per_class), ("val", max(args.per_class // 3, 1))):
        for class_folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            target = Path(args.out) / "imagenette2-160" / split / class_folder.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_folder.glob("*.JPEG"))[:count]:
                shutil.copy2(image, target / image.name)
                copied += 1
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"{copied} images, {size / 2**20:.1f} MB in {args.out}/imagenette2-160")
    return 0


if __name__ == "__main__":
    sys.exit(main())
