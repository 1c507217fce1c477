"""Study C, part 5 (stress_profile.py): every test image's stress profile, one row per image and model, joined by test
index from what the other stages left (never recomputed); the correlations between those signals; and the failure
slices, coherent groups of test images a model gets wrong together, found on one half of the test images and
measured on the other (stresstest.slices)."""
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import atomic, paths
from ..core.checkpoint import load_classifier, model_card
from ..core.cli import (BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser,
                         non_negative_int, params_from, positive_int, run_main)
from ..core.device import describe_device, resolve_device
from ..core.errors import UserError
from ..core.findings import LOWER, Estimate, Headline, Picture, Section, Table
from ..core.record import read_record, write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..data_faults import DataFaults, find_data_faults
from ..label_issues import flag_label_issues, on_published_list
from ..metrics import fisher_exact_p, jaccard, rank_correlation, spearman_interval, top_two_margin, wilson_interval
from ..nn.inference import REPORTED_PRECISION, checkpoint_normalizer, logits_and_features
from ..ood_scores import ID_SET
from ..plots import correlation_figure, save, slice_gallery_figure
from ..slices import HeldOutSlice, SliceSettings, halves, held_out_slices

OOD_SHOWN = ("energy", "knn")        # the OOD scores whose percentiles enter the correlations and slice summaries
MIN_PAIRS = 10                       # fewer images with both signals: no correlation is given
OVERLAP_DRAWS = 2000                 # random sets of the same sizes behind the slice-overlap p-value
SLICES_SHOWN = 4                     # rows of the slice gallery per model


@dataclass(frozen=True)
class ProfileParams(BothModels):
    out_dir: Path = field(default=paths.PROFILE_DIR, metadata=flag("where tables and figures go"))
    slices: int = field(default=SliceSettings.slices, metadata=flag(
        "mixture components of the slice discovery (8-10 keep a planted group whole: docs/decisions.md)",
        positive_int))
    train_images: int = field(default=0, metadata=flag(
        "the first N training images the duplicate check compares the test images with (0: all)",
        non_negative_int))


SMOKE = ProfileParams(train_images=1000)  # the duplicate check's training features: one fp32 pass over N images


# -- the stages' per-image outputs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A stage's per-image file: the record that says where it is, the output folder's name in that record, the
    file, and how its columns become the profile's (`read` returns model, test_index and the signals; a file
    judged by one model for every model has no model column)."""
    stage: str
    output: str
    file: str
    read: Callable[[pd.DataFrame], pd.DataFrame]


def calibration_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["model", "test_index", "confidence_temperature"]]


def label_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """cleanlab's label quality of each test image on the baseline's probabilities (the flags of every model's
    probabilities are the stage's own label judges)."""
    return frame[["test_index", "label_quality"]]


def robustness_columns(frame: pd.DataFrame) -> pd.DataFrame:
    flips = [c for c in frame.columns if c.startswith("corruptions_flipping")]
    return frame[["model", "test_index", "corrupted_sets_right", *flips]]


def occlusion_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"spearman": "occlusion_gradcam_spearman"})[
        ["model", "test_index", "occlusion_gradcam_spearman"]]


def adversarial_columns(frame: pd.DataFrame) -> pd.DataFrame:
    wanted = [c for c in frame.columns if c.startswith(("min_", "pgd_broken_"))]
    return frame[["model", "test_index", *wanted]]


def ood_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Each test image's percentile among the test images under every OOD score (low: it looks out of
    distribution to the model; the scores are higher-is-more-in-distribution)."""
    test = frame[frame.set == ID_SET].rename(columns={"index": "test_index"})
    scores = [c for c in test.columns if c not in ("model", "set", "test_index", "prediction", "confidence")]
    percentiles = test.groupby("model")[scores].rank(pct=True).round(6)
    percentiles.columns = [f"ood_percentile_{score}" for score in scores]
    return pd.concat([test[["model", "test_index"]], percentiles], axis=1)


def seeds_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["model", "test_index", "seeds_wrong", "seeds_confidently_wrong"]]


SOURCES = (
    Source("calibration", "calibration", "per_image.csv", calibration_columns),
    Source("failure_analysis", "cases", "label_quality.csv", label_columns),
    Source("robustness", "robustness", "per_image.csv", robustness_columns),
    Source("robustness", "robustness", "occlusion_gradcam.csv", occlusion_columns),
    Source("adversarial", "adversarial", "per_image.csv", adversarial_columns),
    Source("ood", "ood", "scores.csv", ood_columns),
    Source("seeds", "seeds", "per_image.csv", seeds_columns),
)


def same_models(record: dict, cards: dict) -> str:
    """Why the record's models are not the profile's ('' when they are): checked by checkpoint digest where the
    record names its models, by path where it names only its inputs (seeds.py: retrains of those recipes)."""
    recorded = record.get("models", {})
    for tag, card in cards.items():
        if tag in recorded and recorded[tag].get("checkpoint_sha256") not in (None, card["checkpoint_sha256"]):
            return f"its {tag} model is another checkpoint ({recorded[tag]['checkpoint']})"
        path = record.get("inputs", {}).get(tag)
        if not recorded and path is not None and Path(path).resolve() != Path(card["checkpoint"]).resolve():
            return f"it ran on another {tag} checkpoint ({path})"
    return ""


def read_sources(cards: dict) -> tuple[list[pd.DataFrame], dict]:
    """The frames of every source whose stage ran on these models, and per source what became of it."""
    frames, status = [], {}
    for source in SOURCES:
        key = f"{source.stage}.py: {source.file}"
        record = read_record(source.stage)
        if record is None or source.output not in record["outputs"]:
            status[key] = "not run"
            continue
        path = record["outputs"][source.output] / source.file
        why = same_models(record, cards)
        if why or not path.is_file():
            status[key] = f"not joined: {why or f'{path} is missing (rerun {source.stage}.py)'}"
            continue
        frames.append(source.read(pd.read_csv(path)))
        status[key] = f"joined from {path}"
    return frames, status


def join(base: pd.DataFrame, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The base rows (model, test_index, ...) with every source's columns, by model and test index (by test index
    alone for a file without a model column); images a stage did not sample stay empty."""
    for frame in frames:
        keys = ["model", "test_index"] if "model" in frame.columns else ["test_index"]
        frame = frame[frame.model.isin(base.model.unique())] if "model" in keys else frame
        base = base.merge(frame.drop_duplicates(keys), on=keys, how="left")
    return base


# -- correlations ------------------------------------------------------------------------------------------

def signal_columns(table: pd.DataFrame) -> list[str]:
    """The signals the correlations and slice summaries show, where some image has a value."""
    wanted = ["confidence", "margin", "confidence_temperature", "label_quality", "corruptions_flipping_severity_3",
              "corrupted_sets_right", "min_linf", "min_l2", *(f"ood_percentile_{s}" for s in OOD_SHOWN),
              "seeds_wrong", "seeds_confidently_wrong", "outlier_score"]
    return [c for c in wanted if c in table.columns and table[c].notna().any()]


def correlations(table: pd.DataFrame, signals: list[str]) -> tuple[pd.DataFrame, dict]:
    """Spearman's rho of every pair of signals per model over the images that have both, with 95% intervals."""
    rows, matrices = [], {}
    for tag, group in table.groupby("model", sort=False):
        matrix = np.eye(len(signals))
        for (i, a), (j, b) in itertools.combinations(enumerate(signals), 2):
            both = group[[a, b]].dropna().astype(float)
            # nan below MIN_PAIRS, or where a signal is flat over the pairs (no rank order)
            rho, p_value = (rank_correlation(both[a].to_numpy(), both[b].to_numpy()) if len(both) >= MIN_PAIRS
                            else (float("nan"), float("nan")))
            low, high = spearman_interval(rho, len(both))
            matrix[i, j] = matrix[j, i] = rho
            rows.append({"model": tag, "signal": a, "other": b, "n": len(both), "spearman": round(rho, 4),
                         "low95": round(low, 4), "high95": round(high, 4), "p_value": p_value})
        matrices[tag] = matrix
    return pd.DataFrame(rows), matrices


# -- slices ------------------------------------------------------------------------------------------------

def share(values: pd.Series) -> tuple[str, float]:
    counts = values.value_counts(normalize=True)
    return str(counts.index[0]), float(counts.iloc[0])


def slice_row(tag: str, found: HeldOutSlice, members: pd.DataFrame, rest: pd.DataFrame, signals: list[str]) -> dict:
    """One slice: its held-out error rate against the rest of its half, its dominant classes, its mean signals
    beside the rest's, and a line built from those facts."""
    low, high = found.interval
    true_class, true_share = share(members.true_label)
    called, called_share = share(members.predicted_label)
    row = {"model": tag, "found_on_half": found.found_on, "slice": found.slice, "found_size": found.found_size,
           "found_error_rate": round(found.found_error_rate, 4), "held_out_size": len(found.members),
           "errors": found.errors, "error_rate": round(found.error_rate, 4), "error_low95": round(low, 4),
           "error_high95": round(high, 4), "rest_size": found.rest_size,
           "rest_error_rate": round(found.rest_error_rate, 4), "p_value": found.p_value,
           "p_bonferroni": found.p_bonferroni, "top_true_class": true_class, "top_true_share": round(true_share, 3),
           "top_predicted_class": called, "top_predicted_share": round(called_share, 3)}
    for signal in signals:
        row[f"mean_{signal}"] = round(float(members[signal].mean()), 4)
        row[f"rest_mean_{signal}"] = round(float(rest[signal].mean()), 4)
    stands = "stands apart" if found.p_bonferroni < 0.05 else "does not stand apart"
    row["description"] = (f"{true_share:.0%} {true_class}, {called_share:.0%} called {called}; wrong on "
                          f"{found.error_rate:.0%} [{low:.0%}, {high:.0%}] of {len(found.members)} held-out images "
                          f"against {found.rest_error_rate:.0%} of the rest ({stands}, Bonferroni p "
                          f"{found.p_bonferroni:.2g})")
    return row


def model_slices(tag: str, table: pd.DataFrame, features: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                 signals: list[str], settings: SliceSettings) -> tuple[list[dict], list[HeldOutSlice]]:
    found = held_out_slices(features, probs, labels, settings)
    parts = halves(len(labels), settings.seed)
    rows = []
    for item in found:
        inside = np.isin(np.arange(len(labels)), item.members)
        # the rest of the half it is measured on, as its rest_error_rate counts it
        held = np.isin(np.arange(len(labels)), parts[1 - item.found_on])
        rows.append(slice_row(tag, item, table[inside], table[held & ~inside], signals))
    return rows, found


def worst_per_half(found: list[HeldOutSlice]) -> np.ndarray:
    """The held-out images of each half's slice with the highest held-out error rate."""
    worst = [max((s for s in found if s.found_on == half), key=lambda s: s.error_rate, default=None)
             for half in (0, 1)]
    return np.concatenate([s.members for s in worst if s is not None] or [np.array([], int)])


def slice_overlap(first: np.ndarray, second: np.ndarray, count: int, seed: int) -> dict:
    """Jaccard overlap of two models' worst slices against random sets of the same sizes (one-sided p)."""
    generator = np.random.default_rng(seed)
    observed = jaccard(set(first.tolist()), set(second.tolist()))
    null = np.array([jaccard(set(generator.choice(count, len(first), replace=False).tolist()),
                             set(generator.choice(count, len(second), replace=False).tolist()))
                     for _ in range(OVERLAP_DRAWS)])
    return {"jaccard": round(observed, 4), "shuffled_mean": round(float(null.mean()), 4),
            "p_value": float((1 + (null >= observed).sum()) / (1 + OVERLAP_DRAWS)),
            "sizes": [len(first), len(second)]}


# -- the stage ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OwnPass:
    """A model's answers on the test images and the features its slices are found over."""
    base: pd.DataFrame           # model, test_index, true_label, predicted_label, confidence, margin, correct
    features: np.ndarray         # the input of its last linear layer (its logits when it has none)
    probabilities: np.ndarray
    from_logits: bool


def features_pass(model, checkpoint: dict, images: np.ndarray,
                  device: torch.device) -> tuple[torch.Tensor, np.ndarray, bool]:
    """One fp32 pass: the logits, the input of the last linear layer (the logits where it cannot be read), and
    whether the logits stand in."""
    logits, features = logits_and_features(model, torch.from_numpy(images).to(device),
                                           checkpoint_normalizer(checkpoint, device))
    return logits, (features if features is not None else logits).double().cpu().numpy(), features is None


def own_pass(tag: str, model, checkpoint: dict, images: np.ndarray, data, device: torch.device) -> OwnPass:
    """The answers and the input of the last linear layer in one fp32 pass: the slices need both."""
    logits, features, from_logits = features_pass(model, checkpoint, images, device)
    probs = logits.softmax(1).double().cpu().numpy()
    predicted, labels, names = probs.argmax(1), data.test_labels, data.class_names
    base = pd.DataFrame({"model": tag, "test_index": np.arange(len(labels)), "true_label": [names[c] for c in labels],
                         "predicted_label": [names[c] for c in predicted], "confidence": probs.max(1).round(6),
                         "margin": top_two_margin(probs).round(6), "correct": predicted == labels})
    return OwnPass(base, features, probs, from_logits)


def label_judges(passes: dict[str, OwnPass], labels: np.ndarray,
                 class_names: list[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """How each model's wrong answers fare before each judge: cleanlab's confident learning on the probabilities of
    the model itself (a judge of its own confident mistakes) and of every other model given (independent of it,
    though trained on the same images), their agreement on those answers (Cohen's kappa), and the flags among the
    54 confirmed label errors where the test set is the official one. Returns the table and each judge's flags."""
    from sklearn.metrics import cohen_kappa_score

    flags = {judge: flag_label_issues(own.probabilities, labels, class_names).label_issue.to_numpy()
             for judge, own in passes.items()}
    confirmed = on_published_list(labels)
    rows = []
    for tag, own in passes.items():
        wrong = own.probabilities.argmax(1) != labels
        for judge, flagged in flags.items():
            both = int((flagged & flags[tag] & wrong).sum())
            rows.append({"model": tag, "judge": judge, "independent": judge != tag, "wrong_answers": int(wrong.sum()),
                         "flagged": int((flagged & wrong).sum()),
                         "flagged_share": round(float((flagged & wrong).sum() / max(wrong.sum(), 1)), 4),
                         "flagged_by_both": both if judge != tag else "",
                         "kappa_with_self": round(float(cohen_kappa_score(flags[tag][wrong], flagged[wrong])), 4)
                         if judge != tag and wrong.any() else "",
                         "confirmed_errors_flagged": int((flagged & confirmed).sum()) if confirmed is not None else ""})
    return pd.DataFrame(rows), flags


def twin_accuracy(table: pd.DataFrame) -> list[dict]:
    """Per model: accuracy on the test images with a duplicate in training against the rest (Wilson intervals,
    Fisher's exact test)."""
    rows = []
    for tag, group in table.groupby("model", sort=False):
        twin, rest = group[group.training_twin], group[~group.training_twin]
        row = {"model": tag}
        for name, part in [("twin", twin), ("rest", rest)]:
            low, high = wilson_interval(int(part.correct.sum()), len(part)) if len(part) else (np.nan, np.nan)
            row |= {f"{name}_images": len(part), f"{name}_accuracy": round(float(part.correct.mean()), 4)
                    if len(part) else np.nan, f"{name}_low95": round(low, 4), f"{name}_high95": round(high, 4)}
        row["p_value"] = (fisher_exact_p(int(twin.correct.sum()), len(twin), int(rest.correct.sum()), len(rest))
                          if len(twin) and len(rest) else np.nan)
        rows.append(row)
    return rows


def fault_gallery(faults: DataFaults, data, count: int = 8) -> list[tuple[str, np.ndarray]]:
    """Rows of the duplicates figure: test images with a training twin over their twins, then the most unusual
    images."""
    def hwc(images: np.ndarray) -> np.ndarray:
        return images.transpose(0, 2, 3, 1)
    across = faults.pairs[(faults.pairs.split_a == "train") & (faults.pairs.split_b == "test")].head(count)
    rows = []
    if len(across):
        rows += [("test images with a duplicate in training (exact first; all pairs: duplicates.csv): test #"
                  + ", #".join(map(str, across.index_b)),
                  hwc(data.test_images[across.index_b.to_numpy(int)])),
                 ("... and their training twins: train #" + ", #".join(map(str, across.index_a)),
                  hwc(data.train_images[across.index_a.to_numpy(int)]))]
    unusual = faults.outliers.head(count)
    pictures = [data.train_images[i] if split == "train" else data.test_images[i]
                for split, i in zip(unusual.split, unusual["index"])]
    rows.append(("most unusual images (Datalab outlier score, lowest first): " + ", ".join(
        f"{split} #{i}" for split, i in zip(unusual.split, unusual["index"])), hwc(np.stack(pictures))))
    return rows


def profile(params: ProfileParams) -> None:
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    checkpoints = params.checkpoints
    models = {tag: load_classifier(path, paths.producer(tag), device) for tag, path in checkpoints.items()}
    cards = {tag: model_card(checkpoint, checkpoints[tag]) for tag, (_, checkpoint) in models.items()}
    frames, status = read_sources(cards)
    if not frames:
        raise UserError("no stage has left per-image outputs for these models (" + "; ".join(
            f"{key} {value}" for key, value in status.items()) + "); run the stages before stress_profile.py "
            "(run_pipeline.py --from-stage calibration.py)")
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    labels = data.test_labels
    passes = {tag: own_pass(tag, model, checkpoint, data.test_images, data, device)
              for tag, (model, checkpoint) in models.items()}
    # the data's faults: duplicates in the pixels, outliers among the first model's features
    judge, (model, checkpoint) = next(iter(models.items()))
    train_count = min(params.train_images or len(data.train_labels), len(data.train_labels))
    faults = find_data_faults(data.train_images[:train_count], data.test_images,
                              features_pass(model, checkpoint, data.train_images[:train_count], device)[1],
                              passes[judge].features)
    test_outliers = faults.outliers[faults.outliers.split == "test"].set_index("index").outlier_score
    judges, flags = label_judges(passes, labels, data.class_names)
    base = pd.concat([own.base for own in passes.values()], ignore_index=True).assign(
        training_twin=lambda frame: faults.twin_in_training[frame.test_index],
        outlier_score=lambda frame: test_outliers.reindex(frame.test_index).to_numpy(),
        **{f"label_issue_by_{judge}": (lambda frame, marks=marks: marks[frame.test_index])
           for judge, marks in flags.items()})
    table = join(base, frames)
    atomic.write_csv(out_dir / "per_image.csv", table.to_dict("records"), list(table.columns))
    signals = signal_columns(table)
    pairs, matrices = correlations(table, signals)
    atomic.write_csv(out_dir / "correlations.csv", pairs.to_dict("records"), list(pairs.columns))
    save(out_dir / "correlations.png", correlation_figure(
        matrices, signals, f"Spearman's rho between per-image stress signals (n up to {len(labels)} test images "
                           "per model; pairs over the images both signals cover, blank under "
                           f"{MIN_PAIRS})"))
    settings = SliceSettings(slices=params.slices, seed=params.seed)
    # a slice's summary adds the shares flagged by each label judge and with a training duplicate
    summarised = signals + [c for c in table.columns if c.startswith("label_issue_by_")] + ["training_twin"]
    slice_rows, worst, gallery = [], {}, []
    for tag, own in passes.items():
        rows, found = model_slices(tag, table[table.model == tag].reset_index(drop=True), own.features,
                                   own.probabilities, labels, summarised, settings)
        slice_rows += rows
        worst[tag] = worst_per_half(found)
        for row, item in sorted(zip(rows, found), key=lambda pair: -pair[0]["error_rate"])[:SLICES_SHOWN]:
            caption = f"{tag}, half {item.found_on} slice {item.slice}: {row['description']}"
            gallery.append((caption, data.test_images[item.members[:8]].transpose(0, 2, 3, 1)))
        if own.from_logits:
            print(f"{tag}: no linear head whose input could be read; slices found over its logits instead")
    slices = pd.DataFrame(slice_rows)
    atomic.write_csv(out_dir / "slices.csv", slices.to_dict("records"), list(slices.columns))
    save(out_dir / "slices.png", slice_gallery_figure(gallery))
    overlap = (slice_overlap(worst["baseline"], worst["improved"], len(labels), params.seed)
               if {"baseline", "improved"} <= set(worst) else None)
    twins = pd.DataFrame(twin_accuracy(table))
    flagged = faults.outliers[faults.outliers.is_outlier]
    for name, frame in [("duplicates.csv", faults.pairs), ("outliers.csv", flagged), ("twin_accuracy.csv", twins),
                        ("label_judges.csv", judges)]:
        atomic.write_csv(out_dir / name, frame.to_dict("records"), list(frame.columns))
    save(out_dir / "duplicates.png", slice_gallery_figure(fault_gallery(faults, data)))
    faults_summary = {**faults.settings, "judge": judge, "pairs": faults.pairs.groupby(
        ["kind", "split_a", "split_b"]).size().rename("pairs").reset_index().to_dict("records"),
        "test_images_with_training_twin": int(faults.twin_in_training.sum()), "outliers": len(flagged)}
    for key, value in status.items():
        print(f"  {key}: {value}")
    for row in slices.sort_values("error_rate", ascending=False).groupby("model", sort=False).head(2).itertuples():
        print(f"{row.model} slice (half {row.found_on_half} #{row.slice}): {row.description}")
    if overlap:
        print(f"worst slices of the two models: Jaccard {overlap['jaccard']:.2f} against {overlap['shuffled_mean']:.2f}"
              f" for random sets of the same sizes (p {overlap['p_value']:.3g})")
    twin_count = faults_summary["test_images_with_training_twin"]
    print(f"{twin_count} of {len(labels)} test images have a duplicate among the {train_count} training images "
          f"read (in their pixels); {len(flagged)} outliers ({judge}'s features)" + "".join(
              f"; {row.model}: accuracy {row.twin_accuracy:.3f} on them, {row.rest_accuracy:.3f} on the rest"
              for row in twins.itertuples() if twin_count))
    for row in judges[judges.independent].itertuples():
        mine = judges[(judges.model == row.model) & ~judges.independent].iloc[0]
        print(f"label issues among the {row.model} model's {row.wrong_answers} wrong answers: {mine.flagged} by its "
              f"own probabilities, {row.flagged} by the {row.judge} model's, {row.flagged_by_both} by both (kappa "
              f"{row.kappa_with_self})")
    print(f"-> {out_dir}")
    write_record("stress_profile", {"profile": out_dir}, checkpoints, headline=headline_rows(slices, len(labels)),
                 sections=[section(slices, status, overlap, settings, out_dir),
                           faults_section(faults_summary, twins, judges, out_dir)],
                 data=data_summary(data), device=describe_device(device), precision=REPORTED_PRECISION,
                 seed=params.seed, sources=status, slice_settings=vars(settings), overlap=overlap,
                 data_faults=faults_summary, models=cards)


def headline_rows(slices: pd.DataFrame, count: int) -> list[Headline]:
    worst = slices.sort_values("error_rate", ascending=False).groupby("model", sort=False).head(1)
    return [Headline("error rate on its worst failure slice, held out (Wilson 95%)",
                     {row.model: Estimate(row.error_rate, row.error_low95, row.error_high95) for row in
                      worst.itertuples()}, f"{count} test images in halves",
                     "; ".join(f"{row.model}: {row.description}" for row in worst.itertuples()),
                     axis="worst slice error", better=LOWER)]


def section(slices: pd.DataFrame, status: dict, overlap: dict | None, settings: SliceSettings,
            out_dir: Path) -> Section:
    shown = slices.sort_values(["model", "p_bonferroni", "error_rate"], ascending=[True, True, False])
    table = Table(["model", "half", "slice", "held out", "error (Wilson 95%)", "rest", "Bonferroni p", "description"],
                  [[row.model, row.found_on_half, row.slice, row.held_out_size,
                    Estimate(row.error_rate, row.error_low95, row.error_high95), f"{row.rest_error_rate:.1%}",
                    f"{row.p_bonferroni:.2g}", row.description] for row in shown.itertuples()],
                  note=f"Slices found on one half of the test images ({settings.slices} mixture components over the "
                       "model's features and errors) and measured on the other half, which is assigned by its "
                       "features alone; the halves swapped; Fisher's exact test against the rest of the half.")
    notes = ["Per-image signals joined: " + "; ".join(f"{key} ({value})" for key, value in status.items()) + "."]
    if overlap:
        notes.append(f"Do the two models fail in the same slices? Their worst slices (one per half) overlap with "
                     f"Jaccard {overlap['jaccard']:.2f} against {overlap['shuffled_mean']:.2f} for random sets of "
                     f"the same sizes ({OVERLAP_DRAWS} draws, p {overlap['p_value']:.3g}); one seed each.")
    return Section("Failures in groups: per-image profile and failure slices",
                   lead=Picture(out_dir / "slices.png", "the worst slices' held-out images"), tables=[table],
                   notes=notes, pictures=[Picture(out_dir / "correlations.png", "correlations between signals")],
                   links=[out_dir / name for name in ["per_image.csv", "slices.csv", "correlations.csv"]])


def faults_section(summary: dict, twins: pd.DataFrame, judges: pd.DataFrame, out_dir: Path) -> Section:
    def estimate(row: dict, part: str) -> Estimate:
        return Estimate(row[f"{part}_accuracy"], row[f"{part}_low95"], row[f"{part}_high95"])
    count = summary["images"]
    table = Table(["model", "test images with a training duplicate", "their accuracy (Wilson 95%)", "the rest",
                   "Fisher p"],
                  [[row["model"], row["twin_images"], estimate(row, "twin") if row["twin_images"] else "none",
                    estimate(row, "rest"), f"{row['p_value']:.2g}"] for row in twins.to_dict("records")],
                  note=f"Near duplicates: cleanlab's Datalab over the pixels of {count['train']} training and "
                       f"{count['test']} test images (2x2-pooled, standardised per image; {summary['metric']} "
                       f"distance, k {summary['k']}, closer than {summary['threshold']} of the median "
                       "nearest-neighbour distance); exact duplicates by pixel hash; outliers by Datalab over the "
                       f"{summary['judge']} model's features. A test image with a twin in training flatters test "
                       "accuracy (ciFAIR: about 3% of CIFAR-10's test set).")
    pairs = "; ".join(f"{row['kind']} {row['split_a']}-{row['split_b']}: {row['pairs']}" for row in summary["pairs"])
    judged = Table(["model", "judge", "its wrong answers", "flagged as label issues", "flagged by both judges",
                    "Cohen's kappa with the model's own flags", "confirmed errors flagged"],
                   [[row["model"], row["judge"] + ("" if row["independent"] else " (itself)"), row["wrong_answers"],
                     f"{row['flagged']} ({row['flagged_share']:.0%})", row["flagged_by_both"],
                     row["kappa_with_self"], row["confirmed_errors_flagged"] if row["confirmed_errors_flagged"] != ""
                     else "official test set only"] for row in judges.to_dict("records")],
                   note="Label issues among each model's wrong answers by cleanlab's confident learning on the test "
                        "probabilities of each judge: the model itself (which flags its own confident mistakes) and "
                        "the other model (trained on the same images, so not a wholly independent judge).")
    return Section("The data's own faults: duplicates, outliers and suspect labels",
                   lead=Picture(out_dir / "duplicates.png", "duplicates across the splits and the most unusual images"),
                   tables=[table, judged], notes=[f"Pairs found: {pairs or 'none'}. {summary['outliers']} images "
                                                  "flagged as outliers (Datalab)."],
                   links=[out_dir / name for name in ["duplicates.csv", "outliers.csv", "twin_accuracy.csv",
                                                      "label_judges.csv"]])


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = ProfileParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the test-set halves, the slice mixture and the overlap's random sets")
    add_checkpoint_args(parser)
    add_flags(parser, defaults, SMOKE)
    parser.add_argument("--smoke", action="store_true", help="the duplicate check on the first 1,000 training images")
    args = parser.parse_args(argv)
    run_main(lambda: profile(params_from(args, defaults, SMOKE)), args.debug)
