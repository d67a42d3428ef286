"""What the workload files share: presets and builds from a model family module, and the rule
that sizes a max batch."""
from __future__ import annotations

from ..models.common import CheckpointError, Preset, check_checkpoint_dir, first_line

# "Max batch" is the largest that fits in an 80 GB GPU (seed paper 1 sizes its max batches to
# an A100 80GB). 10% is left to the CUDA context, allocator fragmentation and workspaces.
MAX_BATCH_MEMORY = 80e9 * 0.90


def batch_that_fits(fit: int) -> int:
    """A max batch from how many rows fit: at least 1, in multiples of 8 from 8 up."""
    return max(1, fit - fit % 8 if fit >= 8 else fit)


class Family:
    """Presets and builds, from the model family module a workload names in `family`
    (PRESETS, MODEL_TYPE, build(), config(), meta_model())."""

    family: object
    # Module class names per kind of operator, for the operator breakdown (measure.operators);
    # empty: the workload records none.
    operator_groups = {}

    def models(self) -> tuple[str, ...]:
        return tuple(self.family.PRESETS)

    def tasks_at(self, scale: str) -> tuple[str, ...]:
        """The tasks that have cases at `scale`: every task, unless a workload's task is defined
        at some scales only (a sweep's points)."""
        return tuple(self.tasks)

    def levers_for(self, task: str) -> tuple[str, ...] | None:
        """The only levers a task runs (None: every lever its perf file lists). A characterization
        runs the rungs it compares, so that no case is listed only to skip."""
        return None

    def presets(self, scale: str) -> list[Preset]:
        return [p for p in self.family.PRESETS.values() if p.scale == scale]

    def preset(self, name: str) -> Preset:
        return self.family.PRESETS[name]

    def build(self, preset: Preset, device, checkpoint: str | None = None):
        if checkpoint is None:
            return self.family.build(preset, device)
        try:
            return self.family.build(preset, device, checkpoint=checkpoint)
        except CheckpointError:
            raise
        except Exception as e:   # the library's own traceback runs to a hundred lines: say what and where
            raise CheckpointError(f"checkpoint path {checkpoint}: {preset.name} did not load from it "
                                  f"({first_line(e)})") from None

    def check_checkpoint(self, path: str) -> None:
        check_checkpoint_dir(path, self.family.MODEL_TYPE)

    def step_flops(self, model, batch) -> float | None:
        """FLOPs of one decode step, for its arithmetic intensity (seed paper 2, Fig. 5); None
        where the workload does not count them."""
        return None
