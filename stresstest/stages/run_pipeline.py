"""run_pipeline.py: studies A and C in one command, the stages in order, stopping at the first that fails; each
stage reads the files of the stages before it. With --baseline (and --improved): the analysis stages only, on
those models (imported ones: import_model.py)."""
from pathlib import Path

from ..core.cli import add_common_args, make_parser, run_main
from ..pipeline import NAMES, PipelineParams, run_stages


def main(description: str | None, argv: list[str] | None = None) -> None:
    parser = make_parser(f"{description or ''}\n\nStages: {' -> '.join(NAMES)}")
    add_common_args(parser, seed_help="passed to every stage")
    parser.add_argument("--smoke", action="store_true", help="every stage's smoke preset (minutes on a CPU)")
    parser.add_argument("--from-stage", choices=NAMES, default=NAMES[0],
                        help="start here (the earlier stages' outputs must exist)")
    parser.add_argument("--baseline", type=Path,
                        help="analyse this checkpoint (e.g. experiments/<name>/best_model.pth of import_model.py) "
                             "instead of training: the stages that train (train, improvement, seeds) are skipped "
                             "with a line")
    parser.add_argument("--improved", type=Path,
                        help="with --baseline: the model to compare it with (without it, the comparison stages are "
                             "skipped and the others analyse the baseline alone)")
    args = parser.parse_args(argv)
    if args.improved is not None and args.baseline is None:
        parser.error("argument --improved: give --baseline too")
    params = PipelineParams(data_dir=args.data_dir, device=args.device, seed=args.seed, smoke=args.smoke,
                            debug=args.debug, from_stage=args.from_stage, baseline=args.baseline,
                            improved=args.improved)
    run_main(lambda: run_stages(params), args.debug)
