"""Case ids, lever stacks and their applicability, and the matrix a workload expands into."""
import pytest
import torch

from workloads.case import resolve_scale
from workloads.levers import LADDER, Context, UnknownLever, plan_for, stack
from workloads.suites import WORKLOADS
from workloads.suites.matrix import matrix

CPU = torch.device("cpu")


def test_a_rung_means_the_ladder_up_to_it():
    assert stack("cuda_graph") == LADDER
    assert stack("sdpa+compile") == ("eager", "sdpa", "compile")
    with pytest.raises(UnknownLever, match="'turbo'.*known"):
        stack("sdpa+turbo")


def test_plans_accumulate_in_order():
    ctx = Context(torch.device("cuda"), WORKLOADS["llama"].supports)
    plan, reason = plan_for("cuda_graph", ctx)
    assert reason is None
    assert (plan.attn_implementation, plan.engine, plan.compile, plan.cuda_graph) == ("sdpa", "static", True, True)
    assert plan_for("eager", ctx)[0].engine == "library"


def test_tuned_compiles_keep_what_tuning_chose_across_processes():
    """Coordinate-descent tuning goes with inductor's plain launcher on a GPU: the static one
    forgets the tuned configs it loads from a warm cache, and each process tunes again."""
    tuned = plan_for("compile", Context(torch.device("cuda"), WORKLOADS["llama"].supports, tuning=True))[0]
    assert tuned.inductor_options == {"coordinate_descent_tuning": True, "use_static_cuda_launcher": False}
    untuned = plan_for("compile", Context(torch.device("cuda"), WORKLOADS["llama"].supports, tuning=False))[0]
    assert untuned.inductor_options == {}
    assert plan_for("compile", Context(CPU, WORKLOADS["llama"].supports, tuning=True))[0].inductor_options == {}


def test_cuda_graph_does_not_apply_on_the_cpu_and_says_why():
    plan, reason = plan_for("cuda_graph", Context(CPU, WORKLOADS["llama"].supports))
    assert plan is None and "CUDA" in reason
    plan, reason = plan_for("compile", Context(CPU, frozenset()))
    assert plan is None and "static-cache" in reason


def test_matrix_ids_batches_and_marks():
    cases = matrix("llama", LADDER, "paper")
    ids = [c.id for c in cases]
    assert "llama-7b/T-T/cuda_graph/paper/bs1" in ids
    batches = {c.batch for c in cases if c.model == "llama-7b"}
    assert len(batches) == 2 and 1 in batches
    by_id = {c.id: c for c in cases}
    assert {"gpu", "pr"} <= set(by_id["llama-7b/T-T/cuda_graph/paper/bs1"].marks)
    assert all("large" in c.marks and "pr" not in c.marks for c in cases if c.model == "llama-34b")
    tiny = matrix("llama", LADDER, "tiny")
    assert {c.batch for c in tiny} == {1, WORKLOADS["llama"].table_iii_batch}
    assert [c.lever for c in tiny if "gpu" in c.marks] == ["cuda_graph", "cuda_graph"]


def test_a_task_may_run_some_levers_and_scales_only_and_the_rest_run_the_full_product():
    """Characterization sweeps (sd15's image sizes, video's frame counts) run eager and sdpa at
    batch 1, each point at the scales that define it: the matrix lists no case that would only
    skip. Every other task is presets x batches x every lever its perf file lists."""
    import importlib

    sweeps = {}
    for scale in ("tiny", "small", "paper"):
        for name, wl in sorted(WORKLOADS.items()):
            levers = tuple(importlib.import_module(f"perf_tests.test_{name}").LEVERS)
            cases = matrix(name, levers, scale)
            for task in wl.tasks:
                own = [c for c in cases if c.task == task]
                only = wl.levers_for(task)
                if only is None:
                    assert task in wl.tasks_at(scale)
                    per = sum(len({1, wl.max_batch(p, task)}) for p in wl.presets(scale))
                    assert [c.lever for c in own] == list(levers) * per
                    continue
                sweeps.setdefault(name, set()).add(task)
                assert {c.lever for c in own} <= set(only) and {c.batch for c in own} <= {1}
                assert bool(own) == (task in wl.tasks_at(scale)) and all("pr" not in c.marks for c in own)
    assert {n: len(t) for n, t in sweeps.items()} == {"sd15": 7, "video": 6}


def test_max_batch_fits_the_memory_model():
    wl = WORKLOADS["llama"]
    for name in ("llama-7b", "llama-1b"):
        b = wl.max_batch(wl.preset(name), "T-T")
        assert 8 <= b <= wl.tasks["T-T"].samples and b % 8 == 0


def test_auto_scale():
    assert resolve_scale("auto", CPU) == "tiny"
    assert resolve_scale("auto", torch.device("cuda")) == "paper"
    assert resolve_scale("small", CPU) == "small"


def _imports(path, root):
    """The suite's own files that a source file imports (paths from the root)."""
    import ast
    from pathlib import Path

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = path.relative_to(root).parent
            for _ in range(node.level - 1):
                base = base.parent
            mod = base.joinpath(*node.module.split(".")) if node.module else base
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "workloads":
            mod = Path(*node.module.split("."))
        elif isinstance(node, ast.Import):
            found |= {f"{a.name.replace('.', '/')}.py" for a in node.names if a.name.startswith("workloads")}
            continue
        else:
            continue
        for m in [mod] + [mod / a.name for a in node.names]:
            for f in (m.with_suffix(".py"), m / "__init__.py"):
                if (root / f).is_file():
                    found.add(f.as_posix())
    return found


def test_a_workloads_own_files_are_run_by_it_alone():
    # The source fingerprint of a case leaves out other workloads' own files; that is sound
    # only if nothing it runs imports them. The registry and the lever table import every
    # workload's code to name it, and a case runs only its own workload's entries.
    from pathlib import Path

    from workloads.measure.device import _SOURCE_GLOBS
    from workloads.suites import foreign_sources

    root = Path(__file__).resolve().parents[1]
    owned = {name: set(wl.sources) for name, wl in WORKLOADS.items()}
    for name, files in owned.items():
        assert files, f"{name} names no files of its own"
        missing = [f for f in files if not (root / f).is_file()]
        assert not missing, f"{name} names files that do not exist: {missing}"
        for other, theirs in owned.items():
            assert other == name or not files & theirs, f"{name} and {other} both claim {files & theirs}"
    every = {f.relative_to(root).as_posix() for g in _SOURCE_GLOBS for f in root.glob(g) if f.is_file()}
    common = every - set().union(*owned.values()) - {"workloads/suites/__init__.py", "workloads/levers/__init__.py"}
    for name, files in owned.items():
        for f in sorted(common | files):
            reached = _imports(root / f, root) & foreign_sources(name)
            assert not reached, f"{f}, which {name}'s cases run, imports other workloads' files {sorted(reached)}"


def test_the_case_ids_and_their_marks_are_the_committed_set():
    """A case id names its baseline entries and its `-k` selections: a renamed or lost id orphans
    them. tests/data/case_ids.txt holds every id of every scale with its marks; a new case (a
    new workload, lever, task or batch) is added to it in the change that adds the case."""
    import importlib
    from pathlib import Path

    listed = Path(__file__).with_name("data").joinpath("case_ids.txt").read_text().splitlines()
    made = []
    for scale in ("tiny", "small", "paper"):
        for name in sorted(WORKLOADS):
            module = importlib.import_module(f"perf_tests.test_{name}")
            made += [f"{c.id} {','.join(c.marks)}" for c in matrix(module.WORKLOAD, tuple(module.LEVERS), scale)]
    lost, new = sorted(set(listed) - set(made)), sorted(set(made) - set(listed))
    assert not lost and not new, f"ids or marks lost: {lost[:10]}; not in the file: {new[:10]}"
    assert made == listed   # and in the order a session runs them


def test_a_case_id_parses_back_and_bad_ids_are_named():
    from workloads.case import Case, CaseIdError

    c = Case("seamless", "seamless-large", "S-S", "vocoder_cuda_graph", "paper", 72, ("gpu", "slow"))
    assert Case.parse(c.id, workload="seamless") == c and str(c) == c.id
    assert str(c.input) == "seamless-large/S-S/paper/bs72" and c.reference().id == "seamless-large/S-S/eager/paper/bs72"
    assert Case.of({"case": c.id, "workload": "seamless"}) == c
    for bad in ("llama-7b/T-T/eager/paper", "llama-7b/T-T/eager/paper/bs0", "a/b/c/d/bs1/e", ""):
        with pytest.raises(CaseIdError, match="is not a case id: expected model/task/lever/scale/bs<batch>"):
            Case.parse(bad)


def test_no_module_but_the_case_splits_an_id():
    """Every reading of an id goes through Case.parse: no other module splits one by '/'."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for f in [root / "conftest.py", *root.glob("workloads/**/*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("split", "rsplit", "partition", "rpartition")
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "/"):
                found.append(f"{f.relative_to(root)}:{node.lineno}")
    assert not found, f"ids split outside workloads/case.py: {found}"
