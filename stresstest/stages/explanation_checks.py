"""Study C (explanation_checks.py): is Grad-CAM faithful? Measured on the saved failure cases and a random
sample of test images both models get right, for both models, at the layer the explanation stages used:

- ROAD (Rong et al. 2022) through pytorch_grad_cam.metrics.road: the fall of the explained class's probability
  when the most relevant pixels are imputed (MoRF) against when the least relevant are (LeRF), averaged over
  percentiles; combined = (LeRF - MoRF) / 2, higher is more faithful, beside the same score of random maps.
- The model-randomisation sanity check (Adebayo et al. 2018): layers re-initialised cascading from the head
  down; Spearman rank correlation of each image's map with its original (a faithful method decorrelates).
- Agreement of the two models' maps of the same image and class (the true class): Spearman and the overlap
  (IoU) of their top 20% pixels, against pairs of different images (CIFAR maps share a centre bias)."""
import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from ..core import atomic, paths
from ..core.cases import read_cases
from ..core.checkpoint import load_classifier, model_card
from ..core.cli import (BothModels, add_checkpoint_args, add_common_args, add_flags, flag, make_parser,
                         non_negative_int, params_from, run_main)
from ..core.device import describe_device, resolve_device, seeded
from ..core.errors import UserError
from ..core.findings import Picture, Section, frame_table
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..metrics import mean_interval, rank_correlations, top_overlap
from ..nn.cam_layers import cam_target, to_image_size
from ..nn.gradcam import gradcam_on_device
from ..nn.inference import REPORTED_PRECISION, checkpoint_normalizer, probabilities
from ..plots import randomisation_figure, save

TOP_SHARE = 0.2  # the top 20% pixels of two maps, compared by IoU
MIN_CASCADE_STEPS = 4  # fewer top-level parts than this: the cascade goes one level deeper


@dataclass(frozen=True)
class ExplanationParams(BothModels):
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        f"case_XX folders of {paths.CASES_PRODUCER} with the Grad-CAM maps (their layer is used)"))
    out_dir: Path = field(default=paths.EXPLANATIONS_DIR, metadata=flag("where tables and figures go"))
    correct_images: int = field(default=100, metadata=flag("test images both models get right, sampled",
                                                           non_negative_int))
    percentiles: tuple = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # ROAD's (the package's defaults); no flag


SMOKE = ExplanationParams(correct_images=16, percentiles=(20, 50, 80))


def road_scores(model, inputs: torch.Tensor, maps: np.ndarray, classes: np.ndarray, percentiles: Sequence[int],
                seed: int) -> np.ndarray:
    """ROAD combined score per image (the package's classes; its imputation noise drawn from `seed`)."""
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    with seeded(seed), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the package's np.float32 over tensors (numpy 2)
        return ROADCombined(percentiles=list(percentiles))(inputs, maps, targets, model)


def cascade(model: torch.nn.Module) -> list[str]:
    """The parts the randomisation check re-initialises one after another, head first: the model's top-level
    modules that hold parameters, in reverse order of registration (the built-in ResNet-18: fc, layer4, ..., bn1,
    conv1); a model with fewer than MIN_CASCADE_STEPS of them (one Sequential and a head) goes one level deeper."""
    def parts(module, prefix=""):
        return [f"{prefix}{name}" for name, child in module.named_children() if any(True for _ in child.parameters())]
    names = parts(model)
    if len(names) < MIN_CASCADE_STEPS:
        names = [deeper for name in names for deeper in (parts(model.get_submodule(name), f"{name}.") or [name])]
    return names[::-1]


def randomised(model: torch.nn.Module, layers: list[str], seed: int) -> torch.nn.Module:
    """A copy of `model` whose `layers` are re-initialised."""
    copy_ = copy.deepcopy(model)
    with seeded(seed):
        for name in layers:
            for module in copy_.get_submodule(name).modules():
                for reset in ["reset_parameters", "reset_running_stats"]:
                    method = getattr(module, reset, None)
                    if callable(method):
                        method()
    return copy_.eval()


def explained_layers(cases: list[dict], tags) -> dict:
    """{model: the layer its explanation stage used}, read from the first case's maps (decided by that stage)."""
    layers = {}
    for tag in tags:
        maps_file = cases[0]["path"] / f"gradcam_{tag}.npz"
        if not maps_file.is_file():
            raise UserError(f"{maps_file} not found: run {paths.EXPLAINERS[tag]} first")
        with np.load(maps_file) as stored:
            layers[tag] = str(stored["layer"])
    return layers


def right_for_every_model(models: dict, images: torch.Tensor, labels: np.ndarray, count: int,
                          rng: np.random.Generator, batch: int = 128) -> np.ndarray:
    """A uniform sample of `count` test images every model gets right (all there are, if fewer): the images are
    predicted in a seeded random order, a batch at a time, until enough are found, not the whole test set (the
    smoke stage spent 9 of its 30 s predicting 500 images twice to pick 16)."""
    order, found = rng.permutation(len(labels)), []
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        right = np.logical_and.reduce([probabilities(model, checkpoint, images[chunk]).argmax(1).cpu().numpy()
                                       == labels[chunk] for model, checkpoint in models.values()])
        found.extend(chunk[right])
        if len(found) >= count:
            break
    return np.sort(np.array(found[:count], dtype=np.int64))


def explanation_checks(params: ExplanationParams) -> None:
    cases_dir, seed = params.cases_dir, params.seed
    checkpoints = params.checkpoints
    device = resolve_device(params.device)
    cases = read_cases(cases_dir)
    layers = explained_layers(cases, checkpoints)
    data = load_cifar10(params.data_dir)
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    models = {tag: load_classifier(path, paths.producer(tag), device) for tag, path in checkpoints.items()}
    images = torch.from_numpy(data.test_images).to(device)
    case_index = np.array([int(case["test_index"]) for case in cases])
    rng = np.random.default_rng(seed)
    correct_index = right_for_every_model(models, images, data.test_labels, params.correct_images, rng)
    sets = {name: index for name, index in [("failure_cases", case_index), ("correct", correct_index)] if len(index)}
    print(f"Grad-CAM on {', '.join(f'{tag} {layer}' for tag, layer in layers.items())}: {len(case_index)} saved "
          f"cases and {len(correct_index)} test images {'both models get' if len(models) > 1 else 'the model gets'} "
          "right", flush=True)

    road_rows, cascade_rows, agreement_rows, true_maps, cascade_maps = [], [], [], {}, {}
    for tag, (model, checkpoint) in models.items():
        normalize = checkpoint_normalizer(checkpoint, device)
        target = cam_target(model, checkpoint, layers[tag])
        parts = cascade(model)
        for set_name, index in sets.items():
            inputs = normalize(images[index])
            classes = probabilities(model, checkpoint, images[index]).argmax(1).cpu().numpy()
            maps, _ = gradcam_on_device(model, inputs, classes, target.module, 128, target.reshape)
            random_maps = rng.random(maps.shape).astype(np.float32)
            for kind, kind_maps in [("gradcam", maps), ("random", random_maps)]:
                scores = road_scores(model, inputs, kind_maps, classes, params.percentiles, seed)
                mean, low, high = mean_interval(scores, rng)
                road_rows.append({"model": tag, "images": set_name, "map": kind, "n": len(index),
                                  "road_combined": round(mean, 6), "low95": round(low, 6), "high95": round(high, 6)})
            # the cascade on every image of this set, explaining the original model's prediction
            steps = {"original": maps}
            for depth in range(1, len(parts) + 1):
                broken = randomised(model, parts[:depth], seed)
                steps[f"up to {parts[depth - 1]}"], _ = gradcam_on_device(
                    broken, inputs, classes, broken.get_submodule(target.name), 128, target.reshape)
            for step, step_maps in list(steps.items())[1:]:
                mean, low, high = mean_interval(rank_correlations(maps, step_maps), rng)
                cascade_rows.append({"model": tag, "images": set_name, "randomised": step, "n": len(index),
                                     "spearman_with_original": round(mean, 6), "low95": round(low, 6),
                                     "high95": round(high, 6)})
            if set_name == "failure_cases":
                cascade_maps[tag] = {step: to_image_size(step_maps[:1], images.shape[-1])[0]
                                     for step, step_maps in steps.items()}
            true_maps[tag, set_name] = to_image_size(gradcam_on_device(
                model, inputs, data.test_labels[index], target.module, 128, target.reshape)[0], images.shape[-1])
    for set_name, index in sets.items() if len(models) == 2 else ():  # the two models' maps on the same pixels
        first, second = (true_maps[tag, set_name] for tag in models)
        shuffled = np.roll(np.arange(len(index)), 1)  # every map against another image's map
        for pairing, other in [("same image", second), ("different images", second[shuffled])]:
            for measure, values in [("spearman", rank_correlations(first, other)),
                                    (f"top{int(TOP_SHARE * 100)}_iou", top_overlap(first, other, TOP_SHARE))]:
                mean, low, high = mean_interval(values, rng)
                agreement_rows.append({"images": set_name, "pairing": pairing, "measure": measure, "n": len(index),
                                       "mean": round(mean, 6), "low95": round(low, 6), "high95": round(high, 6)})
    tables_by_file = {"road.csv": road_rows, "randomisation.csv": cascade_rows, "agreement.csv": agreement_rows}
    for name, rows in tables_by_file.items():
        if rows:
            atomic.write_csv(out_dir / name, rows, list(rows[0]))
        else:  # one model: no agreement to measure (and no stale table from an earlier run)
            (out_dir / name).unlink(missing_ok=True)
    first_case = cases[0]
    save(out_dir / "randomisation.png", randomisation_figure(
        data.test_images[int(first_case["test_index"])].transpose(1, 2, 0), cascade_maps,
        f"{first_case['case']} (test #{first_case['test_index']}): Grad-CAM ({', '.join(layers.values())}) as parts "
        "are re-initialised from the head down"))
    road = pd.DataFrame(road_rows)
    for row in road.itertuples():
        print(f"ROAD {row.model:9s} {row.images:13s} {row.map:8s} {row.road_combined:+.4f} "
              f"[{row.low95:+.4f}, {row.high95:+.4f}] (n={row.n})")
    for row in pd.DataFrame(agreement_rows).itertuples():
        print(f"agreement {row.images:13s} {row.pairing:16s} {row.measure:9s} {row.mean:.3f} "
              f"[{row.low95:.3f}, {row.high95:.3f}]")
    print(f"-> {out_dir}")
    road_table = frame_table(road.round(4), "ROAD combined score (higher: removing what the map marks relevant "
                                            "hurts more than removing what it marks irrelevant), Grad-CAM against "
                                            "random maps, mean with its bootstrap 95% interval:")
    tables = [road_table, frame_table(pd.DataFrame(cascade_rows).round(4),
                                      "Model-randomisation check: rank correlation with the original map as layers "
                                      "are re-initialised from the head down (faithful: it falls).")]
    if agreement_rows:
        tables.append(frame_table(pd.DataFrame(agreement_rows).round(4),
                                  "The two models' maps of the same image and class, against pairs of different "
                                  "images (the centre bias every CIFAR map shares)."))
    section = Section("Explanation checks", lead=Picture(out_dir / "randomisation.png", "randomisation cascade"),
                      tables=tables,
                      links=[out_dir / name for name, rows in tables_by_file.items() if rows])
    write_record("explanation_checks", {"explanations": out_dir}, {**checkpoints, "cases": cases_dir},
                 sections=[section], data=data_summary(data), device=describe_device(device),
                 precision=REPORTED_PRECISION, layers=layers, correct_images=len(correct_index), seed=seed,
                 models={tag: model_card(checkpoint, checkpoints[tag]) for tag, (_, checkpoint) in models.items()})


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = ExplanationParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the sample of correct images, the random maps, ROAD's imputation "
                                      "noise, the re-initialised layers and the bootstrap")
    add_checkpoint_args(parser)
    add_flags(parser, defaults, SMOKE)
    parser.add_argument("--smoke", action="store_true", help="fewer images and ROAD percentiles "
                                                             f"{' '.join(map(str, SMOKE.percentiles))}")
    args = parser.parse_args(argv)
    run_main(lambda: explanation_checks(params_from(args, defaults, SMOKE)), args.debug)
