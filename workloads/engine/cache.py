"""The session's shared decoders: compiled steps, static caches and graphs, built once and found
again by every rung whose plan agrees on what they are built from."""
from __future__ import annotations

import gc
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

from .plan import Plan

T = TypeVar("T")


class DecoderCache:
    """Objects keyed by (kind, model, shapes, the plan's fields they depend on). One scope of
    inputs is kept at a time: a max-batch static cache or graph pool is tens of GB."""

    def __init__(self) -> None:
        self._objects: dict[tuple, object] = {}
        self._scope: Hashable | None = None

    def get(self, kind: str, model, shape: tuple, plan: Plan, depends_on: tuple[str, ...],
            build: Callable[[], T], fits: Callable[[T], bool] | None = None) -> T:
        """The `kind` object for `model` at `shape` built from the plan's `depends_on` fields
        (built now if there is none, or if `fits` says the one there cannot take this input)."""
        key = (kind, id(model), shape, plan.key(*depends_on))
        found = self._objects.get(key)
        if found is None or (fits is not None and not fits(found)):
            found = self._objects[key] = build()
        return found

    def scope(self, key: Hashable) -> "DecoderCache":
        """Enter the scope of one input group; leaving the last one frees what it built."""
        if self._scope != key:
            self.clear()
            self._scope = key
        return self

    def clear(self) -> None:
        """Free every object, its static caches and graphs; a rung that needs one builds it again
        (from the compile cache)."""
        self._objects.clear()
        self._scope = None
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def __len__(self) -> int:
        return len(self._objects)

    def __bool__(self) -> bool:
        return bool(self._objects)
