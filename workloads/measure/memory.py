"""Peak memory of one run: GPU allocator peak on CUDA, peak resident set on the CPU."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(fn: Callable[[], object], device: torch.device | str) -> dict[str, float | str] | None:
    """Run `fn` once and report the peak memory it reached, in MiB, and what was measured."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize()
        return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "kind": "cuda_allocated"}
    # Writing 5 to clear_refs resets the high-water mark (Linux >= 4.0), so VmHWM is this run's.
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        fn()
        return None
    fn()
    hwm = _vm_hwm_bytes()
    return None if hwm is None else {"peak_mb": hwm / 2**20, "kind": "process_rss"}
