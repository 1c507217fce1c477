"""Study C, stage 8 (robustness.py): both study A models on clean and corrupted test images (CIFAR-10-C-style
sets computed on the device, or the published CIFAR-10-C files), optionally study B's frozen backbones with
their linear heads on the same images, and occlusion sensitivity of every saved failure case beside its
Grad-CAM."""
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .. import probe as study_b
from ..core import atomic, paths
from ..core.cases import read_cases
from ..core.checkpoint import load_classifier, model_card
from ..core.cli import (BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser,
                         non_negative_int, params_from, positive_int, run_main)
from ..core.device import describe_device, resolve_device, to_channels_last
from ..core.errors import UserError
from ..core.findings import HIGHER, Estimate, Headline, Picture, Section, Table, frame_table
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..data.cifar10c import corrupted_images, read_cifar10c
from ..data.corruptions import NAMES, SEVERITIES
from ..metrics import (expected_calibration_error, mean_interval, negative_log_likelihood, rank_correlation,
                       wilson_interval)
from ..nn.backbones import BACKBONES, data_fingerprint, extract_features, load_backbone
from ..nn.inference import REPORTED_PRECISION, checkpoint_normalizer, inference_model, run_batched
from ..nn.occlusion import occlusion_maps
from ..plots import corruption_examples_figure, occlusion_figure, save, severity_figure


@dataclass(frozen=True)
class RobustnessParams(BothModels):
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        f"case_XX folders of {paths.CASES_PRODUCER}, with both models' Grad-CAM maps"))
    out_dir: Path = field(default=paths.ROBUSTNESS_DIR, metadata=flag("where tables and figures go"))
    cifar10c_dir: Path | None = field(default=None, metadata=flag(
        "evaluate on these CIFAR-10-C files (the published ones, preferred by their authors, or "
        "make_cifar10c.py's) instead of computing the corruptions here", Path))
    corruptions: tuple = field(default=tuple(NAMES), metadata=flag(
        "corruptions to evaluate", name="--corruption", choices=NAMES, metavar="NAME", default_text="all 15"))
    severities: tuple = field(default=tuple(SEVERITIES), metadata=flag("severities", int, name="--severity",
                                                                       choices=SEVERITIES))
    max_images: int = field(default=0, metadata=flag("the first N test images (0: all)", non_negative_int))
    patch: int = field(default=8, metadata=flag("occlusion patch side, pixels", positive_int))
    stride: int = field(default=2, metadata=flag("occlusion patch stride, pixels", positive_int))
    backbones: tuple = field(default=(), metadata=flag(
        "also evaluate these frozen study B backbones with their linear heads on the same images, resized to 224 "
        f"as study B does ({', '.join(BACKBONES)}; each set costs one feature pass at 224x224)", name="--backbone",
        choices=list(BACKBONES), metavar="MODEL", default_text="none"))
    backbone_weights: str = field(default="default", metadata=flag(
        "weights of the backbones, as study B's --weights ('default', 'none' or a FILE)"))
    backbone_severities: tuple = field(default=(1, 3, 5), metadata=flag(
        "severities for the backbones (one 224x224 feature pass per set: a backbone gets fewer sets)", int,
        name="--backbone-severity", choices=SEVERITIES))
    probing_dir: Path = field(default=paths.PROBING_DIR, metadata=flag(
        "study B's feature caches (<dir>/<model>/); the backbones' corrupted-set features are cached in "
        "<dir>/<model>/corrupted/"))
    backbone_images: tuple = (0, 0)      # training and test images of study B's feature cache (0: all); --smoke


PROFILE_SEVERITY = 3  # per_image.csv counts the corruptions that flip each image at this severity (stress_profile.py)

# --smoke: about 40 s on a 2-core fp32 CPU; backbones read study B's smoke features
SMOKE = RobustnessParams(max_images=50, severities=(1, 3, 5), stride=8,
                         backbone_images=(study_b.SMOKE.train_images, study_b.SMOKE.test_images))


def evaluation_sets(images: torch.Tensor, labels: np.ndarray, names: list[str], severities: list[int], seed: int,
                    cifar10c_dir: Path | None):
    """(corruption, severity, uint8 images on the device, labels): clean first (severity 0), then every set."""
    yield "clean", 0, images, labels
    for name in names:
        for severity in severities:
            if cifar10c_dir is None:
                yield name, severity, corrupted_images(images, name, severity, seed), labels
                continue
            published, published_labels = read_cifar10c(cifar10c_dir, name, severity)
            if len(published_labels) < len(labels) or not np.array_equal(published_labels[:len(labels)], labels):
                raise UserError(f"the CIFAR-10-C files in {cifar10c_dir} do not follow the test set of --data-dir "
                                "(their labels differ); pass the full official CIFAR-10 as --data-dir")
            yield name, severity, torch.from_numpy(published[:len(labels)]).to(images.device), labels


class BackboneProbe:
    """A study B backbone with its linear head (fitted on clean training features, study B's cache), giving
    probabilities on any uint8 test images; features of each corrupted set are cached beside study B's."""

    def __init__(self, params: study_b.ProbeParams):
        self.probe = study_b.load_probe(params)
        self.head = study_b.heads(self.probe)["head"]
        self.precision = self.probe.settings["precision"]
        # the key of a set's features: the backbone's own key, with the set's pixels in place of the data
        self.settings = {key: value for key, value in self.probe.settings.items()
                         if key not in ("train_images", "test_images", "data")}
        self.cache_dir = atomic.ensure_writable_dir(self.probe.out_dir / "corrupted")

    @functools.cached_property
    def backbone(self) -> torch.nn.Module:  # built only when some set is not cached yet
        backbone = load_backbone(self.probe.model_name, self.probe.weights, self.probe.seed)
        return to_channels_last(backbone, self.probe.device)

    def probabilities(self, images: torch.Tensor, name: str, severity: int) -> np.ndarray:
        if severity == 0 and len(images) <= len(self.probe.test_features):  # the clean test prefix
            features = self.probe.test_features[:len(images)]
        else:
            settings = {**self.settings, "data": data_fingerprint(images.cpu().numpy())}
            cache = self.cache_dir / f"{name}_{severity}.pt"
            features = study_b.cached(cache, settings, lambda: {"features": extract_features(
                self.backbone, self.probe.model_name, images.to(self.probe.device), self.precision,
                study_b.feature_batch_size(self.probe.device), f"{self.probe.model_name} {name} {severity}")}
            )["features"]
        with torch.no_grad():
            return self.head(features.float()).softmax(1).double().numpy()


def set_metrics(probs: np.ndarray, labels: np.ndarray, clean_pred: np.ndarray, cases: np.ndarray) -> dict:
    predicted = probs.argmax(1)
    correct = predicted == labels
    low, high = wilson_interval(correct.sum(), len(labels))
    return {"images": len(labels), "accuracy": round(float(correct.mean()), 6),
            "accuracy_low95": round(low, 6), "accuracy_high95": round(high, 6),
            "nll": round(negative_log_likelihood(probs, labels), 6),
            "ece": round(expected_calibration_error(probs.max(1), correct), 6),
            "mean_confidence": round(float(probs.max(1).mean()), 6),
            "correct_flipped": int(((clean_pred == labels) & ~correct).sum()),
            "cases_flipped": int((predicted[cases] != clean_pred[cases]).sum())}


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean accuracy, mean corrupted accuracy (over every set evaluated), relative drop, and the
    mean accuracy at each severity."""
    rows = []
    for model, group in table.groupby("model", sort=False):
        clean = float(group[group.severity == 0].accuracy.iloc[0])
        corrupted = group[group.severity > 0]
        mean = float(corrupted.accuracy.mean())
        rows.append({"model": model, "clean_accuracy": clean, "mean_corruption_accuracy": round(mean, 6),
                     "relative_drop": round((clean - mean) / clean, 6) if clean else float("nan"),
                     "sets": len(corrupted),
                     "images_per_set": int(group.images.iloc[0]),
                     **{f"severity_{s}_accuracy": round(float(g.accuracy.mean()), 6)
                        for s, g in corrupted.groupby("severity")}})
    return pd.DataFrame(rows)


def occlusion_report(cases_dir: Path, models: dict, patch: int, stride: int) -> pd.DataFrame:
    """Occlusion map of each model on each saved case (occlusion_<tag>.png in the case folder) and its Spearman
    rank correlation with the same model's Grad-CAM of the same class (its own prediction)."""
    cases = read_cases(cases_dir)
    rows = []
    for tag, (model, checkpoint) in models.items():
        device = next(model.parameters()).device
        maps_files = [case["path"] / f"gradcam_{tag}.npz" for case in cases]
        missing = [f for f in maps_files if not f.is_file()]
        if missing:
            raise UserError(f"{missing[0]} not found: run {paths.EXPLAINERS[tag]} first")
        images = np.stack([np.asarray(Image.open(case["path"] / "image.png").convert("RGB")) for case in cases])
        on_device = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        cams, classes = [], []
        for maps_file in maps_files:
            with np.load(maps_file) as stored:
                role = list(stored["roles"]).index("predicted")
                cams.append(stored["maps"][role])
                classes.append(list(stored["class_names"]).index(str(stored["classes"][role])))
        occlusion = occlusion_maps(model, checkpoint, on_device, np.array(classes), patch, stride)
        names = checkpoint["class_names"]
        for case, image, occ, cam, explained in zip(cases, images, occlusion, cams, classes):
            # a flat map (nothing changes the answer, or a CAM of zeros) has no rank order: no correlation
            rho, p_value = rank_correlation(occ, cam)
            rows.append({"case": case["case"], "test_index": int(case["test_index"]), "model": tag,
                         "explained_class": names[explained], "spearman": round(float(rho), 6),
                         "p_value": float(p_value), "patch": patch, "stride": stride})
            title = (f"{case['case']} (test #{case['test_index']}), {tag} model explaining {names[explained]}: "
                     f"occlusion vs Grad-CAM, Spearman {rho:.2f}")
            save(case["path"] / f"occlusion_{tag}.png", occlusion_figure(image, occ, cam, title, patch, stride))
    return pd.DataFrame(rows)


def findings(summary: pd.DataFrame, occlusion: pd.DataFrame, corrupted_hits: dict[str, np.ndarray], source: str,
             count: int, out_dir: Path, seed: int) -> tuple[list[Headline], Section]:
    """The headline row (each model's mean accuracy over the corrupted sets, its interval from resampling the
    test images) and the section: accuracy against severity, the per-model summary, occlusion against Grad-CAM."""
    sets = {row["model"]: int(row["sets"]) for row in summary.to_dict("records")}
    mean_accuracy = {model: Estimate(*mean_interval(hits / sets[model], seed=seed))
                     for model, hits in corrupted_hits.items()}
    sizes = " / ".join(sorted({str(value) for value in sets.values()}))
    headline = [Headline("mean accuracy over the corrupted sets (bootstrap 95% over images)", mean_accuracy,
                         f"{count} images x {sizes} sets", source, axis="corrupted accuracy", better=HIGHER)]
    severities = [column for column in summary.columns if column.startswith("severity_")]
    table = Table(["model", "clean", "mean corrupted", "relative drop", *(c.split("_")[1] for c in severities)],
                  [[row["model"], Estimate(row["clean_accuracy"]),
                    mean_accuracy.get(row["model"], Estimate(row["mean_corruption_accuracy"])),
                    Estimate(row["relative_drop"]), *(Estimate(row[c]) for c in severities)]
                   for row in summary.to_dict("records")],
                  note=f"{source}; accuracy on {count} test images per set, the last columns by severity.")
    tables = [table]
    if len(occlusion):
        agreement = occlusion.groupby("model", sort=False).spearman.agg(["count", "median", "mean"]).round(3)
        tables.append(frame_table(agreement.reset_index(), "Occlusion sensitivity against Grad-CAM: Spearman rank "
                                                           "correlation over the saved cases (open a case above "
                                                           "for its maps)."))
    section = Section("Corruptions and occlusion", lead=Picture(out_dir / "accuracy_vs_severity.png",
                                                               "accuracy against severity"),
                      tables=tables, pictures=[Picture(out_dir / "corruption_examples.png", "corruption examples")],
                      links=[out_dir / name for name in ["robustness_summary.csv", "corruption_accuracy.csv",
                                                         "occlusion_gradcam.csv", "per_image.csv"]])
    return headline, section


def robustness(params: RobustnessParams) -> None:
    names, severities, seed = list(params.corruptions), list(params.severities), params.seed
    backbone_severities = list(params.backbone_severities)
    device = resolve_device(params.device)
    cases = read_cases(params.cases_dir)
    data = load_cifar10(params.data_dir)
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    count = min(params.max_images or len(data.test_labels), len(data.test_labels))
    images = torch.from_numpy(data.test_images[:count]).to(device)
    labels = data.test_labels[:count]
    case_index = np.array([int(case["test_index"]) for case in cases])
    case_index = case_index[case_index < count]
    checkpoints = params.checkpoints
    models = {tag: load_classifier(path, paths.producer(tag), device) for tag, path in checkpoints.items()}
    fused = {tag: inference_model(model) for tag, (model, _) in models.items()}
    train_images, test_images = params.backbone_images
    probes = {name: BackboneProbe(study_b.ProbeParams(
        data_dir=params.data_dir, device=params.device, seed=seed, model=name, weights=params.backbone_weights,
        out_dir=params.probing_dir, train_images=train_images, test_images=test_images))
        for name in params.backbones}
    rows, clean_pred, examples = [], {}, {}
    corrupted_hits: dict[str, np.ndarray] = {}  # per study A model and test image: corrupted sets it got right
    flips: dict[str, np.ndarray] = {}  # per study A model and test image: corruptions at the profile's severity
    #                                    that change its clean answer
    all_severities = sorted(set(severities) | (set(backbone_severities) if probes else set()))
    for name, severity, set_images, set_labels in evaluation_sets(images, labels, names, all_severities, seed,
                                                                   params.cifar10c_dir):
        if severity in severities:
            examples[name, severity] = set_images[0].permute(1, 2, 0).cpu().numpy()
        set_probs = {}
        if severity == 0 or severity in severities:
            for tag, (_, checkpoint) in models.items():
                set_probs[tag] = run_batched(fused[tag], set_images, checkpoint_normalizer(checkpoint, device),
                                             REPORTED_PRECISION).softmax(1).double().cpu().numpy()
        if severity == 0 or severity in backbone_severities:
            for backbone, probe in probes.items():
                set_probs[backbone] = probe.probabilities(set_images, name, severity)
        for model, probs in set_probs.items():
            clean_pred.setdefault(model, probs.argmax(1))
            if severity and model in models:
                corrupted_hits[model] = corrupted_hits.get(model, 0) + (probs.argmax(1) == set_labels)
            if severity == PROFILE_SEVERITY and model in models:
                flips[model] = flips.get(model, 0) + (probs.argmax(1) != clean_pred[model])
            rows.append({"model": model, "corruption": name, "severity": severity,
                         **set_metrics(probs, set_labels, clean_pred[model], case_index)})
        if severity:
            last = {row["model"]: row["accuracy"] for row in rows[-len(set_probs):]}
            print(f"{name} {severity}: " + ", ".join(f"{tag} {acc:.3f}" for tag, acc in last.items()), flush=True)
    table = pd.DataFrame(rows)
    source = "CIFAR-10-C (published files)" if params.cifar10c_dir else f"CIFAR-10-C-style (computed here, seed {seed})"
    atomic.write_csv(out_dir / "corruption_accuracy.csv", table.to_dict("records"), list(table.columns))
    per_image = pd.concat([pd.DataFrame({
        "model": tag, "test_index": np.arange(count), "corrupted_sets_right": corrupted_hits[tag],
        "corrupted_sets": len(names) * len(severities),
        f"corruptions_flipping_severity_{PROFILE_SEVERITY}": flips.get(tag, np.full(count, np.nan))})
        for tag in models if tag in corrupted_hits], ignore_index=True)
    atomic.write_csv(out_dir / "per_image.csv", per_image.to_dict("records"), list(per_image.columns))
    summary = summarise(table)
    summary.insert(1, "source", source)
    atomic.write_csv(out_dir / "robustness_summary.csv", summary.to_dict("records"), list(summary.columns))
    save(out_dir / "accuracy_vs_severity.png",
         severity_figure(table, names, f"{source}, n={count} per set; bands: Wilson 95%"))
    save(out_dir / "corruption_examples.png", corruption_examples_figure(
        data.test_images[0].transpose(1, 2, 0), examples, names, severities, f"test image 0, {source}"))
    occlusion = occlusion_report(params.cases_dir, models, params.patch, params.stride)
    atomic.write_csv(out_dir / "occlusion_gradcam.csv", occlusion.to_dict("records"), list(occlusion.columns))
    if probes:
        print("backbones and study A models were evaluated on different sets: compare them per severity "
              "(robustness_summary.csv, severity_<s>_accuracy)")
    for row in summary.itertuples():
        print(f"{row.model}: clean {row.clean_accuracy:.4f}, mean over {row.sets} corrupted sets "
              f"{row.mean_corruption_accuracy:.4f} (relative drop {row.relative_drop:.1%}), n={count} per set")
    for tag, group in occlusion.groupby("model", sort=False):
        print(f"{tag}: occlusion vs Grad-CAM Spearman median {group.spearman.median():.2f} over {len(group)} cases")
    print(f"-> {out_dir}")
    headline, section = findings(summary, occlusion, corrupted_hits, source, count, out_dir, params.seed)
    write_record("robustness", {"robustness": out_dir, "cases": params.cases_dir}, checkpoints, headline=headline,
                 sections=[section], data=data_summary(data), device=describe_device(device),
                 precision=REPORTED_PRECISION, source=source,
                 images_per_set=count, backbones=list(params.backbones),
                 models={tag: model_card(checkpoint, checkpoints[tag]) for tag, (_, checkpoint) in models.items()})


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = RobustnessParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the corruptions computed here (one generator per corruption and "
                                      "severity)")
    add_checkpoint_args(parser)
    add_flags(parser, defaults, SMOKE)
    parser.add_argument("--smoke", action="store_true",
                        help="fewer images, severities and occlusion positions; backbones on study B's smoke features")
    args = parser.parse_args(argv)
    params = params_from(args, defaults, SMOKE)
    if params.patch > 32:
        parser.error("argument --patch: at most 32 (the image side)")
    run_main(lambda: robustness(params), args.debug)
