"""The machine a result was measured on: device class, GPU state, provenance, copy bandwidth,
host speed."""
from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import torch


def device_class(device: torch.device | str) -> str:
    """A slug naming the kind of device, e.g. 'nvidia-h100-80gb-hbm3' or 'cpu'.

    Absolute latencies are only ever compared within one class.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug.startswith("nvidia"):
        slug = "nvidia-" + slug
    return slug


def _nvml_state(index: int) -> dict | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        reasons = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)
        names = {
            getattr(pynvml, n): n.replace("nvmlClocksThrottleReason", "")
            for n in dir(pynvml)
            if n.startswith("nvmlClocksThrottleReason") and n not in ("nvmlClocksThrottleReasonAll", "nvmlClocksThrottleReasonNone")
        }
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "throttle_reasons": sorted(v for k, v in names.items() if k and reasons & k),
            "driver": _s(pynvml.nvmlSystemGetDriverVersion()),
        }
    except Exception as e:  # NVML missing or restricted: say so in the result rather than fail the case
        return {"error": f"NVML: {e}"}


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _smi_state(index: int) -> dict | None:
    fields = "clocks.sm,clocks.mem,clocks.max.sm,power.draw,power.limit,temperature.gpu,clocks_throttle_reasons.active,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={index}", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    keys = ["sm_clock_mhz", "mem_clock_mhz", "max_sm_clock_mhz", "power_w", "power_limit_w", "temperature_c", "throttle_reasons", "driver"]
    return dict(zip(keys, [v.strip() for v in out.split(",")]))


def gpu_state(device: torch.device | str) -> dict:
    """Clocks, power, temperature and throttle reasons now; empty on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return {}
    index = device.index if device.index is not None else torch.cuda.current_device()
    state = {"name": torch.cuda.get_device_name(index)}
    state.update(_nvml_state(index) or _smi_state(index) or {"error": "neither NVML nor nvidia-smi available"})
    return state


@lru_cache(maxsize=1)
def _git_commit() -> tuple[str, bool | None]:
    """The checked-out commit and whether tracked files differ from it.

    A runner that ships the tree without its own .git names the commit in MMGEN_COMMIT, which
    then wins (a .git further up, or a stale one, would name the wrong code); cleanliness is
    then unknown (None).
    """
    if os.environ.get("MMGEN_COMMIT"):
        return os.environ["MMGEN_COMMIT"], None
    root = Path(__file__).resolve().parents[2]
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        if Path(top).resolve() != root:
            return "unknown", None
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


_SOURCE_GLOBS = ("conftest.py", "perf_tests/*.py", "workloads/**/*.py")
# Code that judges or renders figures after they are measured: an edit to it changes no number.
_AFTER_MEASURING = ("workloads/gate/", "workloads/caselog.py", "workloads/report/")


@lru_cache(maxsize=16)
def source_fingerprint(root: str | None = None, exclude: frozenset[str] = frozenset()) -> str:
    """A hash of the suite's own source files (paths and contents): names the code that ran
    where the commit cannot (a tree shipped with a stale .git, uncommitted edits). `exclude`
    names files (paths from the root) the case never runs: other workloads' own files. The gate,
    the case logs and the reports are left out too: they read figures, never make them."""
    base = Path(root) if root else Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    files = sorted({f for g in _SOURCE_GLOBS for f in base.glob(g) if f.is_file()})
    for f in files:
        rel = f.relative_to(base).as_posix()
        if rel in exclude or rel.startswith(_AFTER_MEASURING):
            continue
        h.update(rel.encode() + b"\0" + _code_of(f) + b"\0")
    return h.hexdigest()[:16]


def _code_of(path: Path) -> bytes:
    """What a source file computes: its syntax tree without docstrings, line numbers or
    comments, so an edit to prose or layout keeps the entries it measured pooling. A file that
    does not parse counts by its bytes. The tree's dump is Python's own, so the same code has
    one fingerprint per Python version: runs on two Pythons do not pool (never wrongly do)."""
    raw = path.read_bytes()
    try:
        tree = ast.parse(raw)
    except (SyntaxError, ValueError):
        return raw
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


def provenance(device: torch.device | str, exclude: frozenset[str] = frozenset()) -> dict:
    """Where a number came from: code (the source fingerprint leaves out `exclude`), libraries,
    hardware, time."""
    import transformers

    device = torch.device(device)
    commit, dirty = _git_commit()
    prov = {
        "commit": commit,
        "dirty": dirty,
        "source": source_fingerprint(None, frozenset(exclude)),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device_class": device_class(device),
    }
    if device.type == "cuda":
        state = gpu_state(device)
        prov["gpu"] = state.get("name")
        prov["driver"] = state.get("driver")
    # The host's CPU on every device: a host-bound rung runs at its speed (docs/measured.md,
    # "Measured on an H200: HSTU").
    prov["cpu"] = cpu_model()
    return prov


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo; elsewhere what the platform module says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def copy_bandwidth(device: torch.device | str, nbytes: int = 1 << 30, repeats: int = 20) -> float | None:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written), median of repeats."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / times[len(times) // 2]


def matmul_flops(device: torch.device | str, n: int = 8192, repeats: int = 10) -> float | None:
    """bf16 dense matmul throughput in FLOP/s (an n x n x n product), median of repeats: the
    ceiling a compute-bound kernel on this GPU is measured against."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / times[len(times) // 2]


def launch_overhead_us(device: torch.device | str, ops: int = 2000, repeats: int = 7) -> float:
    """Host time per framework op in microseconds: Python, dispatcher and (on a GPU) the kernel
    launch of a one-element add, median of repeats. It is what a host-bound rung pays per op, so
    the ratio of two machines' figures is how much slower such a rung runs on one than the other
    (the GPU work of a one-element add is far shorter than its launch, so it never waits on it)."""
    device = torch.device(device)
    x = torch.zeros(1, device=device)
    y = torch.empty_like(x)
    cuda = device.type == "cuda"
    for _ in range(200):
        torch.add(x, 1, out=y)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(ops):
            torch.add(x, 1, out=y)
        times.append((time.perf_counter() - t0) / ops * 1e6)
        if cuda:
            torch.cuda.synchronize(device)
    return statistics.median(times)


def _busy_cpu_seconds() -> float | None:
    """Seconds all of this host's cores have spent busy since boot (/proc/stat: every field but
    idle and iowait), or None where there is no /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _throttled_ms() -> float | None:
    """Milliseconds the CPU controller of this process's control group has held it off the CPU
    for exceeding its quota, since the group began (cgroup v2 `throttled_usec`, v1
    `throttled_time` in ns), or None where neither file is readable."""
    for path, key, scale in (("/sys/fs/cgroup/cpu.stat", "throttled_usec", 1e-3),
                             ("/sys/fs/cgroup/cpu/cpu.stat", "throttled_time", 1e-6),
                             ("/sys/fs/cgroup/cpu,cpuacct/cpu.stat", "throttled_time", 1e-6)):
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value) * scale
        except (OSError, ValueError):
            continue
    return None


class OtherLoad:
    """How many of the host's cores other processes kept busy while the block ran (the host's
    busy CPU time less this process's, over the wall time) and how long the CPU quota of this
    process's control group held it off the CPU meanwhile. The kernel's counters say both; no
    sampling thread runs beside the measurement. Each is None where it cannot be read."""

    def __enter__(self) -> "OtherLoad":
        self.cores = self.throttled_ms = None
        self._t0, self._busy0, self._self0 = time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds()
        self._throttled0 = _throttled_ms()
        return self

    def __exit__(self, *exc) -> None:
        busy = _busy_cpu_seconds()
        wall = time.perf_counter() - self._t0
        if busy is not None and self._busy0 is not None and wall > 0:
            other = (busy - self._busy0) - (_own_cpu_seconds() - self._self0)
            self.cores = round(max(other, 0.0) / wall, 2)
        throttled = _throttled_ms()
        if throttled is not None and self._throttled0 is not None:
            self.throttled_ms = round(max(throttled - self._throttled0, 0.0), 1)


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
