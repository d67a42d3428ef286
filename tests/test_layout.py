"""The shape the code keeps so that a newcomer can read it: no module over 400 lines, and no
function over 60 lines where cases are scheduled, judged and wired (workloads/run,
workloads/gate, workloads/compare, conftest.py)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_LINES, FUNCTION_LINES = 400, 60


def _sources():
    return sorted([ROOT / "conftest.py", *ROOT.glob("workloads/**/*.py"), *ROOT.glob("perf_tests/*.py"),
                   *ROOT.glob("tests/*.py")])


def test_no_module_is_over_400_lines():
    long = {f.relative_to(ROOT).as_posix(): n for f in _sources() if (n := len(f.read_text().splitlines())) > MODULE_LINES}
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_no_function_of_the_harness_the_gate_or_conftest_is_over_60_lines():
    long = []
    for f in [ROOT / "conftest.py", *ROOT.glob("workloads/run/*.py"), *ROOT.glob("workloads/gate/*.py"),
              *ROOT.glob("workloads/compare/*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= FUNCTION_LINES:
                long.append(f"{f.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}")
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"


def test_the_harness_names_no_workload():
    """Scheduling and result assembly speak to workloads through the protocol only."""
    names = ("llama", "seamless", "chameleon", "hstu", "vocoder", "beam")
    found = [f"{f.relative_to(ROOT).as_posix()}: {n}" for f in ROOT.glob("workloads/run/*.py")
             for n in names if n in f.read_text().lower()]
    assert not found, f"workload names in the harness: {found}"
