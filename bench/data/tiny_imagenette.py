"""The shipped tiny-imagenette file and the storage format it uses.

`tiny_imagenette.npz` holds a small real subset of Imagenette at 32x32. Each split is stored as
one JPEG mosaic: images [N, H, W, 3] uint8 are laid out as tiles, TILES_PER_ROW to a row, and
encoded once, so the JPEG header is paid once instead of per image (at 32x32 that header would be
a third of each file). The encoder keeps full chroma (4:4:4), so every 8x8 DCT block lies inside
one tile and a tile decodes exactly as it would alone: nothing bleeds between neighbours.

`make_tiny_imagenette.py` builds the file; `bench.data.datasets` reads it through `read_tiny_imagenette`.
"""

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

TINY_IMAGENETTE_PATH = Path(__file__).with_name("tiny_imagenette.npz")
TILES_PER_ROW = 64
# A fixed timestamp inside the .npz (a zip) makes rebuilding the file byte-for-byte identical.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def encode_mosaic(images: np.ndarray, quality: int) -> np.ndarray:
    """Encode images [N, H, W, 3] uint8 (H, W multiples of 8) as one JPEG: uint8 bytes [B]."""
    count, height, width, channels = images.shape
    rows = -(-count // TILES_PER_ROW)
    padded = np.zeros((rows * TILES_PER_ROW, height, width, channels), dtype=np.uint8)
    padded[:count] = images
    grid = padded.reshape(rows, TILES_PER_ROW, height, width, channels)
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(rows * height, TILES_PER_ROW * width, channels)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, "JPEG", quality=quality, subsampling=0, optimize=True)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def decode_mosaic(encoded: np.ndarray, count: int, tile_size: int) -> np.ndarray:
    """Inverse of `encode_mosaic` for square tiles: JPEG bytes -> images [count, S, S, 3] uint8."""
    with Image.open(io.BytesIO(encoded.tobytes())) as mosaic:
        grid = np.asarray(mosaic.convert("RGB"))
    rows = grid.shape[0] // tile_size
    tiles = grid.reshape(rows, tile_size, TILES_PER_ROW, tile_size, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(tiles.reshape(-1, tile_size, tile_size, 3)[:count])


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as a compressed .npz whose bytes depend only on the arrays."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(entry, buffer.getvalue())


def read_tiny_imagenette(path: Path = TINY_IMAGENETTE_PATH) -> dict[str, np.ndarray]:
    """Load the shipped file with both mosaics decoded.

    Returns train_images / test_images [N, S, S, 3] uint8, train_labels / test_labels [N] int64,
    wnids and class_names [10] str, mean and std [3] float, provenance (0-d str).
    Raises OSError, KeyError or ValueError on a missing or damaged file; the caller reports it.
    """
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    tile_size = int(arrays.pop("image_size"))
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"].astype(np.int64)
        encoded = arrays.pop(f"{split}_jpeg")
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_images"] = decode_mosaic(encoded, len(labels), tile_size)
    return arrays
