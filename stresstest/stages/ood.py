"""Study C, part 4 (ood.py): does each model notice images of no class it knows? Twelve out-of-distribution scores
(stresstest.ood_scores: from the logits, the features that feed the last linear layer, and ODIN's perturbed input)
on the CIFAR-10 test images against sets of other images: real images shipped with installed packages (digits,
textures, faces, photographs), noise, and any folder a user gives; the standard protocol (clean test images are
in-distribution) and the full-spectrum one (corrupted test images count as in-distribution too). AUROC, AUPR-In,
AUPR-Out and FPR@95 with stratified bootstrap intervals, paired comparisons of the models and of each score
against MSP, and a risk-coverage curve in which every accepted OOD image is an error."""
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..attacks.threat import PixelModel
from ..core import atomic, paths
from ..core.checkpoint import load_classifier, model_card, read_checkpoint
from ..core.cli import (BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser,
                         non_negative_int, params_from, positive_float, positive_int, run_main)
from ..core.device import describe_device, resolve_device
from ..core.errors import UserError
from ..core.findings import HIGHER, LOWER, NUMBER, Estimate, Headline, Picture, Section, Table
from ..core.record import read_record, write_record
from ..data.cifar10 import Cifar10, data_summary, load_cifar10, restricted
from ..data.cifar10c import corrupted_images
from ..data.corruptions import NAMES, SEVERITIES
from ..data.ood_downloads import NAMES as ONLINE, online_set
from ..data.ood_sets import BUILT_IN, FAR, NEAR, OodSet, built_in, from_folder, limited, sample
from ..metrics import (OOD_METRICS, aurc, bootstrap_interval, ood_bootstrap, ood_metrics, paired_difference,
                       risk_coverage)
from ..nn.backbones import data_fingerprint
from ..nn.inference import (REPORTED_PRECISION, checkpoint_normalizer, default_eval_batch_size, last_linear,
                            logits_and_features)
from ..ood_scores import (BY_NAME, CORRUPTED_SET, FEATURES, ID_SET, SCORES, Detectors, OodSettings, odin_scores,
                          settings_text)
from ..plots import (accepted_ood_figure, auroc_figure, ood_histogram_figure, ood_roc_figure, risk_coverage_figure,
                     save)

SCORE_NAMES = tuple(score.name for score in SCORES)
STANDARD, FULL_SPECTRUM = "standard", "full-spectrum"
MEANS = {NEAR: "near_mean", FAR: "far_mean"}  # the unweighted mean over the sets of a kind
OPEN_SET, HELD_OUT = "open_set", "held_out_classes"  # --open-set: the model's tag, its near-OOD set
HEADLINE_SCORES = ("msp", "knn")  # reported in the summary: the classic baseline and OpenOOD's best on CIFAR-10
CURVE_SCORES = ("msp", "energy", "mahalanobis", "knn", "vim")  # risk_coverage.png: a legible few


@dataclass(frozen=True)
class OodParams(BothModels, OodSettings):
    out_dir: Path = field(default=paths.OOD_DIR, metadata=flag("where tables, figures and the OOD images go"))
    sets: tuple = field(default=BUILT_IN, metadata=flag(
        "built-in OOD sets: real images from installed packages, and noise", choices=BUILT_IN, name="--set"))
    ood: tuple = field(default=(), metadata=flag(
        "NAME=PATH: a folder of images (class folders or flat, any size and mode) or an OpenOOD image list "
        "(a .txt of 'relative/path label' lines), scored as one more OOD set; several: --ood a=DIR b=DIR",
        metavar="NAME=PATH"))
    open_set: Path | None = field(default=None, metadata=flag(
        "also score a model trained on some classes (train.py --classes): its classes' test images in-distribution, "
        "the held-out classes' as near-OOD (the open-set protocol), beside the same far sets", Path,
        metavar="CHECKPOINT"))
    online: tuple = field(default=(), metadata=flag(
        "sets of OpenOOD's CIFAR-10 benchmark, downloaded from their official sources (md5-checked) into "
        "<data-dir>/ood/ on first use: near cifar100 tin, far mnist svhn dtd places365 (the official splits whole, "
        "not OpenOOD's filtered lists)", choices=ONLINE, name="--online-set"))
    scores: tuple = field(default=SCORE_NAMES, metadata=flag("the OOD scores to compute", choices=SCORE_NAMES,
                                                             name="--score"))
    max_images: int = field(default=2000, metadata=flag(
        "most images per OOD set (a seeded sample of a larger one; 0: all)", non_negative_int))
    noise_images: int = field(default=1000, metadata=flag("images per noise set", positive_int))
    test_images: int = field(default=0, metadata=flag(
        "in-distribution test images (a seeded sample; 0: all)", non_negative_int))
    train_images: int = field(default=0, metadata=flag(
        "training images behind the feature scores' class statistics and KNN bank (a seeded sample; 0: all)",
        non_negative_int))
    corruption_severity: int = field(default=3, metadata=flag(
        "severity of the corrupted test images the full-spectrum protocol counts as in-distribution (each test "
        "image under one of the 15 corruptions in turn)", int, choices=SEVERITIES))
    resamples: int = field(default=1000, metadata=flag("bootstrap resamples behind every interval", positive_int))
    gallery: int = field(default=16, metadata=flag("OOD images each model accepts most confidently, shown",
                                                   positive_int))
    batch_size: int = field(default=0, metadata=flag("images per forward pass (0: 256 on a CPU, 1024 on a GPU)",
                                                     non_negative_int))
    knn_k: int = field(default=OodSettings.knn_k, metadata=flag("KNN's k (OpenOOD: 50)", positive_int))
    react_percentile: float = field(default=OodSettings.react_percentile, metadata=flag(
        "ReAct's clipping percentile of the training features, as a fraction (OpenOOD: 0.90)", positive_float))
    ash_percentile: float = field(default=OodSettings.ash_percentile, metadata=flag(
        "ASH's share of each image's features pruned (OpenOOD: 0.90)", positive_float))
    odin_temperature: float = field(default=OodSettings.odin_temperature, metadata=flag(
        "ODIN's temperature (OpenOOD: 1000)", positive_float))
    odin_noise: float = field(default=OodSettings.odin_noise, metadata=flag(
        "ODIN's input step in pixels 0..1 (OpenOOD: 0.0014)", positive_float))


# --smoke: seconds per model on a 2-core CPU; ODIN (a backward pass per image) left out
SMOKE = replace(OodParams(), max_images=50, noise_images=50, test_images=100, train_images=500, resamples=100,
                gallery=8, scores=tuple(name for name in SCORE_NAMES if name != "odin"))


def settings_of(params: OodParams) -> OodSettings:
    return OodSettings(**{name: getattr(params, name) for name in asdict(OodSettings())})


def parse_given(entries: tuple) -> list[tuple[str, Path]]:
    given = []
    for entry in entries:
        name, _, path = str(entry).partition("=")
        if not name or not path or not name.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"--ood {entry}: give NAME=PATH (a name of letters, digits, - and _, and a folder of "
                            "images or an OpenOOD image list)")
        if name in BUILT_IN or name in ONLINE or name in (ID_SET, CORRUPTED_SET, HELD_OUT, *MEANS.values()):
            raise UserError(f"--ood {entry}: {name} names one of this stage's own sets; choose another name")
        if name in dict(given):
            raise UserError(f"--ood {entry}: the name {name} is given twice; give each folder its own name")
        given.append((name, Path(path)))
    return given


def temperature_of(tag: str, card: dict) -> tuple[float, str]:
    """The temperature calibration.py fitted for this checkpoint (read from its record)."""
    record = read_record("calibration")
    fitted = (record or {}).get("temperatures", {}).get(tag)
    if record is None or fitted is None:
        raise UserError(f"no temperature fitted for the {tag} model: run calibration.py (with the same models) "
                        "before ood.py")
    if record["models"][tag]["checkpoint_sha256"] != card["checkpoint_sha256"]:
        raise UserError(f"calibration.py fitted its temperature on another {tag} checkpoint than "
                        f"{card['checkpoint']}; rerun calibration.py with the same models")
    return float(fitted["temperature"]), fitted["fitted_on"]


def train_features(model, checkpoint: dict, card: dict, images: np.ndarray, labels: np.ndarray, out_dir: Path,
                   device: torch.device, batch_size: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Penultimate features of the training images (eval mode, no augmentation), cached per checkpoint and images
    in out_dir/cache/ (a changed checkpoint or sample is computed afresh)."""
    key = f"{card['checkpoint_sha256'][:16]}-{data_fingerprint(images)[:16]}"
    cache = out_dir / "cache" / f"train_features-{key}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        return (saved["features"].to(device) if saved["features"] is not None else None), saved["labels"].to(device)
    _, features = logits_and_features(model, torch.from_numpy(images).to(device),
                                      checkpoint_normalizer(checkpoint, device), batch_size)
    label_tensor = torch.from_numpy(labels).long().to(device)
    atomic.ensure_writable_dir(cache.parent)
    atomic.save_torch(cache, {"features": None if features is None else features.cpu(), "labels": label_tensor.cpu()})
    return features, label_tensor


@dataclass
class ModelScores:
    """Every score of one model on every set ({set name: {score: (N,) array}}), its predictions on them, and
    which scores it could not have (and why)."""
    tag: str
    scores: dict
    predictions: dict
    confidence: dict
    skipped: dict
    temperature: float
    fitted_on: str
    vim_dim: int


def score_model(tag: str, path: Path, sets: dict, data, train_index: np.ndarray, params: OodParams,
                device: torch.device, out_dir: Path) -> tuple[ModelScores, dict]:
    """Every chosen score of the model on every set in `sets` ({name: uint8 images}); the open-set model (tag
    OPEN_SET) without MSP-T, as calibration.py fits no temperature for it."""
    open_set = tag == OPEN_SET
    model, checkpoint = load_classifier(path, "train.py --classes" if open_set else paths.producer(tag), device,
                                        open_set=open_set)
    card = model_card(checkpoint, path)
    wanted, skipped = set(params.scores), {}
    if open_set:
        temperature, fitted_on = 1.0, "not fitted"
        if "msp_temperature" in wanted:
            wanted.discard("msp_temperature")
            skipped["msp_temperature"] = ("calibration.py fits temperatures for the study's models, not for an "
                                          "open-set run")
    else:
        temperature, fitted_on = temperature_of(tag, card)
    normalizer = checkpoint_normalizer(checkpoint, device)
    batch_size = params.batch_size or default_eval_batch_size(device)
    features, labels = train_features(model, checkpoint, card, data.train_images[train_index],
                                      data.train_labels[train_index], out_dir, device, batch_size)
    feature_scores = [s.name for s in SCORES if s.uses == FEATURES and s.name in wanted]
    if features is None and feature_scores:
        skipped |= {name: "the model has no nn.Linear whose output is its logits, so its features cannot be read"
                    for name in feature_scores}
        print(f"{tag}: feature scores skipped: {skipped[feature_scores[0]]}")
    settings = settings_of(params)
    detectors = Detectors(last_linear(model) if features is not None else None,
                          features if feature_scores else None, labels,
                          temperature, settings)
    scored = ModelScores(tag, {}, {}, {}, skipped, temperature, fitted_on, detectors.vim_dim)
    # every set in one pass, then split
    uint8 = torch.from_numpy(np.concatenate(list(sets.values()))).to(device)
    logits, all_features = logits_and_features(model, uint8, normalizer, batch_size)
    values = detectors.logit_scores(logits)
    if all_features is not None and detectors.feature_detectors:
        values |= detectors.feature_scores(all_features)
    if "odin" in wanted:
        values["odin"] = odin_scores(PixelModel(model, normalizer), uint8.float() / 255, settings, batch_size)
    probs = logits.softmax(1)
    predictions, confidence = probs.argmax(1).cpu().numpy(), probs.max(1).values.double().cpu().numpy()
    ends = np.cumsum([len(images) for images in sets.values()])
    for name, end, start in zip(sets, ends, [0, *ends[:-1]]):
        scored.scores[name] = {score: values[score][start:end] for score in params.scores
                               if score in values and score in wanted}
        scored.predictions[name], scored.confidence[name] = predictions[start:end], confidence[start:end]
    return scored, card


def metric_rows(scored: ModelScores, sets: list[OodSet], params: OodParams) -> tuple[list[dict], dict]:
    """One row per protocol, OOD set and score (and the mean over the far sets), with bootstrap intervals; and the
    bootstrap draws ({(protocol, set, score): (resamples, 4)}) for the paired comparisons."""
    rows, draws = [], {}
    settings = settings_of(params)
    protocols = {STANDARD: [ID_SET], FULL_SPECTRUM: [ID_SET, CORRUPTED_SET]}
    for protocol, id_sets in protocols.items():
        for score in scored.scores[ID_SET]:
            id_scores = np.concatenate([scored.scores[name][score] for name in id_sets])
            by_set = {}
            for ood in sets:
                ood_scores = scored.scores[ood.name][score]
                # one seed per protocol: every score and model resamples the same images, so comparisons pair
                values = ood_bootstrap(id_scores, ood_scores, seed=params.seed, resamples=params.resamples)
                draws[protocol, ood.name, score] = values
                by_set[ood.name] = row(scored, protocol, ood.name, ood.kind, score, len(id_scores), len(ood_scores),
                                       ood_metrics(id_scores, ood_scores), values, settings)
                rows.append(by_set[ood.name])
            for kind, mean_name in MEANS.items():
                members = [ood for ood in sets if ood.kind == kind]
                if members:
                    mean = np.mean([draws[protocol, ood.name, score] for ood in members], axis=0)
                    estimate = {name: float(np.mean([by_set[ood.name][name] for ood in members]))
                                for name in OOD_METRICS}
                    draws[protocol, mean_name, score] = mean
                    rows.append(row(scored, protocol, mean_name, kind, score, len(id_scores),
                                    sum(len(ood.images) for ood in members), estimate, mean, settings))
    return rows, draws


def row(scored: ModelScores, protocol: str, set_name: str, kind: str, score: str, n_id: int, n_ood: int,
        estimate: dict, draws: np.ndarray, settings: OodSettings) -> dict:
    result = {"model": scored.tag, "protocol": protocol, "set": set_name, "kind": kind, "score": score,
              "n_id": n_id, "n_ood": n_ood}
    for column, name in enumerate(OOD_METRICS):
        low, high = np.percentile(draws[:, column], [2.5, 97.5])
        result |= {name: round(estimate[name], 6), f"{name}_low": round(float(low), 6),
                   f"{name}_high": round(float(high), 6)}
    return result | {"settings": settings_text(score, settings, scored.temperature, scored.vim_dim)}


def comparison_rows(models: dict, draws: dict, metrics: pd.DataFrame) -> list[dict]:
    """Paired AUROC differences on the same resampled images: each score against MSP within a model, and the
    first model against the second for each score (label smoothing's effect, for study A's two)."""
    auroc = OOD_METRICS.index("auroc")
    estimates = metrics.set_index(["model", "protocol", "set", "score"]).auroc
    rows = []
    keys = sorted({key[1:] for key in draws}, key=lambda key: (key[0] != STANDARD, key[1] not in MEANS.values()))
    for protocol, set_name, score in keys:
        pairs = []
        if score != "msp":
            pairs += [(tag, score, tag, "msp") for tag in models if (tag, protocol, set_name, "msp") in draws]
        if len(models) == 2:
            first, second = models
            pairs.append((first, score, second, score))
        for tag_a, score_a, tag_b, score_b in pairs:
            a, b = draws[tag_a, protocol, set_name, score_a], draws[tag_b, protocol, set_name, score_b]
            low, high, p = paired_difference(a[:, auroc], b[:, auroc])
            value_a = estimates[tag_a, protocol, set_name, score_a]
            value_b = estimates[tag_b, protocol, set_name, score_b]
            rows.append({"protocol": protocol, "set": set_name, "first": f"{tag_a} {score_a}",
                         "second": f"{tag_b} {score_b}", "auroc_first": value_a, "auroc_second": value_b,
                         "difference": round(value_a - value_b, 6), "difference_low": round(low, 6),
                         "difference_high": round(high, 6), "p_bootstrap": round(p, 4)})
    return rows


def selective_rows(scored: ModelScores, labels: np.ndarray, sets: list[OodSet],
                   params: OodParams) -> tuple[list[dict], dict]:
    """AURC over the test images and every OOD set pooled, where an accepted OOD image is always an error; and the
    risk-coverage curves of CURVE_SCORES ({score: (coverage, risk, aurc, (low, high))})."""
    rows, curves = [], {}
    right = scored.predictions[ID_SET] == labels
    correct = np.concatenate([right] + [np.zeros(len(s.images), bool) for s in sets])
    for score in scored.scores[ID_SET]:
        values = np.concatenate([scored.scores[ID_SET][score]] + [scored.scores[s.name][score] for s in sets])
        area = aurc(values, correct)
        low, high = bootstrap_interval(aurc, values, correct, seed=params.seed, resamples=params.resamples)
        rows.append({"model": scored.tag, "score": score, "n_id": len(right), "n_ood": len(correct) - len(right),
                     "aurc": round(area, 6), "aurc_low": round(low, 6), "aurc_high": round(high, 6)})
        if score in CURVE_SCORES:
            curves[BY_NAME[score].display] = (*risk_coverage(values, correct), area, (low, high))
    return rows, curves


def per_image_frame(scored: ModelScores, test_index: np.ndarray, sets: list[OodSet]) -> pd.DataFrame:
    frames = []
    for name in [ID_SET, CORRUPTED_SET, *(s.name for s in sets)]:
        frame = pd.DataFrame({"model": scored.tag, "set": name,
                              "index": test_index if name in (ID_SET, CORRUPTED_SET) else
                              np.arange(len(scored.predictions[name])),
                              "prediction": scored.predictions[name],
                              "confidence": scored.confidence[name].round(6)})
        for score, values in scored.scores[name].items():
            frame[score] = values.round(6)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def save_sets(out_dir: Path, sets: list[OodSet]) -> None:
    """Each OOD set as the exact images scored: <name>.npy (N, 32, 32, 3) uint8 as CIFAR-10-C stores images, and
    for a user's folder the list of its files in that order."""
    folder = atomic.ensure_writable_dir(out_dir / "sets")
    for ood in sets:
        atomic.save_npy(folder / f"{ood.name}.npy", ood.images.transpose(0, 2, 3, 1))
        if ood.files:
            atomic.write_text(folder / f"{ood.name}.txt", "\n".join(ood.files) + "\n")


def load_sets(params: OodParams) -> list[OodSet]:
    """The chosen sets, each a seeded sample of at most max_images (seed + its place in the order)."""
    limit = params.max_images
    sets = [limited(built_in(name, params.noise_images, params.seed), limit, params.seed + number)
            for number, name in enumerate(params.sets)]
    sets += [online_set(name, params.data_dir / "ood", limit, params.seed + len(sets) + number)
             for number, name in enumerate(params.online)]
    sets += [from_folder(name, path, limit, params.seed + len(sets) + number)
             for number, (name, path) in enumerate(parse_given(params.ood))]
    if not sets:
        raise UserError("no OOD set chosen: give --set with a built-in set, --online-set or --ood NAME=PATH")
    return sets


def corrupted_in_turn(images: torch.Tensor, severity: int, seed: int) -> np.ndarray:
    """The images each under one of the 15 corruptions in turn (image i under corruption i mod 15), in their order."""
    corrupted = images.clone()
    for i, name in enumerate(NAMES):
        if len(images[i::len(NAMES)]):
            corrupted[i::len(NAMES)] = corrupted_images(images[i::len(NAMES)], name, severity, seed)
    return corrupted.cpu().numpy()


@dataclass
class Evaluated:
    """One model's scores and what the stage writes of them."""
    scored: ModelScores
    card: dict
    metrics: list
    draws: dict     # {(tag, protocol, set, score): (resamples, 4)}
    selective: list
    curves: dict    # risk-coverage curves by score
    frame: pd.DataFrame


@dataclass(frozen=True)
class Prepared:
    """What every model scored on one data shares: its test and training samples, and the images of every set
    (the test sample, clean and corrupted, and the OOD sets), prepared once."""
    data: Cifar10
    sets: list
    test_index: np.ndarray
    train_index: np.ndarray
    images: dict


def prepared(data: Cifar10, sets: list[OodSet], params: OodParams, device: torch.device) -> Prepared:
    test_index = sample(len(data.test_labels), params.test_images, params.seed)
    test = data.test_images[test_index]
    corrupted = corrupted_in_turn(torch.from_numpy(test).to(device), params.corruption_severity, params.seed)
    return Prepared(data, sets, test_index, sample(len(data.train_labels), params.train_images, params.seed),
                  {ID_SET: test, CORRUPTED_SET: corrupted, **{s.name: s.images for s in sets}})


def evaluate(tag: str, path: Path, on: Prepared, params: OodParams, device: torch.device, out_dir: Path) -> Evaluated:
    """Score one model on the prepared test images (clean and corrupted) and OOD sets."""
    scored, card = score_model(tag, path, on.images, on.data, on.train_index, params, device, out_dir)
    rows, draws = metric_rows(scored, on.sets, params)
    selective, curves = selective_rows(scored, on.data.test_labels[on.test_index], on.sets, params)
    return Evaluated(scored, card, rows, {(tag, *key): value for key, value in draws.items()}, selective, curves,
                     per_image_frame(scored, on.test_index, on.sets))


def open_set_data(path: Path, data: Cifar10, params: OodParams) -> tuple[Cifar10, OodSet]:
    """The data of an open-set run's classes, and the test images of the classes it never saw (near-OOD)."""
    checkpoint = read_checkpoint(path, "train.py --classes", open_set=True)
    names = list(checkpoint["class_names"])
    if not (checkpoint.get("config") or {}).get("classes"):
        raise UserError(f"--open-set {path}: this model was trained on every class; train one on some with "
                        "train.py --classes")
    if not set(names) < set(data.class_names):
        raise UserError(f"--open-set {path}: its classes ({', '.join(names)}) are not among this data's "
                        f"({', '.join(data.class_names)}); use the --data-dir it was trained on")
    known = sorted(data.class_names.index(name) for name in names)
    left_out = [name for name in data.class_names if name not in names]
    held_out = OodSet(HELD_OUT, NEAR, f"the CIFAR-10 test images of the {len(left_out)} classes the open-set model "
                                      f"never saw ({', '.join(left_out)}; Neal et al. 2018's protocol)",
                      data.test_images[~np.isin(data.test_labels, known)])
    return restricted(data, known), limited(held_out, params.max_images, params.seed)


def ood(params: OodParams) -> None:
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    sets = load_sets(params)
    open_set = open_set_data(params.open_set, data, params) if params.open_set else None
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    shared = prepared(data, sets, params, device)
    evaluated = [evaluate(tag, path, shared, params, device, out_dir) for tag, path in params.checkpoints.items()]
    models = {e.scored.tag: e.scored for e in evaluated}
    table = pd.DataFrame([row for e in evaluated for row in e.metrics])
    comparisons = comparison_rows(models, {key: value for e in evaluated for key, value in e.draws.items()}, table)
    if open_set is not None and params.open_set is not None:
        known_data, held_out = open_set
        extra = evaluate(OPEN_SET, params.open_set, prepared(known_data, [held_out, *sets], params, device), params,
                         device, out_dir)
        table = pd.concat([table, pd.DataFrame(extra.metrics)], ignore_index=True)
        comparisons += comparison_rows({OPEN_SET: extra.scored}, extra.draws, table)
        evaluated.append(extra)
    selective = pd.DataFrame([row for e in evaluated for row in e.selective])
    per_image = pd.concat([e.frame for e in evaluated], ignore_index=True)
    save_sets(out_dir, sets + ([open_set[1]] if open_set else []))
    for name, frame in [("metrics.csv", table), ("comparisons.csv", pd.DataFrame(comparisons)),
                        ("selective.csv", selective), ("scores.csv", per_image)]:
        atomic.write_csv(out_dir / name, frame.to_dict("records"), list(frame.columns))
    standard = table[(table.protocol == STANDARD) & (table.model != OPEN_SET)]
    shown = per_image[per_image.model != OPEN_SET]
    names = [s.name for s in sets]
    save(out_dir / "auroc.png", auroc_figure(standard, names))
    save(out_dir / "histograms.png", ood_histogram_figure(shown, names))
    save(out_dir / "roc.png", ood_roc_figure(shown, names))
    pooled = sum(len(s.images) for s in sets)
    save(out_dir / "risk_coverage.png", risk_coverage_figure(
        {e.scored.tag: e.curves for e in evaluated if e.scored.tag != OPEN_SET},
        f"{len(evaluated[0].scored.predictions[ID_SET])} test + {pooled} OOD images, every accepted OOD image an "
        "error"))
    save(out_dir / "accepted.png", accepted_ood_figure({s.name: s.images for s in sets}, shown, names,
                                                       data.class_names, params.gallery))
    for line in summary_lines(standard):
        print(line)
    print(f"-> {out_dir}")
    headline, section = findings(table, pd.DataFrame(comparisons), selective, sets, models, out_dir, params)
    inputs = params.checkpoints | ({OPEN_SET: params.open_set} if params.open_set else {})
    write_record("ood", {"ood": out_dir}, inputs, headline=headline, sections=[section],
                 data=data_summary(data), device=describe_device(device), precision=REPORTED_PRECISION,
                 seed=params.seed, models={e.scored.tag: e.card for e in evaluated},
                 sets={s.name: {"kind": s.kind, "images": len(s.images), "source": s.source}
                       for s in sets + ([open_set[1]] if open_set else [])},
                 settings=asdict(settings_of(params)), scores=list(params.scores),
                 skipped={e.scored.tag: e.scored.skipped for e in evaluated if e.scored.skipped},
                 temperatures={tag: {"temperature": m.temperature, "fitted_on": m.fitted_on}
                               for tag, m in models.items()})


def summary_lines(standard: pd.DataFrame) -> list[str]:
    means = standard[standard.set.isin(list(MEANS.values()))]
    return [f"{row.model:9s} {row.score:21s} {row.set.split('_')[0]}-set mean AUROC {row.auroc:.3f} "
            f"[{row.auroc_low:.3f}, {row.auroc_high:.3f}]  FPR@95 {row.fpr95:.3f}" for row in means.itertuples()]


def findings(table: pd.DataFrame, comparisons: pd.DataFrame, selective: pd.DataFrame, sets: list[OodSet],
             models: dict, out_dir: Path, params: OodParams) -> tuple[list[Headline], Section]:
    standard = table[(table.protocol == STANDARD) & (table.model != OPEN_SET)]
    present = [name for name in ("far_mean", "near_mean") if (standard.set == name).any()]
    summary = present[0] if present else sets[0].name
    where = f"mean over the {summary.split('_')[0]} sets" if present else summary

    def estimate(row, name: str) -> Estimate:
        return Estimate(row[name], row[f"{name}_low"], row[f"{name}_high"])

    headline = []
    for score in [s for s in HEADLINE_SCORES if s in set(standard.score)]:
        rows = standard[(standard.set == summary) & (standard.score == score)].set_index("model")
        n = f"{int(rows.n_id.iloc[0])} test / {int(rows.n_ood.iloc[0])} OOD"
        display = BY_NAME[score].display
        headline.append(Headline(f"OOD AUROC, {display} ({where}; stratified bootstrap 95%)",
                                 {tag: estimate(r, "auroc") for tag, r in rows.iterrows()}, n,
                                 axis=f"OOD AUROC ({display})", better=HIGHER))
        headline.append(Headline(f"OOD images accepted at 95% of test images accepted (FPR@95), {display}",
                                 {tag: estimate(r, "fpr95") for tag, r in rows.iterrows()}, n, better=LOWER))
    columns = ["score", *[f"{tag}: AUROC" for tag in models], *[f"{tag}: FPR@95" for tag in models], "settings"]
    tables = []
    for shown in present or [summary]:
        chosen = standard[standard.set == shown]
        rows = []
        for score, group in chosen.groupby("score", sort=False):
            by_model = group.set_index("model")
            rows.append([BY_NAME[str(score)].display, *[estimate(by_model.loc[tag], "auroc") for tag in models],
                         *[estimate(by_model.loc[tag], "fpr95") for tag in models],
                         " / ".join(dict.fromkeys(str(text) for text in group.settings))])
        kind = shown.split("_")[0]
        what = f"mean over the {kind} sets ({', '.join(s.name for s in sets if s.kind == kind)})" if present \
            else shown
        tables.append(Table(columns, rows, note=f"{what}; in-distribution: the CIFAR-10 test images (positive "
                                                f"class); intervals: {params.resamples} stratified bootstrap "
                                                "resamples."))
    if len(comparisons):
        picked = comparisons[(comparisons.protocol == STANDARD) & (comparisons.set == summary)]
        between_models = picked["first"].str.split().str[0] != picked["second"].str.split().str[0]
        picked = pd.concat([picked[between_models], picked[~between_models]])  # the models side by side first
        tables.append(Table(["first", "second", "AUROC difference, points (paired bootstrap 95%)", "p"],
                            [[r.first, r.second, Estimate(r.difference, r.difference_low, r.difference_high),
                              r.p_bootstrap] for r in picked.itertuples()],
                            note="paired on the same resampled images; p: two-sided bootstrap p-value, not "
                                 "corrected for the number of comparisons"))
    opened = table[(table.protocol == STANDARD) & (table.model == OPEN_SET)]
    if len(opened):
        by_score = {score: group.set_index("set") for score, group in opened.groupby("score", sort=False)}
        tables.append(Table(["score", "held-out classes: AUROC", "FPR@95", f"{where}: AUROC"],
                            [[BY_NAME[str(score)].display, estimate(group.loc[HELD_OUT], "auroc"),
                              estimate(group.loc[HELD_OUT], "fpr95"),
                              estimate(group.loc[summary], "auroc") if summary in group.index else ""]
                             for score, group in by_score.items()],
                            note=f"The open-set model ({params.open_set}): in-distribution, "
                                 f"{int(opened.n_id.iloc[0])} test images of the classes it was trained on; "
                                 "near-OOD, the held-out classes' test images (Neal et al. 2018's protocol)."))
    full = table[(table.protocol == FULL_SPECTRUM) & (table.set == summary) & (table.model != OPEN_SET)]
    notes = ["Sets: " + "; ".join(f"{s.name} ({len(s.images)}): {s.source}" for s in sets),
             f"Full-spectrum (corrupted test images counted as in-distribution): AUROC, {where}: " +
             "; ".join(f"{r.model} {r.score} {r.auroc:.3f}" for r in full.itertuples()
                       if r.score in HEADLINE_SCORES)]
    notes += [f"{tag}: {name} skipped: {why}" for tag, m in models.items() for name, why in m.skipped.items()]
    notes += [f"{tag}: MSP temperature-scaled with T {m.temperature:.4g}, fitted on {m.fitted_on} "
              "(calibration.py)" for tag, m in models.items()]
    accepted = Table(["model", "score", "AURC, accepted OOD images as errors (bootstrap 95%)"],
                     [[r["model"], BY_NAME[r["score"]].display,
                       Estimate(float(r["aurc"]), float(r["aurc_low"]), float(r["aurc_high"]), NUMBER)]
                      for r in selective.to_dict("records") if r["score"] in HEADLINE_SCORES])
    tables.append(accepted)
    section = Section("Out-of-distribution detection", lead=Picture(out_dir / "auroc.png", "AUROC per score and set"),
                      tables=tables, notes=notes,
                      pictures=[Picture(out_dir / "histograms.png", "scores of test and OOD images"),
                                Picture(out_dir / "roc.png", "ROC curves"),
                                Picture(out_dir / "risk_coverage.png", "risk-coverage, accepted OOD images as errors"),
                                Picture(out_dir / "accepted.png", "OOD images accepted most confidently")],
                      links=[out_dir / "metrics.csv", out_dir / "comparisons.csv", out_dir / "selective.csv",
                             out_dir / "scores.csv"])
    return headline, section


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = OodParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the image samples, the noise sets, the corruptions and the "
                                      "bootstrap resamples")
    add_checkpoint_args(parser)
    parser.add_argument("--smoke", action="store_true", help="a small run: seconds per model on a CPU")
    add_flags(parser, defaults, SMOKE)
    args = parser.parse_args(argv)
    run_main(lambda: ood(params_from(args, defaults, SMOKE)), args.debug)
