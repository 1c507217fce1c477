"""The stages in order as subprocesses, stopping at the first that fails: studies A and C on the built-in runs, or
the analysis stages alone on models given (imported ones). What run_pipeline.py and stresstest.stress_test call."""
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .core import paths
from .core.cli import NO_MODEL, flag
from .core.errors import UserError

REPOSITORY = Path(__file__).resolve().parents[1]
NAMES = [stage.script for stage in paths.PIPELINE]


@dataclass(frozen=True)
class PipelineParams:
    data_dir: Path = Path("data")
    device: str = "auto"
    seed: int = 0
    smoke: bool = field(default=False, metadata=flag("every stage's smoke preset (minutes on a CPU)"))
    debug: bool = False
    from_stage: str = field(default=paths.PIPELINE[0].script, metadata=flag(
        "start here (the earlier stages' outputs must exist)", choices=NAMES))
    baseline: Path | None = field(default=None, metadata=flag(
        "analyse this checkpoint (e.g. experiments/<name>/best_model.pth of import_model.py) instead of training: "
        "the stages that train (train, improvement, seeds) are skipped with a line", Path))
    improved: Path | None = field(default=None, metadata=flag(
        "with --baseline: the model to compare it with (without it, the comparison stages are skipped and the "
        "others analyse the baseline alone)", Path))


def stage_arguments(stage: paths.Stage, params: PipelineParams) -> list[str] | None:
    """The stage's own arguments, or None when it cannot run on the models given (it trains a recipe, or compares
    two models and one was given)."""
    if params.baseline is None:
        return []
    baseline, improved = str(params.baseline), str(params.improved) if params.improved else None
    return {paths.TRAINS: None, paths.RECORDS_ONLY: [],
            paths.BASELINE: ["--checkpoint", baseline],
            paths.IMPROVED: ["--checkpoint", improved] if improved else None,
            paths.PAIR: ["--baseline", baseline, "--improved", improved] if improved else None,
            paths.BOTH: ["--baseline", baseline, "--improved", improved or NO_MODEL]}[stage.models]


def run_stages(params: PipelineParams) -> None:
    """Run the stages from params.from_stage on; a stage that fails stops the run with a UserError naming it."""
    if params.from_stage not in NAMES:
        raise UserError(f"--from-stage {params.from_stage}: not a stage ({', '.join(NAMES)})")
    shared = ["--data-dir", str(params.data_dir), "--device", params.device, "--seed", str(params.seed),
              *(["--debug"] if params.debug else [])]
    total, first = len(paths.PIPELINE), NAMES.index(params.from_stage)
    for number, stage in enumerate(paths.PIPELINE[first:], start=first + 1):
        arguments = stage_arguments(stage, params)
        if arguments is None:
            why = stage.why if stage.models == paths.TRAINS else "compares two models: give --improved too"
            print(f"=== stage {number}/{total}: {stage.script} skipped: it {why}", flush=True)
            continue
        print(f"=== stage {number}/{total}: {stage.script}", flush=True)
        started = time.perf_counter()
        command = [sys.executable, str(REPOSITORY / stage.script), *shared, *arguments,
                   *(["--smoke"] if params.smoke and stage.smoke else [])]
        result = subprocess.run(command)
        if result.returncode != 0:
            raise UserError(f"stage {number}/{total} {stage.script} failed (exit {result.returncode}); fix what it "
                            f"said above and rerun with --from-stage {stage.script}")
        print(f"=== {stage.script} done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"pipeline done: experiments/ and failure_cases/baseline/ hold the results; the report is "
          f"{paths.REPORT_DIR / 'index.html'}")
