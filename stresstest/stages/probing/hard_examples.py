"""Study B, stage 2 (probing/hard_examples.py): rank the test images by how hard they are for a backbone's
probe; save the hardest with their nearest training neighbours and Grad-CAM; compare across models."""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image

from ...core import atomic, paths
from ...core.cases import format_meta, replace_folder
from ...core.cli import flag, params_from, positive_int, run_main
from ...core.findings import Section, Tile
from ...core.record import write_record
from ...nn.backbones import BACKBONES, feature_normalizer, load_backbone
from ...plots import explanation_figure, neighbours_figure, save
from ...probe import SMOKE as PROBE_SMOKE
from ...probe import Probe, ProbeParams, l2_normalize, load_probe, nearest_neighbours, probing_parser, ranked

NEIGHBOURS_SHOWN = 8


@dataclass(frozen=True)
class HardExamplesParams(ProbeParams):
    max_cases: int = field(default=12, metadata=flag("hardest examples saved as case folders", positive_int))
    cases_dir: Path = field(default=paths.PROBING_CASES_DIR, metadata=flag(
        "case folders go to CASES_DIR/<model>/case_XX"))


SMOKE = HardExamplesParams(**dataclasses.asdict(PROBE_SMOKE), max_cases=4)


class ProbeClassifier(nn.Module):
    """Backbone plus the fitted linear head: the model that Grad-CAM explains (input: 224x224 normalized)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def probe_cams(probe: Probe, head: nn.Linear, indices: np.ndarray, classes: list[int]) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Grad-CAM maps (N, 224, 224) in [0, 1] of test images through backbone + linear head, explaining
    `classes`, and the probabilities of that (fp32) forward pass."""
    from ...nn.gradcam import compute_cams

    spec = BACKBONES[probe.model_name]
    backbone = load_backbone(probe.model_name, probe.weights, probe.seed)
    model = ProbeClassifier(backbone, head.float()).to(probe.device).eval()
    inputs = feature_normalizer(probe.model_name, probe.device)(
        torch.from_numpy(probe.test_images[indices]).to(probe.device))
    return compute_cams(model, inputs, classes, spec.cam_layer(backbone), batch_size=16,
                        reshape_transform=spec.cam_reshape)


def write_cross_model_table(out_dir: Path) -> None:
    """Which hard examples (linear-head mistakes) are shared by every model and which by one only."""
    tables = {name: pd.read_csv(out_dir / name / "hard_examples.csv").set_index("test_index").sort_index()
              for name in BACKBONES if (out_dir / name / "hard_examples.csv").is_file()}
    if len(tables) < 2 or len({len(t) for t in tables.values()}) != 1:
        return
    first = next(iter(tables.values()))
    merged = pd.DataFrame({"test_index": first.index, "true_label": first.true_label.values})
    for name, table in tables.items():
        merged[f"{name}_true_class_probability"] = table.true_class_probability.values
        merged[f"{name}_wrong"] = table.linear_wrong.values
    wrong = merged[[f"{name}_wrong" for name in tables]]
    merged["category"] = np.select(
        [wrong.all(axis=1)] + [wrong[f"{name}_wrong"] & (wrong.sum(axis=1) == 1) for name in tables],
        ["hard_for_all"] + [f"hard_for_{name}_only" for name in tables], default="easy_or_mixed")
    merged = merged.sort_values([f"{name}_true_class_probability" for name in tables], ignore_index=True)
    atomic.write_csv(out_dir / "hard_across_models.csv", merged.round(6).to_dict("records"), list(merged.columns))
    print(f"across {', '.join(tables)}: " + ", ".join(f"{k} {v}" for k, v in merged.category.value_counts().items()))


def save_hard_examples(probe: Probe, cases_dir: Path, count: int) -> None:
    """hard_examples.csv, and the `count` hardest as cases_dir/<model>/case_XX/ (image, meta, Grad-CAM,
    nearest training neighbours); then the cross-model table once several models have been run."""
    outputs, table = ranked(probe)
    atomic.write_csv(probe.out_dir / "hard_examples.csv", table.round(6).to_dict("records"), list(table.columns))
    hardest = table.head(count)
    indices = hardest.test_index.to_numpy(copy=True)
    names = probe.class_names
    explained = [names.index(p) for p in hardest.linear_pred]
    maps, cam_probs = probe_cams(probe, outputs["head"], indices, explained)
    sims, neighbours = nearest_neighbours(l2_normalize(probe.train_features),
                                          l2_normalize(probe.test_features[indices]), NEIGHBOURS_SHOWN)
    layer = BACKBONES[probe.model_name].cam_layer_name
    precision = probe.settings["precision"]

    def build(folder: Path) -> None:
        for position, row in enumerate(hardest.itertuples()):
            case_dir = folder / f"case_{position:02d}"
            case_dir.mkdir()
            image = probe.test_images[row.test_index].transpose(1, 2, 0)
            Image.fromarray(image).save(case_dir / "image.png")
            forward_pred = int(cam_probs[position].argmax())
            neighbour_list = neighbours[position].tolist()
            (case_dir / "meta.txt").write_text(format_meta({
                "case": case_dir.name, "model": probe.model_name, "weights": probe.settings["weights"],
                "test_index": row.test_index, "true_label": row.true_label, "predicted_label": row.linear_pred,
                "confidence": f"{row.linear_confidence:.6f}",
                "true_class_probability": f"{row.true_class_probability:.6f}", "margin": f"{row.margin:.6f}",
                "true_class_margin": f"{row.true_class_margin:.6f}", "knn_pred": row.knn_pred,
                "hardness_rank": row.rank, "gradcam_class": row.linear_pred,
                "gradcam_forward_prediction": names[forward_pred],
                "gradcam_forward_confidence": f"{cam_probs[position, forward_pred]:.6f}",
                "nearest_train_indices": " ".join(map(str, neighbour_list)),
                "nearest_train_labels": " ".join(names[probe.train_labels[n]] for n in neighbour_list)}))
            title = (f"{probe.model_name} {case_dir.name}: true {row.true_label}, linear head predicts "
                     f"{row.linear_pred} ({row.linear_confidence:.3f}, {precision} features)")
            subtitle = (f"Grad-CAM on {layer} explaining {row.linear_pred}; this fp32 pass predicts "
                        f"{names[forward_pred]} ({cam_probs[position, forward_pred]:.3f})")
            save(case_dir / "gradcam.png", explanation_figure(image, maps[position], title, subtitle))
            save(case_dir / "neighbours.png", neighbours_figure(
                image, row.true_label, [probe.train_images[n].transpose(1, 2, 0) for n in neighbour_list],
                [names[probe.train_labels[n]] for n in neighbour_list], sims[position].tolist(),
                f"{case_dir.name}: nearest training images ({probe.model_name}, cosine)"))

    replace_folder(cases_dir / probe.model_name, build)
    print(f"{probe.model_name}: {int(table.linear_wrong.sum())} of {len(table)} test images misclassified by the "
          f"linear head, {int(table.knn_wrong.sum())} by kNN, {int((table.linear_wrong & table.knn_wrong).sum())} "
          f"by both; {count} hardest saved to {cases_dir / probe.model_name}")
    write_cross_model_table(probe.out_dir.parent)
    folder = cases_dir / probe.model_name
    section = Section(
        f"Study B: {probe.model_name}, hardest test images",
        notes=[f"{int(table.linear_wrong.sum())} of {len(table)} test images misclassified by the linear head, "
               f"{int(table.knn_wrong.sum())} by kNN; the {count} hardest (lowest true-class probability first). "
               "Open one for its Grad-CAM and nearest training images."],
        gallery=[Tile(f"{probe.model_name}/case_{position:02d}", folder / f"case_{position:02d}",
                      f"#{row.test_index}: {row.true_label} -> {row.linear_pred} ({row.linear_confidence:.1%})")
                 for position, row in enumerate(hardest.itertuples())])
    write_record(f"hard_examples.{probe.model_name}", {"probe": probe.out_dir, "cases": folder},
                 sections=[section], model=probe.model_name, weights=probe.settings["weights"],
                 precision=probe.settings["precision"], cases=count)


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = HardExamplesParams()
    args = probing_parser(description, defaults, SMOKE).parse_args(argv)
    params = params_from(args, defaults, SMOKE)
    run_main(lambda: save_hard_examples(load_probe(params), params.cases_dir, params.max_cases), args.debug)
