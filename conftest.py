"""mmgen-perf: options, the case parametrization, fixtures and the summary. Wiring only: the
cases run in workloads.run, are judged in workloads.gate and rendered by workloads.report."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Models are built from configs or local directories; nothing is ever fetched from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent
LARGE_GPU_BYTES = 100 * 2**30   # `large` cases need more memory than an 80 GB GPU leaves free


def pytest_addoption(parser):
    g = parser.getgroup("mmgen-perf")
    g.addoption("--device", choices=("auto", "cpu", "cuda"), default="auto",
                help="where cases run: auto = cuda when a GPU is visible, else cpu")
    g.addoption("--scale", choices=("auto", "tiny", "small", "paper"), default="auto",
                help="model sizes: tiny (CPU seconds), small (one GPU, minutes), paper (published configs); "
                     "auto = paper on a GPU, tiny on the CPU")
    g.addoption("--baselines", metavar="DIR", default=str(ROOT / "baselines"),
                help="baseline directory (<DIR>/<device-class>/<scale>.json)")
    g.addoption("--update-baselines", action="store_true",
                help="rewrite each run case's baseline entry from this run instead of gating on it")
    g.addoption("--results", metavar="FILE", default=None,
                help="write pytest-benchmark JSON (every figure in extra_info) to FILE")
    g.addoption("--case-log", metavar="FILE", default=None,
                help="append each case's result (with its gate verdict and failures) to FILE as a JSON line "
                     "the moment the case ends, so an interrupted run keeps what it measured")
    g.addoption("--checkpoint", metavar="NAME=DIR", action="append", default=[],
                help="use a local checkpoint directory for model NAME (e.g. llama-7b=/models/CodeLlama-7b-hf)")
    g.addoption("--latency-threshold", type=float, default=None,
                help="relative slowdown a case may show before the latency gate fails (default 0.05)")
    g.addoption("--run-large", action="store_true", help="run `large` cases even on GPUs under 100 GiB")
    g.addoption("--latency-only", action="store_true",
                help="time each rung alone, with no eager reference beside it (unless the eager case is selected): "
                     "latency and counters gate; no speedup, so speedup floors and requirements are not checked")
    g.addoption("--rounds", type=int, default=None, metavar="N",
                help="time every rung in exactly N rounds (at least 3) instead of until its time budget: for runs "
                     "repeated in several processes, such as the pull-request comparison, where processes, not "
                     "rounds, bound the spread")
    g.addoption("--estimate", metavar="DEVICE_CLASS", default=None,
                help="run nothing: say how long the selected cases would take on DEVICE_CLASS (e.g. nvidia-h200), "
                     "from its baselines at the chosen --scale")


class _JsonOut(os.PathLike):
    """pytest-benchmark's --benchmark-json target: 5.2 enters it as an open file, 5.3 opens it as a path."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __enter__(self):
        self._fh = open(self.path, "wb")
        return self._fh

    def __exit__(self, *exc):
        self._fh.close()


def _checkpoints(config) -> dict[str, str]:
    from workloads.models.common import CheckpointError
    from workloads.suites import UnknownWorkload, owner_of

    out = {}
    for spec in config.getoption("--checkpoint"):
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise pytest.UsageError(f"--checkpoint {spec!r}: expected NAME=DIR, e.g. llama-7b=/models/CodeLlama-7b-hf")
        try:
            owner_of(name).check_checkpoint(path)
        except UnknownWorkload as e:
            raise pytest.UsageError(f"--checkpoint {spec!r}: {e}") from None
        except CheckpointError as e:
            raise pytest.UsageError(f"--checkpoint {name}: {e}") from None
        out[name] = path
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    import torch

    from workloads.case import resolve_scale
    from workloads.run.session import Session

    want = config.getoption("--device")
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise pytest.UsageError(
            "--device cuda: no CUDA GPU is available on this machine (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}). Use --device cpu, or --device auto to fall back.")
    device = torch.device("cuda" if want == "cuda" or (want == "auto" and has_cuda) else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)   # on small shared machines more threads make CPU timings swing 50x
    threshold = config.getoption("--latency-threshold")
    if threshold is not None and not 0 < threshold < 1:
        raise pytest.UsageError(f"--latency-threshold {threshold}: expected a fraction between 0 and 1, e.g. 0.05")
    if config.getoption("--latency-only") and config.getoption("--update-baselines"):
        raise pytest.UsageError("--latency-only with --update-baselines: a baseline holds the speedup over eager, "
                                "which a latency-only run does not measure; drop --latency-only to write baselines")
    rounds = config.getoption("--rounds")
    if rounds is not None and rounds < 3:
        raise pytest.UsageError(f"--rounds {rounds}: at least 3 rounds are needed for a median with an interval")
    if config.getoption("--results"):   # pytest-benchmark reads this option when it configures, after us
        config.option.benchmark_json = _JsonOut(config.getoption("--results"))
    config._mmgen = {
        "device": device,
        "scale": resolve_scale(config.getoption("--scale"), device),
        "session": Session(device, checkpoints=_checkpoints(config), latency_only=config.getoption("--latency-only"),
                           rounds=rounds),
    }


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    from workloads.levers import UnknownLever
    from workloads.suites import UnknownWorkload
    from workloads.suites.matrix import matrix

    workload, levers = getattr(metafunc.module, "WORKLOAD", None), getattr(metafunc.module, "LEVERS", None)
    if workload is None or levers is None:
        raise pytest.UsageError(f"{metafunc.module.__name__} must define WORKLOAD and LEVERS to use the `case` fixture")
    try:
        cases = matrix(workload, tuple(levers), metafunc.config._mmgen["scale"])
    except (UnknownWorkload, UnknownLever) as e:
        raise pytest.UsageError(f"{metafunc.module.__name__}: {e}") from None
    metafunc.parametrize("case", [pytest.param(c, id=c.id, marks=[getattr(pytest.mark, m) for m in c.marks])
                                  for c in cases])


def _case_of(item):
    return getattr(getattr(item, "callspec", None), "params", {}).get("case")


def pytest_collection_modifyitems(config, items):
    import torch

    from workloads.measure.timing import REPLAY_CLOCK

    device = config._mmgen["device"]
    gpu_bytes = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    for item in items:
        case = _case_of(item)
        if case is None:
            continue
        item.add_marker(pytest.mark.benchmark(timer=REPLAY_CLOCK, group=str(case.input)))
        if "gpu" in case.marks and device.type != "cuda":
            item.add_marker(pytest.mark.skip(reason=f"{case.id} needs a CUDA GPU (running on the CPU){_why_gpu(case, device)}"))
        elif "large" in case.marks and gpu_bytes < LARGE_GPU_BYTES and not config.getoption("--run-large"):
            item.add_marker(pytest.mark.skip(
                reason=f"{case.id} is `large`: needs a GPU of 100 GiB or more, this one has "
                       f"{gpu_bytes / 2**30:.0f} GiB (--run-large to try anyway)"))


def _why_gpu(case, device) -> str:
    """The lever's own reason, where one of the case's levers names it."""
    from workloads.levers import Context, plan_for
    from workloads.suites import workload

    wl = workload(case.workload)
    _, reason = plan_for(case.lever, Context(device, wl.supports_for(case.task)), wl.ladder)
    return f": {reason}" if reason else ""


def pytest_collection_finish(session):
    # An xdist worker runs only its share of the selection, so it times each case alone.
    config = session.config
    st = getattr(config, "_mmgen", None)
    if st is None or hasattr(config, "workerinput"):
        return
    items = [(i, _case_of(i)) for i in session.items if _case_of(i) is not None]
    if config.getoption("--estimate"):   # after -k and -m have selected
        _estimate(config, session.items, [c for _, c in items])
        return
    selected = [c for i, c in items if not i.get_closest_marker("skip")]
    _check_baselines(config, selected)
    for line in _checkpoint_use(config, selected):   # before minutes of running, not after
        config.pluginmanager.get_plugin("terminalreporter").write_line(line)
    st["session"].plan(selected)


def _check_baselines(config, cases) -> None:
    """Every baseline file the run will read, read now: a bad one stops the run before any case
    is timed, once, naming the file and the key."""
    from workloads import gate
    from workloads.measure.device import device_class

    where = device_class(config._mmgen["device"])
    for scale in dict.fromkeys(c.scale for c in cases):
        try:
            gate.load(gate.path_for(config.getoption("--baselines"), where, scale), device_class=where, scale=scale)
        except gate.BaselineError as e:
            raise pytest.UsageError(f"bad baseline file, nothing was run: {e}") from None


def _checkpoint_use(config, cases) -> list[str]:
    lines = []
    for name, path in config._mmgen["session"].checkpoints.items():
        served = [c for c in cases if c.model == name]
        lines.append(f"--checkpoint {name}={path}: serves {len(served)} of the {len(cases)} selected cases" if served
                     else f"--checkpoint {name}={path}: serves none of the selected cases (their models: "
                          f"{', '.join(sorted({c.model for c in cases})) or 'none selected'})")
    return lines


def _estimate(config, items, cases) -> None:
    """--estimate: the selected cases' time on a device class from its baselines; none runs."""
    from workloads import gate
    from workloads.run.estimate import estimate, render

    where, text = config.getoption("--estimate"), []
    for scale in dict.fromkeys(c.scale for c in cases):
        path = gate.path_for(config.getoption("--baselines"), where, scale)
        try:
            data = gate.load(path, device_class=where, scale=scale)
        except gate.BaselineError as e:
            raise pytest.UsageError(f"--estimate {where}: {e}") from None
        if data is None:
            raise pytest.UsageError(f"--estimate {where}: no baselines at {path}; classes with baselines: "
                                    f"{sorted(p.name for p in path.parent.parent.iterdir() if p.is_dir())}")
        rows = estimate([c for c in cases if c.scale == scale], data["cases"], latency_only=config.getoption("--latency-only"),
                        rounds=config.getoption("--rounds"))
        text.append(render(rows, f"{where} ({path})"))
    config._mmgen["estimate"] = "\n".join(text)
    config.hook.pytest_deselected(items=list(items))
    items[:] = []


@pytest.fixture(scope="session")
def mmgen(request):
    return request.config._mmgen


@pytest.fixture
def run_case(request, benchmark, mmgen):
    """Time a case against eager, record it for pytest-benchmark, then gate or update its baseline."""
    from workloads import gate
    from workloads.measure.timing import REPLAY_CLOCK
    from workloads.models.common import CheckpointError
    from workloads.report import row
    from workloads.run.schedule import NotApplicable, run_case as run

    config = request.config

    def run_one(case):
        try:
            result = run(case, mmgen["session"])
        except NotApplicable as e:
            pytest.skip(f"{case.id}: {e}")
        except CheckpointError as e:
            pytest.fail(f"{case.id}: {e}", pytrace=False)
        samples = result["latency_ms"]["samples"]
        REPLAY_CLOCK.load([s / 1e3 for s in samples])
        benchmark.pedantic(REPLAY_CLOCK.advance, rounds=len(samples), iterations=1)
        benchmark.extra_info.update(json.loads(json.dumps(result.to_json())))
        verdict = gate.judge(result, root=config.getoption("--baselines"),
                             update_baselines=config.getoption("--update-baselines"),
                             requirements=getattr(request.module, "REQUIREMENTS", []),
                             latency_threshold=config.getoption("--latency-threshold"))
        request.node.user_properties.append(("mmgen_row", row(result, verdict.gate)))
        request.node.user_properties += [("mmgen_open", ("target not met yet", m)) for m in verdict.targets]
        request.node.user_properties += [("mmgen_open", ("tracked, not gated", m)) for m in verdict.tracked]
        if config.getoption("--case-log"):
            with open(config.getoption("--case-log"), "a") as fh:
                record = {"gate": verdict.gate, "failures": verdict.failures, "targets": verdict.targets,
                          "tracked": verdict.tracked, "result": result.to_json()}
                fh.write(json.dumps(record, default=str) + "\n")
        if verdict.failed:
            pytest.fail("\n".join(verdict.failures), pytrace=False)
        return result

    return run_one


def pytest_sessionfinish(session, exitstatus):
    # An estimate runs nothing on purpose: that is its success, not pytest's "no tests ran".
    if getattr(session.config, "_mmgen", {}).get("estimate") and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


_ROWS: list[dict] = []
_OPEN: list[tuple[str, str]] = []   # open targets and tracked figures: reported, not failures


def pytest_runtest_logreport(report):
    # Rows travel in user_properties so the summary also works under pytest-xdist.
    if report.when == "call":
        _ROWS.extend(value for key, value in report.user_properties if key == "mmgen_row")
        _OPEN.extend(value for key, value in report.user_properties if key == "mmgen_open")


@pytest.hookimpl(trylast=True)   # after pytest-benchmark's tables: the suite's answer ends the run
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    st = getattr(config, "_mmgen", {})
    if st.get("estimate"):
        terminalreporter.write_sep("=", "mmgen-perf estimate (nothing ran)")
        for line in st["estimate"].splitlines():
            terminalreporter.write_line(line)
    if not _ROWS:
        _write_open(terminalreporter)
        return
    from workloads.report import sections

    for title, text in sections(_ROWS):
        # Each workload's group opens with its cases table.
        terminalreporter.write_sep("=" if title.endswith(": cases") else "-",
                                   f"mmgen-perf {title}" if title.endswith(": cases") else title)
        for line in text.splitlines():
            terminalreporter.write_line(line)
    _write_open(terminalreporter)


def _write_open(terminalreporter) -> None:
    """Open targets and tracked figures last: what the gate reported without failing on it."""
    for kind in dict.fromkeys(k for k, _ in _OPEN):
        terminalreporter.write_sep("-", f"mmgen-perf {kind} (docs/gate.md)")
        for k, line in _OPEN:
            if k == kind:
                terminalreporter.write_line(line)
