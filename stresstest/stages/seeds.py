"""Study C (seeds.py): both study A models trained over several seeds, then every comparison with its spread.

Per model: mean, standard deviation and a 95% t-interval over seeds of test accuracy, NLL, ECE and confident
failures; the paired baseline-minus-improved difference per seed with its t-interval; McNemar's exact test
for each seed's pair; and how stable the confident-failure set is across seeds."""
import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import atomic, paths
from ..core.cases import read_case_summary
from ..core.checkpoint import load_classifier, read_checkpoint, require_training_run
from ..core.cli import BothModels, add_common_args, add_flags, flag, make_parser, params_from, run_main
from ..core.device import describe_device, resolve_device
from ..core.findings import NUMBER, PERCENT, Estimate, Headline, Picture, Section, Table
from ..core.record import write_record
from ..core.sweep import LAUNCHERS, run_jobs
from ..data.cifar10 import data_summary, load_cifar10
from ..metrics import (expected_calibration_error, jaccard, mcnemar_exact, negative_log_likelihood, t_interval,
                        wrong_among_most_confident)
from ..nn.inference import REPORTED_PRECISION, probabilities
from ..plots import save, seeds_figure
from ..training import TrainConfig, ensure_finished, saved_config

METRICS = ["accuracy", "nll", "ece", "confident_failures", "wrong_among_most_confident"]


@dataclass(frozen=True)
class SeedsParams(BothModels):
    seeds: tuple = field(default=(0, 1, 2, 3, 4), metadata=flag(
        "training seeds of both models (a seed whose run already finished is not retrained)", int))
    out_dir: Path = field(default=paths.SEEDS_DIR, metadata=flag(
        "run folders <model>/seed_<k>/ and the tables and figure"))
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        f"{paths.CASES_SUMMARY} of {paths.CASES_PRODUCER}: its confidence threshold is used"))
    launcher: str = field(default="inline", metadata=flag(
        "where the training runs go: inline (this process, one after another), local (submitit: processes, one per "
        "visible GPU at a time, or one after another on a CPU), slurm (one SLURM job array through submitit), auto "
        "(slurm where sbatch exists, else local)", choices=LAUNCHERS))


SMOKE = SeedsParams(seeds=(0, 1))


def recipe(checkpoint_path: Path, tag: str) -> TrainConfig:
    """The config the training stage made this model with: every other seed is trained with it."""
    checkpoint = read_checkpoint(checkpoint_path, paths.producer(tag))
    require_training_run(checkpoint, checkpoint_path, "seeds.py", paths.producer(tag))
    return saved_config(checkpoint["config"], checkpoint_path)


def ensure_run(tag: str, config: TrainConfig, data_dir: Path, out_dir: Path, device_name: str,
               reuse: Path) -> Path:
    """The folder of a finished run of `config`: `reuse` (the training stage's own run) when it is exactly this
    run, else out_dir/<model>/seed_<k>, trained or resumed now; finished seeds are not retrained."""
    return ensure_finished(config, data_dir, out_dir / tag / f"seed_{config.seed}", device_name,
                           f"{tag} seed {config.seed}", reuse=reuse)


def run_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float, most_confident: int) -> dict:
    predicted = probs.argmax(1)
    return {"accuracy": float((predicted == labels).mean()), "nll": negative_log_likelihood(probs, labels),
            "ece": expected_calibration_error(probs.max(1), predicted == labels),
            "confident_failures": int(((predicted != labels) & (probs.max(1) >= threshold)).sum()),
            "wrong_among_most_confident": wrong_among_most_confident(probs, labels, most_confident)}


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per model and for the paired difference (baseline minus improved, seed by seed): mean, std, t-interval."""
    rows = []
    by_model = {tag: group.set_index("seed") for tag, group in per_seed.groupby("model", sort=False)}
    difference = by_model["baseline"][METRICS] - by_model["improved"][METRICS]
    for name, table in [*by_model.items(), ("baseline_minus_improved", difference.dropna())]:
        for metric in METRICS:
            mean, std, low, high = t_interval(table[metric])
            rows.append({"model": name, "metric": metric, "seeds": len(table), "mean": round(mean, 6),
                         "std": round(std, 6), "t95_low": round(low, 6), "t95_high": round(high, 6)})
    return pd.DataFrame(rows)


def stability(failure_sets: dict) -> tuple[pd.DataFrame, dict]:
    """How often each test image is a confident failure over seeds, and the mean pairwise Jaccard overlap of the
    seeds' confident-failure sets per model. failure_sets: {model: {seed: set of test indices}}."""
    images = sorted(set().union(*(s for sets in failure_sets.values() for s in sets.values())))
    table = pd.DataFrame({"test_index": images})
    overlap = {}
    for tag, sets in failure_sets.items():
        table[f"{tag}_seeds"] = [sum(i in s for s in sets.values()) for i in images]
        pairs = [jaccard(a, b) for a, b in itertools.combinations(sets.values(), 2)]
        overlap[tag] = float(np.mean(pairs)) if pairs else float("nan")
    return table, overlap


def seeds_study(params: SeedsParams) -> None:
    seeds = list(params.seeds)
    threshold = float(read_case_summary(params.cases_dir)["threshold"])  # decided by the failure analysis
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    checkpoints = params.checkpoints
    recipes = {tag: recipe(path, tag) for tag, path in checkpoints.items()}  # decided by the training stages
    runs = [(tag, seed) for tag in paths.RUNS for seed in seeds]
    jobs = [(ensure_run, (tag, dataclasses.replace(recipes[tag], seed=seed), Path(params.data_dir).resolve(),
                          out_dir.resolve(), params.device, checkpoints[tag].parent))
            for tag, seed in runs]
    folders = dict(zip(runs, run_jobs(jobs, params.launcher, out_dir / "submitit")))
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    labels = data.test_labels
    images = torch.from_numpy(data.test_images).to(device)
    probs = {}
    for (tag, seed), folder in folders.items():
        model, checkpoint = load_classifier(folder / paths.BEST_MODEL, paths.producer(tag), device)
        probs[tag, seed] = probabilities(model, checkpoint, images).double().cpu().numpy()
    rows, tests, failure_sets = [], [], {tag: {} for tag in paths.RUNS}
    for seed in seeds:
        # the fair count: each model's most confident answers, as many as this seed's baseline gives at threshold
        most_confident = int((probs["baseline", seed].max(1) >= threshold).sum())
        for tag in paths.RUNS:
            p = probs[tag, seed]
            rows.append({"model": tag, "seed": seed, "run": str(folders[tag, seed]), "images": len(labels),
                         "most_confident_answers": most_confident,
                         **run_metrics(p, labels, threshold, most_confident)})
            failure_sets[tag][seed] = set(np.flatnonzero((p.argmax(1) != labels) & (p.max(1) >= threshold)))
        base_right, impr_right = (probs[tag, seed].argmax(1) == labels for tag in paths.RUNS)
        only_base, only_impr, p_value = mcnemar_exact(base_right, impr_right)
        tests.append({"seed": seed, "right_only_for_baseline": only_base, "right_only_for_improved": only_impr,
                      "mcnemar_exact_p": round(p_value, 6)})
    per_seed = pd.DataFrame(rows)
    summary = summarise(per_seed)
    images_table, overlap = stability(failure_sets)
    images_table.insert(1, "true_label", [data.class_names[labels[i]] for i in images_table.test_index])
    overlap_rows = pd.DataFrame([{"model": tag, "metric": "confident_failure_set_jaccard", "seeds": len(seeds),
                                  "mean": round(value, 6)} for tag, value in overlap.items()])
    summary = pd.concat([summary, overlap_rows], ignore_index=True)  # a mean over seed pairs: no interval
    summary.insert(3, "threshold", threshold)
    # per model and test image, over the seeds: how many get it wrong, and how many confidently (stress_profile.py)
    per_image = pd.concat([pd.DataFrame({
        "model": tag, "test_index": np.arange(len(labels)),
        "seeds_wrong": sum(probs[tag, seed].argmax(1) != labels for seed in seeds),
        "seeds_confidently_wrong": sum((probs[tag, seed].argmax(1) != labels) & (probs[tag, seed].max(1) >= threshold)
                                       for seed in seeds)}) for tag in paths.RUNS], ignore_index=True)
    for name, table in [("per_seed.csv", per_seed), ("summary.csv", summary), ("mcnemar.csv", pd.DataFrame(tests)),
                        ("failure_stability.csv", images_table), ("per_image.csv", per_image)]:
        atomic.write_csv(out_dir / name, table.to_dict("records"), list(table.columns))
    save(out_dir / "seeds.png", seeds_figure(per_seed, summary, METRICS, len(labels)))

    print(f"{len(seeds)} seeds per model, {len(labels)} test images, confident failures at >= {threshold}:")
    for row in summary[summary.metric.isin(METRICS)].itertuples():
        print(f"  {row.model:24s} {row.metric:27s} {row.mean:9.4f}  95% t-interval [{row.t95_low:.4f}, "
              f"{row.t95_high:.4f}]")
    for test in tests:
        print(f"  seed {test['seed']}: McNemar exact p {test['mcnemar_exact_p']:.3g} "
              f"({test['right_only_for_baseline']} right only for the baseline, "
              f"{test['right_only_for_improved']} only for the improved model)")
    print("  confident-failure sets, mean pairwise Jaccard overlap between seeds: "
          + ", ".join(f"{tag} {value:.2f}" for tag, value in overlap.items()) + f" -> {out_dir}")
    write_record("seeds", {"seeds": out_dir}, checkpoints, **findings(summary, tests, len(seeds), threshold, out_dir),
                 data=data_summary(data), device=describe_device(device), precision=REPORTED_PRECISION, seeds=seeds,
                 threshold=threshold)


def findings(summary: pd.DataFrame, tests: list[dict], seeds: int, threshold: float, out_dir: Path) -> dict:
    """The headline row (accuracy, mean over seeds with its t-interval; the paired difference in the note) and
    the section: every metric per model and for the difference, McNemar per seed."""
    def estimate(row: dict) -> Estimate:
        return Estimate(row["mean"], row["t95_low"], row["t95_high"],
                        PERCENT if row["metric"] in ("accuracy", "ece") else NUMBER)

    rows = {(row["model"], row["metric"]): row for row in summary.to_dict("records")}
    difference = rows["baseline_minus_improved", "accuracy"]
    headline = Headline("test accuracy, mean over seeds (95% t-interval)",
                        {tag: estimate(rows[tag, "accuracy"]) for tag in paths.RUNS}, f"{seeds} seeds",
                        f"baseline minus improved {estimate(difference).text()}")
    table = Table(["metric", *paths.RUNS, "baseline minus improved"],
                  [[metric, *(estimate(rows[tag, metric]) for tag in [*paths.RUNS, "baseline_minus_improved"])]
                   for metric in METRICS],
                  note=f"Mean over {seeds} seeds with its 95% Student-t interval; the difference is paired seed by "
                       f"seed. Confident failures at >= {threshold}; the fair count among each model's N most "
                       "confident answers.")
    mcnemar = Table(["seed", "right only for the baseline", "right only for the improved", "McNemar exact p"],
                    [[test["seed"], test["right_only_for_baseline"], test["right_only_for_improved"],
                      test["mcnemar_exact_p"]] for test in tests])
    section = Section("Several seeds: intervals and tests", lead=Picture(out_dir / "seeds.png", "seeds"),
                      tables=[table, mcnemar],
                      notes=["Confident-failure sets, mean pairwise Jaccard overlap between seeds: " + ", ".join(
                          f"{row['model']} {row['mean']:.2f}" for row in summary.to_dict("records")
                          if row["metric"] == "confident_failure_set_jaccard")],
                      links=[out_dir / name for name in ["per_seed.csv", "summary.csv", "mcnemar.csv",
                                                         "failure_stability.csv"]])
    return {"headline": [headline], "sections": [section]}


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = SeedsParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="unused: the seeds are --seeds")
    add_flags(parser, defaults, SMOKE)
    parser.add_argument("--baseline", type=Path, default=defaults.baseline,
                        help=f"baseline checkpoint ({paths.producer('baseline')}): its training config is the "
                             "recipe of the baseline's seeds, and its run is reused for its own seed")
    parser.add_argument("--improved", type=Path, default=defaults.improved,
                        help=f"improved checkpoint ({paths.producer('improved')}), likewise")
    parser.add_argument("--smoke", action="store_true",
                        help="fewer seeds (the runs follow the training stages' configs, smoke or not)")
    args = parser.parse_args(argv)
    params = params_from(args, defaults, SMOKE)
    if any(seed < 0 for seed in params.seeds):
        parser.error("argument --seeds: seeds are non-negative integers")
    run_main(lambda: seeds_study(params), args.debug)
