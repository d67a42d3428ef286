"""How close a memory-bound step runs to the time it takes just to move its bytes."""
from __future__ import annotations


def roofline(bytes_per_step: float, seconds_per_step: float, bandwidth: float | None) -> dict | None:
    """Floor time = bytes / measured bandwidth; fraction = floor / measured time."""
    if not bandwidth or seconds_per_step <= 0:
        return None
    floor_s = bytes_per_step / bandwidth
    return {
        "bytes_per_step": bytes_per_step,
        "bandwidth_gbs": bandwidth / 1e9,
        "floor_ms": floor_s * 1e3,
        "achieved_gbs": bytes_per_step / seconds_per_step / 1e9,
        "fraction": floor_s / seconds_per_step,
    }
