"""run_pipeline.py: studies A and C in one command, the stages in order, stopping at the first that fails; each
stage reads the files of the stages before it. With --baseline (and --improved): the analysis stages only, on
those models (imported ones: import_model.py)."""
from ..core.cli import add_common_args, add_flags, make_parser, params_from, run_main
from ..pipeline import NAMES, PipelineParams, run_stages


def main(description: str | None, argv: list[str] | None = None) -> None:
    parser = make_parser(f"{description or ''}\n\nStages: {' -> '.join(NAMES)}")
    add_common_args(parser, seed_help="passed to every stage")
    defaults = PipelineParams()
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    if args.improved is not None and args.baseline is None:
        parser.error("argument --improved: give --baseline too")
    params = params_from(args, defaults)
    run_main(lambda: run_stages(params), args.debug)
