"""Study B, step 0 (probing/extract_features.py): penultimate features of a frozen backbone for CIFAR-10 train and
test, cached under experiments/probing/<model>/; under torchrun the images are split among the processes."""
from ...core.cli import params_from, run_main
from ...core.distributed import torchrun_job
from ...core.record import write_record
from ...probe import SMOKE, ProbeParams, load_probe, probing_parser


def main(description: str | None, argv: list[str] | None = None) -> None:
    args = probing_parser(description, ProbeParams(), SMOKE).parse_args(argv)
    params = params_from(args, ProbeParams(), SMOKE)

    def run():
        with torchrun_job(params.device, "rerun the same command") as (ranks, _):
            probe = load_probe(params, ranks)
        if ranks.main:
            print(f"{probe.model_name}: train features {tuple(probe.train_features.shape)}, test features "
                  f"{tuple(probe.test_features.shape)} in {probe.out_dir / 'features.pt'}")
            write_record(f"extract_features.{probe.model_name}", {"features": probe.out_dir / "features.pt"},
                         model=probe.model_name, weights=probe.settings["weights"],
                         precision=probe.settings["precision"], train_images=len(probe.train_labels),
                         test_images=len(probe.test_labels))
    run_main(run, args.debug)
