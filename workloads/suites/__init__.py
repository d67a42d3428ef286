"""The registry: every workload by name, one file each. A workload is anything that follows the
`Workload` protocol; registering one is an entry in WORKLOADS."""
from __future__ import annotations

from .chameleon import WORKLOAD as _chameleon
from .hstu import WORKLOAD as _hstu
from .imagen import WORKLOAD as _imagen
from .llama import WORKLOAD as _llama
from .protocol import Batch, Runner, Workload
from .sd15 import WORKLOAD as _sd15
from .seamless import WORKLOAD as _seamless
from .video import WORKLOAD as _video

WORKLOADS: dict[str, Workload] = {wl.name: wl for wl in (_llama, _seamless, _hstu, _chameleon, _sd15, _video, _imagen)}


class UnknownWorkload(ValueError):
    pass


def workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise UnknownWorkload(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}") from None


def owner_of(model: str) -> Workload:
    """The workload whose presets include `model` (e.g. llama-7b)."""
    for wl in WORKLOADS.values():
        if model in wl.models():
            return wl
    known = sorted(m for wl in WORKLOADS.values() for m in wl.models())
    raise UnknownWorkload(f"unknown model {model!r}; known: {known}")


def foreign_sources(workload: str) -> frozenset[str]:
    """The files other workloads name as their own (`sources`: paths from the repository root,
    files only that workload runs). A case's source fingerprint leaves them out, so an edit to
    one workload's model or engine starts no other workload's baselines afresh; everything
    else (scheduling, measurement, common engines, levers' base, this registry) counts for all."""
    return frozenset(f for name, wl in WORKLOADS.items() if name != workload for f in wl.sources)


__all__ = ["WORKLOADS", "Batch", "Runner", "UnknownWorkload", "Workload", "foreign_sources", "owner_of", "workload"]
