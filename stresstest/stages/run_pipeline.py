"""run_pipeline.py: studies A and C in one command, the stages in order, stopping at the first that fails; each
stage reads the files of the stages before it."""
import subprocess
import sys
import time
from pathlib import Path

from ..core.cli import add_common_args, make_parser

REPOSITORY = Path(__file__).resolve().parents[2]
# (script, whether it has a --smoke preset)
STAGES = [("train.py", True), ("failure_analysis.py", True), ("explainability.py", False),
          ("improvement.py", True), ("compare_models.py", False), ("explainability_improved.py", False),
          ("calibration.py", False), ("robustness.py", True), ("explanation_checks.py", True),
          ("seeds.py", True),
          ("report.py", False)]
NAMES = [name for name, _ in STAGES]


def main(description: str, argv=None) -> None:
    parser = make_parser(description)
    add_common_args(parser, seed_help="passed to every stage")
    parser.add_argument("--smoke", action="store_true", help="every stage's smoke preset (minutes on a CPU)")
    parser.add_argument("--from-stage", choices=NAMES, default=NAMES[0],
                        help="start here (the earlier stages' outputs must exist)")
    args = parser.parse_args(argv)
    shared = ["--data-dir", str(args.data_dir), "--device", args.device, "--seed", str(args.seed),
              *(["--debug"] if args.debug else [])]
    first = NAMES.index(args.from_stage)
    for number, (stage, has_smoke) in enumerate(STAGES[first:], start=first + 1):
        print(f"=== stage {number}/{len(STAGES)}: {stage}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPOSITORY / stage), *shared,
                                 *(["--smoke"] if args.smoke and has_smoke else [])])
        if result.returncode != 0:
            print(f"error: stage {number}/{len(STAGES)} {stage} failed (exit {result.returncode}); fix what it said "
                  f"above and rerun with --from-stage {stage}", file=sys.stderr)
            sys.exit(result.returncode)
        print(f"=== {stage} done in {time.perf_counter() - started:.0f} s", flush=True)
    print("pipeline done: experiments/ and failure_cases/baseline/ hold the results")

