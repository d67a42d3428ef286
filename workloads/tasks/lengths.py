"""Sequence-length distributions from the papers' tables, drawn with a seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The papers publish min, mean and max only. A Beta distribution on [min, max] with the
# published mean and this concentration (a + b) is skewed the way such length data is
# (most samples short, a long tail), and reproduces all three published figures.
CONCENTRATION = 4.0


@dataclass(frozen=True)
class LengthDist:
    lo: int
    hi: int
    mean: float
    source: str

    def __post_init__(self):
        if not (self.lo <= self.mean <= self.hi):
            raise ValueError(f"mean {self.mean} outside [{self.lo}, {self.hi}] ({self.source})")

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.lo == self.hi:
            return np.full(n, self.lo, dtype=np.int64)
        m = (self.mean - self.lo) / (self.hi - self.lo)
        x = rng.beta(m * CONCENTRATION, (1 - m) * CONCENTRATION, size=n)
        return np.clip(np.rint(self.lo + x * (self.hi - self.lo)), self.lo, self.hi).astype(np.int64)


# Text-to-image and text-to-video prompts: seed paper 1, Table II (T-I, MS-COCO captions), the
# only prompt lengths the papers publish.
COCO_CAPTIONS = LengthDist(10, 39, 13.9, "MS-COCO captions: seed paper 1, Table II (T-I)")
