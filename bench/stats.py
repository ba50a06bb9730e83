"""Uncertainty of accuracies: intervals for one run, paired tests between two runs.

- `wilson_interval(k, n)`: the 95 % Wilson score interval of an accuracy k/n read on n test
  images, for a cell backed by a single run (over several seeds the leaderboard shows the spread
  of the seeds instead).
- `mcnemar_exact(b, c)`: the exact (binomial) McNemar test of two classifiers read on the same
  images, from the discordant counts b (only the first is right) and c (only the second is).
- `paired_p_value`: that test between two leaderboard rows over the seeds both ran.
- `above_chance_p_value(k, n, chance)`: the exact one-sided binomial test that k of n right is
  better than guessing, for a network that may not have learned anything.
- `pack_bits` / `unpack_bits`: per-image correctness kept compactly in a record, one hex string
  per T (bit i is image i of the test set in loader order, most significant bit first).
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the proportion correct/total (95 % by default), as fractions."""
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided p-value of the exact McNemar test: under the null each of the n = b + c discordant
    images is equally likely to favour either classifier, so min(b, c) ~ Binomial(n, 1/2)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    smaller = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(smaller + 1)) / 2**n
    return min(1.0, 2 * tail)


def above_chance_p_value(correct: int, total: int, chance: float) -> float:
    """P(X >= correct) for X ~ Binomial(total, chance): how often guessing alone would do as well."""
    if correct <= 0:
        return 1.0
    if chance <= 0:
        return 0.0
    if chance >= 1:
        return 1.0

    def log_term(i: int) -> float:
        return (
            math.lgamma(total + 1)
            - math.lgamma(i + 1)
            - math.lgamma(total - i + 1)
            + i * math.log(chance)
            + (total - i) * math.log1p(-chance)
        )

    return min(1.0, sum(math.exp(log_term(i)) for i in range(correct, total + 1)))


def discordant(first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    """(images only `first` got right, images only `second` got right) of two boolean vectors."""
    if first.shape != second.shape:
        raise ValueError(f"paired vectors differ in length: {first.shape} and {second.shape}")
    return int((first & ~second).sum()), int((second & ~first).sum())


def pack_bits(correct: np.ndarray) -> str:
    """A boolean vector as a hex string (8 images per byte, padded with zero bits)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack_bits(text: str, count: int) -> np.ndarray:
    """The boolean vector of `count` images that `pack_bits` wrote."""
    data = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    if data.size * 8 < count or data.size * 8 - count >= 8:
        raise ValueError(f"a bit string of {data.size} bytes cannot hold exactly {count} images")
    return np.unpackbits(data)[:count].astype(bool)


def paired_p_value(first, second) -> float | None:
    """Exact McNemar p-value of two rows' per-image results, each `{seed: (bits, images)}`, with the
    discordant counts summed over their common seeds; None when they share no seed with per-image
    records on the same number of images."""
    if not isinstance(first, dict) or not isinstance(second, dict):
        return None
    only_first = only_second = 0
    common = [seed for seed in first if seed in second and first[seed][1] == second[seed][1]]
    for seed in common:
        (bits_a, count), (bits_b, _) = first[seed], second[seed]
        a, b = discordant(unpack_bits(bits_a, count), unpack_bits(bits_b, count))
        only_first, only_second = only_first + a, only_second + b
    return mcnemar_exact(only_first, only_second) if common else None
