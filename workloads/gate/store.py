"""Writing baseline files: atomically, one writer at a time, never over a corrupt file."""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from .pooling import entry_from_result
from .schema import SCHEMA, load, validate


def write_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(path: Path):
    # One writer at a time across pytest-xdist workers: each read-modify-write holds the lock.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def update(path: str | Path, *, device_class: str, scale: str, case_id: str, entry) -> dict:
    """Set one case's entry, keeping every other case; refuses to overwrite a corrupt file.
    `entry` is the entry, or a function of the case's entry so far (None if none) that makes it,
    called under the file's lock. Returns the entry written."""
    path = Path(path)
    with _locked(path):
        data = load(path, device_class=device_class, scale=scale) or {
            "schema": SCHEMA, "device_class": device_class, "scale": scale, "cases": {},
        }
        if callable(entry):
            entry = entry(data["cases"].get(case_id))
        data["cases"][case_id] = entry
        validate(data, path)
        write_atomic(path, data)
    return entry


def record(path: str | Path, *, scale: str, result: Mapping) -> dict:
    """Write a run's result into its case's entry (pooled with earlier runs of the same code);
    returns the entry written."""
    return update(path, device_class=result["device_class"], scale=scale, case_id=result["case"],
                  entry=lambda previous: entry_from_result(result, previous=previous))
