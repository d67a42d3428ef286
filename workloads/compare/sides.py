"""The two builds a comparison runs: the head (the working tree the command runs from, edits
included) and the base (a git worktree of a ref, or a checkout given as a directory), and the
environment each side's processes run in."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


class UsageError(Exception):
    """A comparison that cannot start; the message says why, in one line."""


@dataclass(frozen=True)
class Side:
    name: str              # "base" or "head"
    root: Path             # the checkout whose `workloads` package and tests this side runs
    commit: str | None     # what git resolves it to; None where git does not know it
    label: str             # how the report names it: the ref, or the directory


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except OSError:   # no git on this machine: no side has a commit git knows
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_of(root: Path) -> str | None:
    """The commit checked out at `root`, only where `root` is the top of its own checkout: a
    tree copied under another repository would otherwise be named by that repository's commit."""
    top = _git("rev-parse", "--show-toplevel", cwd=root)
    if top is None or Path(top).resolve() != root.resolve():
        return None
    return _git("rev-parse", "HEAD", cwd=root)


def dirty(root: Path) -> bool:
    return bool(_git("status", "--porcelain", "--untracked-files=no", cwd=root))


def project_root(start: Path) -> Path:
    """The head: the checkout the command runs from (its top, where git knows it)."""
    top = _git("rev-parse", "--show-toplevel", cwd=start)
    root = Path(top) if top else start
    if not (root / "workloads").is_dir() or not (root / "conftest.py").is_file():
        raise UsageError(f"{root} is not a checkout of this suite (no workloads/ and conftest.py there); "
                         "run the comparison from the repository's root")
    return root.resolve()


def head_side(root: Path) -> Side:
    commit = commit_of(root)
    label = "working tree" + (f" at {commit[:10]}" if commit else "") + (" with edits" if commit and dirty(root) else "")
    return Side("head", root, commit, label)


def base_from_dir(directory: Path) -> Side:
    root = directory.resolve()
    if not (root / "workloads").is_dir():
        raise UsageError(f"--base-dir {directory}: not a checkout of this suite (no workloads/ there)")
    # A checkout shipped without its history (or with a stale one) is named by MMGEN_BASE_COMMIT.
    return Side("base", root, os.environ.get("MMGEN_BASE_COMMIT") or commit_of(root), str(directory))


def resolve(repo: Path, ref: str) -> str:
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo)
    if commit is None:
        raise UsageError(f"--base {ref}: not a commit in {repo} (a branch, tag or commit git knows there, e.g. "
                         "origin/main; where there is no .git, use --base-dir)")
    return commit


@contextlib.contextmanager
def base_worktree(repo: Path, ref: str, where: Path) -> Iterator[Side]:
    """The base as a detached worktree of `ref` at `where`, removed again however the comparison
    ends (an error, Ctrl-C): a worktree left behind keeps its path registered in the repository."""
    commit = resolve(repo, ref)
    if where.exists():
        # A comparison killed before it could clean up leaves its worktree registered.
        _git("worktree", "remove", "--force", str(where), cwd=repo)
        if where.exists():
            raise UsageError(f"{where} already exists and is not a worktree of {repo}: remove it or pick another --workdir")
    where.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=repo,
                          capture_output=True, text=True)
    if made.returncode != 0:
        why = (made.stderr.strip().splitlines() or ["no message"])[-1]
        raise UsageError(f"--base {ref}: git worktree add {where} failed: {why}")
    try:
        yield Side("base", where.resolve(), commit, ref)
    finally:
        _git("worktree", "remove", "--force", str(where), cwd=repo)
        _git("worktree", "prune", cwd=repo)


def side_env(side: Side, workdir: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a side's processes. PYTHONPATH starts with the side's root: the project
    is installed editable from one checkout, and each side must import its own `workloads`.
    Both sides share one compile cache, so neither pays a cold compile the other has made.
    What PYTHONPATH held stays after it (libraries installed beside the environment).
    MMGEN_COMMIT names the code in each result's provenance; a base git cannot name must not
    inherit the head's."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join([str(side.root), *filter(None, [env.get("PYTHONPATH")])])
    if workdir is not None:
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(workdir / "inductor-cache"))
    if side.name == "head":
        # An inherited MMGEN_COMMIT names the head's code (a tree shipped with a stale .git would
        # name it wrong); otherwise git does, in the process, with whether there were edits.
        pass
    elif side.commit:
        env["MMGEN_COMMIT"] = side.commit
    elif side.name == "base":
        env.pop("MMGEN_COMMIT", None)
    return env
