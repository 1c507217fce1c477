"""The stages in order as subprocesses, stopping at the first that fails: studies A and C on the built-in runs, or
the analysis stages alone on models given (imported ones). What run_pipeline.py and stresstest.stress_test call."""
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .core import paths
from .core.cli import NO_MODEL
from .core.errors import UserError

REPOSITORY = Path(__file__).resolve().parents[1]
# (script, whether it has a --smoke preset)
STAGES = [("train.py", True), ("failure_analysis.py", True), ("explainability.py", False),
          ("improvement.py", True), ("compare_models.py", False), ("explainability_improved.py", False),
          ("calibration.py", False), ("robustness.py", True), ("adversarial.py", True),
          ("explanation_checks.py", True),
          ("seeds.py", True), ("report.py", False)]
NAMES = [name for name, _ in STAGES]
# the stages that retrain a recipe, which only the built-in runs have
NEED_TRAINING = {"train.py": "trains the built-in ResNet-18", "improvement.py": "trains the built-in ResNet-18",
                 "seeds.py": "retrains each model's training recipe over seeds (a run of train.py/improvement.py)"}


@dataclass(frozen=True)
class PipelineParams:
    data_dir: Path = Path("data")
    device: str = "auto"
    seed: int = 0
    smoke: bool = False
    debug: bool = False
    from_stage: str = NAMES[0]
    baseline: Path | None = None  # given: the analysis stages only, on this model (and improved when given)
    improved: Path | None = None


def stage_arguments(params: PipelineParams) -> list[tuple[str, list[str] | None]]:
    """(script, its own arguments) for every stage, in order; None for a stage that cannot run on the models given."""
    if params.baseline is None:
        return [(name, []) for name in NAMES]
    baseline, improved = str(params.baseline), str(params.improved) if params.improved else None
    both = ["--baseline", baseline, "--improved", improved or NO_MODEL]
    plan = {"failure_analysis.py": ["--checkpoint", baseline], "explainability.py": ["--checkpoint", baseline],
            "compare_models.py": ["--baseline", baseline, "--improved", improved] if improved else None,
            "explainability_improved.py": ["--checkpoint", improved] if improved else None,
            "calibration.py": both, "robustness.py": both, "adversarial.py": both, "explanation_checks.py": both,
            "report.py": []}
    return [(name, plan.get(name)) for name in NAMES]


def run_stages(params: PipelineParams) -> None:
    """Run the stages from params.from_stage on; a stage that fails stops the run with a UserError naming it."""
    if params.from_stage not in NAMES:
        raise UserError(f"--from-stage {params.from_stage}: not a stage ({', '.join(NAMES)})")
    shared = ["--data-dir", str(params.data_dir), "--device", params.device, "--seed", str(params.seed),
              *(["--debug"] if params.debug else [])]
    smoke = dict(STAGES)
    plan = stage_arguments(params)
    first = NAMES.index(params.from_stage)
    for number, (stage, arguments) in enumerate(plan[first:], start=first + 1):
        if arguments is None or (params.baseline is not None and stage in NEED_TRAINING):
            why = NEED_TRAINING.get(stage, "compares two models: give --improved too")
            print(f"=== stage {number}/{len(plan)}: {stage} skipped: it {why}", flush=True)
            continue
        print(f"=== stage {number}/{len(plan)}: {stage}", flush=True)
        started = time.perf_counter()
        command = [sys.executable, str(REPOSITORY / stage), *shared, *arguments,
                   *(["--smoke"] if params.smoke and smoke[stage] else [])]
        result = subprocess.run(command)
        if result.returncode != 0:
            raise UserError(f"stage {number}/{len(plan)} {stage} failed (exit {result.returncode}); fix what it said "
                            f"above and rerun with --from-stage {stage}")
        print(f"=== {stage} done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"pipeline done: experiments/ and failure_cases/baseline/ hold the results; the report is "
          f"{paths.REPORT_DIR / 'index.html'}")
