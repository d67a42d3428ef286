"""Baseline files: where they are, what they hold, and reading them (schema-checked).

`baselines/<device-class>/<scale>.json` holds, per case, what real runs measured: the
reference latency samples, the speedup over eager with its interval, the minimum speedup the
case must keep, the deterministic counters, and where the numbers came from. Only a run writes
it (`--update-baselines`, `python -m workloads.gate fold`); no number in it is typed by hand.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

SCHEMA = 1


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file and the key."""


def path_for(root: str | Path, device_class: str, scale: str) -> Path:
    return Path(root) / device_class / f"{scale}.json"


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_interval(where: str, d, *, samples: bool) -> None:
    if not isinstance(d, dict):
        raise BaselineError(f"{where}: expected an object, got {type(d).__name__}")
    if not (_num(d.get("median")) and d["median"] > 0):
        raise BaselineError(f"{where}.median: expected a positive number, got {d.get('median')!r}")
    ci = d.get("ci")
    if not (isinstance(ci, list) and len(ci) == 2 and all(_num(v) for v in ci) and ci[0] <= ci[1]):
        raise BaselineError(f"{where}.ci: expected [low, high], got {ci!r}")
    if samples:
        s = d.get("samples")
        if not (isinstance(s, list) and s and all(_num(v) and v > 0 for v in s)):
            raise BaselineError(f"{where}.samples: expected a non-empty list of positive numbers, got {s!r}")


def _host_ok(host) -> bool:
    if not isinstance(host, dict):
        return False
    lu = host.get("launch_us")
    fractions = (host.get("share"), host.get("reference_share"), host.get("run_share"), host.get("on_cpu"))
    counts = (host.get(k) for k in ("other_cores", "own_threads", "throttled_ms", "gc_ms", "gc_full"))
    rounds = host.get("launch_us_rounds")
    return ((lu is None or (_num(lu) and lu > 0))
            and (rounds is None or (isinstance(rounds, list) and all(_num(x) and x > 0 for x in rounds)))
            and all(x is None or (_num(x) and 0 <= x <= 1) for x in fractions)
            and all(x is None or (_num(x) and x >= 0) for x in counts))


def validate(data, path: Path, *, device_class: str | None = None, scale: str | None = None) -> dict:
    """Check a parsed baseline file; raise BaselineError naming the file and the bad key."""
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: top level must be an object")
    if data.get("schema") != SCHEMA:
        raise BaselineError(f"{path}: key 'schema' is {data.get('schema')!r}, this suite reads schema {SCHEMA}")
    for key, want in (("device_class", device_class), ("scale", scale)):
        if not isinstance(data.get(key), str):
            raise BaselineError(f"{path}: key {key!r} missing or not a string")
        if want is not None and data[key] != want:
            raise BaselineError(f"{path}: key {key!r} is {data[key]!r} but the file is used for {want!r}")
    cases = data.get("cases")
    if not isinstance(cases, dict):
        raise BaselineError(f"{path}: key 'cases' missing or not an object")
    for cid, entry in cases.items():
        where = f"{path}: cases[{cid!r}]"
        if not isinstance(entry, dict):
            raise BaselineError(f"{where}: expected an object")
        _check_interval(f"{where}.latency_ms", entry.get("latency_ms"), samples=True)
        if entry.get("speedup") is not None:
            _check_interval(f"{where}.speedup", entry["speedup"], samples=False)
        ms = entry.get("min_speedup")
        if ms is not None and not (_num(ms) and ms > 0):
            raise BaselineError(f"{where}.min_speedup: expected a positive number or null, got {ms!r}")
        counters = entry.get("counters")
        if not isinstance(counters, dict) or not all(_num(v) for v in counters.values()):
            raise BaselineError(f"{where}.counters: expected an object of numbers, got {counters!r}")
        host = entry.get("host")
        if host is not None and not _host_ok(host):
            raise BaselineError(f"{where}.host: expected {{launch_us: positive number, launch_us_rounds: list of them, share, reference_share, run_share and on_cpu: 0..1, "
                                f"other_cores, own_threads, throttled_ms, gc_ms and gc_full: >= 0}}, "
                               f"got {host!r}")
        gpu = entry.get("gpu_ms")
        if gpu is not None and not (isinstance(gpu, dict) and _num(gpu.get("run")) and gpu["run"] > 0 and all(
                gpu.get(k) is None or _num(gpu[k]) for k in ("per_step", "once"))):
            raise BaselineError(f"{where}.gpu_ms: expected {{run: positive ms, per_step and once: ms or null}}, "
                                f"got {gpu!r}")
        runs = entry.get("runs")
        if runs is not None:
            if not (isinstance(runs, list) and runs and all(
                    isinstance(r, dict) and isinstance(r.get("rounds"), int) and r["rounds"] > 0 for r in runs)):
                raise BaselineError(f"{where}.runs: expected a non-empty list of {{rounds: positive integer, ...}}, got {runs!r}")
            if sum(r["rounds"] for r in runs) != len(entry["latency_ms"]["samples"]):
                raise BaselineError(f"{where}.runs: their rounds add up to {sum(r['rounds'] for r in runs)}, "
                                   f"but latency_ms.samples holds {len(entry['latency_ms']['samples'])}")
        prov = entry.get("provenance")
        if not isinstance(prov, dict) or not prov.get("commit") or not prov.get("torch"):
            raise BaselineError(f"{where}.provenance: needs at least 'commit' and 'torch'")
    return data


def load(path: str | Path, *, device_class: str | None = None, scale: str | None = None) -> dict | None:
    """The file's contents, or None when there is no file. Corrupt files are errors, never ignored."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BaselineError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return validate(data, path, device_class=device_class, scale=scale)
