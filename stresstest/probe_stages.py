"""The study B stage scripts (probing/*.py) as functions over stresstest.probe."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from . import atomic  # noqa: E402
from .backbones import BACKBONES, Preprocess, load_backbone  # noqa: E402
from .cases import format_meta, replace_folder  # noqa: E402
from .cli import positive_int, run_main  # noqa: E402
from .plots import confusion_figure, explanation_figure  # noqa: E402
from .probe import (Probe, heads, l2_normalize, load_probe, nearest_neighbours, probing_parser,  # noqa: E402
                    sklearn_knn_predictions)

NEIGHBOURS_SHOWN = 8
CAM_LAYER_NAMES = {"resnet50": "layer4[-1] (7x7)", "vit_b_16": "encoder.layers[-1].ln_1 (14x14 tokens)"}


def extract_stage(description: str) -> None:
    args = probing_parser(description).parse_args()

    def run():
        probe = load_probe(args)
        print(f"{probe.model_name}: train features {tuple(probe.train_features.shape)}, test features "
              f"{tuple(probe.test_features.shape)} in {probe.out_dir / 'features.pt'}")
    run_main(run)


def knn_stage(description: str) -> None:
    args = probing_parser(description).parse_args()

    def run():
        probe = load_probe(args)
        names, labels = probe.class_names, probe.test_labels
        outputs = heads(probe)
        predictions = {"kNN (DINO)": outputs["knn"].argmax(1), "linear": outputs["linear"].argmax(1)}
        sklearn_pred = sklearn_knn_predictions(probe.train_features, probe.train_labels, probe.test_features)
        accuracy = {name: float((pred == labels).mean()) for name, pred in predictions.items()}
        rows = [{"head": "knn_dino", "accuracy": accuracy["kNN (DINO)"]},
                {"head": "knn_sklearn", "accuracy": float((sklearn_pred == labels).mean())},
                {"head": "linear_logreg", "accuracy": accuracy["linear"]}]
        atomic.write_csv(probe.out_dir / "probe_accuracy.csv", rows, ["head", "accuracy"])
        per_class = [{"class": name, "images": int((labels == c).sum()),
                      **{f"{key}_accuracy": float((predictions[head][labels == c] == c).mean())
                         if (labels == c).any() else "" for key, head in [("knn", "kNN (DINO)"), ("linear", "linear")]}}
                     for c, name in enumerate(names)]
        atomic.write_csv(probe.out_dir / "per_class_accuracy.csv", per_class,
                         ["class", "images", "knn_accuracy", "linear_accuracy"])
        confusion_figure(labels, {f"{probe.model_name} {head}": pred for head, pred in predictions.items()}, names,
                         probe.out_dir / "confusion_matrices.png")
        agreement = (sklearn_pred == predictions["kNN (DINO)"]).mean()
        print(f"{probe.model_name} ({probe.settings['weights']}): kNN k=20 accuracy {accuracy['kNN (DINO)']:.4f} "
              f"(scikit-learn {rows[1]['accuracy']:.4f}, same prediction on {agreement:.1%}), linear head "
              f"{accuracy['linear']:.4f} -> {probe.out_dir}")
    run_main(run)


def hardness_table(probe: Probe, outputs: dict) -> pd.DataFrame:
    """Every test image ranked hardest first: lowest true-class probability of the linear head, then margin."""
    labels, linear, knn = probe.test_labels, outputs["linear"], outputs["knn"]
    rows = np.arange(len(labels))
    true_prob = linear[rows, labels]
    others = linear.copy()
    others[rows, labels] = -1
    table = pd.DataFrame({
        "test_index": rows, "true_label": [probe.class_names[c] for c in labels],
        "linear_pred": [probe.class_names[c] for c in linear.argmax(1)], "linear_confidence": linear.max(1),
        "true_class_prob": true_prob, "margin": true_prob - others.max(1),
        "knn_pred": [probe.class_names[c] for c in knn.argmax(1)], "knn_true_vote": knn[rows, labels]})
    table["linear_wrong"] = table.linear_pred != table.true_label
    table["knn_wrong"] = table.knn_pred != table.true_label
    table["knn_agrees"] = table.knn_pred == table.linear_pred
    table = table.sort_values(["true_class_prob", "margin", "test_index"], ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def ranked_probe(args) -> tuple[Probe, dict, pd.DataFrame]:
    """The probe of --model, its heads' outputs and its test images ranked hardest first."""
    probe = load_probe(args)
    outputs = heads(probe)
    return probe, outputs, hardness_table(probe, outputs)


class ProbeClassifier(nn.Module):
    """Backbone plus the fitted linear head: the model that Grad-CAM explains (input: 224x224 normalized)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def probe_cams(probe: Probe, head: nn.Linear, indices: np.ndarray, classes: list[int]) -> np.ndarray:
    """Grad-CAM maps (N, 224, 224) in [0, 1] for test images through backbone + linear head."""
    # imported here: pytorch_grad_cam takes seconds to import and only this stage needs it
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    backbone, _ = load_backbone(probe.model_name, probe.weights, probe.seed)
    spec = BACKBONES[probe.model_name]
    model = ProbeClassifier(backbone, head.float()).to(probe.device).eval()
    inputs = Preprocess().to(probe.device)(torch.from_numpy(probe.test_images[indices]).to(probe.device))
    with GradCAM(model=model, target_layers=[spec.cam_layer(backbone)], reshape_transform=spec.cam_reshape) as cam:
        maps = [cam(input_tensor=inputs[i:i + 16], targets=[ClassifierOutputTarget(c) for c in classes[i:i + 16]])
                for i in range(0, len(inputs), 16)]
    return np.concatenate(maps).astype(np.float32)


def neighbours_figure(probe: Probe, index: int, sims, neighbour_indices, title: str):
    figure, axes = plt.subplots(1, NEIGHBOURS_SHOWN + 1, figsize=(1.6 * (NEIGHBOURS_SHOWN + 1), 2.3), dpi=100)
    axes[0].imshow(probe.test_images[index].transpose(1, 2, 0))
    axes[0].set_title(f"query\n{probe.class_names[probe.test_labels[index]]}", fontsize=9)
    for axis, sim, neighbour in zip(axes[1:], sims, neighbour_indices):
        axis.imshow(probe.train_images[neighbour].transpose(1, 2, 0))
        axis.set_title(f"{probe.class_names[probe.train_labels[neighbour]]}\ncos {sim:.3f}", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return figure


def write_cross_model_table(out_root: Path) -> None:
    """Which hard examples (linear-head mistakes) are shared by every model and which by one only."""
    tables = {name: pd.read_csv(out_root / name / "hard_examples.csv").set_index("test_index").sort_index()
              for name in BACKBONES if (out_root / name / "hard_examples.csv").is_file()}
    if len(tables) < 2 or len({len(t) for t in tables.values()}) != 1:
        return
    first = next(iter(tables.values()))
    merged = pd.DataFrame({"test_index": first.index, "true_label": first.true_label.values})
    for name, table in tables.items():
        merged[f"{name}_true_class_prob"] = table.true_class_prob.values
        merged[f"{name}_wrong"] = table.linear_wrong.values
    wrong = merged[[f"{name}_wrong" for name in tables]]
    merged["category"] = np.select(
        [wrong.all(1)] + [wrong[f"{name}_wrong"] & (wrong.sum(1) == 1) for name in tables],
        ["hard_for_all"] + [f"hard_for_{name}_only" for name in tables], default="easy_or_mixed")
    merged = merged.sort_values([f"{name}_true_class_prob" for name in tables], ignore_index=True)
    atomic.write_csv(out_root / "hard_across_models.csv", merged.round(6).to_dict("records"), list(merged.columns))
    print("across models: " + ", ".join(f"{k} {v}" for k, v in merged.category.value_counts().items()))


def hard_examples_stage(description: str) -> None:
    parser = probing_parser(description)
    parser.add_argument("--max-cases", type=positive_int,
                        help="hardest examples saved as case folders (default 12; --smoke: 4)")
    parser.add_argument("--cases-root", type=Path, default=Path("failure_cases/probing"),
                        help="case folders go to CASES_ROOT/<model>/case_XX")
    args = parser.parse_args()

    def run():
        probe, outputs, table = ranked_probe(args)
        atomic.write_csv(probe.out_dir / "hard_examples.csv", table.round(6).to_dict("records"), list(table.columns))
        count = args.max_cases or (4 if args.smoke else 12)
        hardest = table.head(count)
        indices = hardest.test_index.to_numpy(copy=True)
        predicted = [probe.class_names.index(p) for p in hardest.linear_pred]
        maps = probe_cams(probe, outputs["head"], indices, predicted)
        sims, neighbours = nearest_neighbours(l2_normalize(probe.train_features),
                                              l2_normalize(probe.test_features[indices]), NEIGHBOURS_SHOWN)

        def build(folder: Path) -> None:
            for position, row in enumerate(hardest.itertuples()):
                case_dir = folder / f"case_{position:02d}"
                case_dir.mkdir()
                image = probe.test_images[row.test_index].transpose(1, 2, 0)
                Image.fromarray(image).save(case_dir / "image.png")
                (case_dir / "meta.txt").write_text(format_meta({
                    "case": case_dir.name, "model": probe.model_name, "weights": probe.settings["weights"],
                    "test_index": row.test_index, "true_label": row.true_label, "predicted_label": row.linear_pred,
                    "confidence": f"{row.linear_confidence:.6f}", "true_class_prob": f"{row.true_class_prob:.6f}",
                    "margin": f"{row.margin:.6f}", "knn_pred": row.knn_pred, "hardness_rank": row.rank,
                    "nearest_train_indices": " ".join(map(str, neighbours[position].tolist())),
                    "nearest_train_labels": " ".join(probe.class_names[probe.train_labels[n]]
                                                     for n in neighbours[position].tolist())}))
                title = (f"{probe.model_name} {case_dir.name}: true {row.true_label}, linear head predicts "
                         f"{row.linear_pred} ({row.linear_confidence:.3f})")
                subtitle = f"Grad-CAM on {CAM_LAYER_NAMES[probe.model_name]}, explaining the predicted class"
                figure = explanation_figure(image, maps[position], title, subtitle)
                atomic.save_figure(case_dir / "gradcam.png", figure)
                plt.close(figure)
                figure = neighbours_figure(probe, row.test_index, sims[position].tolist(),
                                           neighbours[position].tolist(),
                                           f"{case_dir.name}: nearest training images ({probe.model_name}, cosine)")
                atomic.save_figure(case_dir / "neighbors.png", figure)
                plt.close(figure)

        replace_folder(args.cases_root / probe.model_name, build)
        wrong = int(table.linear_wrong.sum())
        print(f"{probe.model_name}: {wrong} of {len(table)} test images misclassified by the linear head, "
              f"{int(table.knn_wrong.sum())} by kNN, {int((table.linear_wrong & table.knn_wrong).sum())} by both; "
              f"{count} hardest saved to {args.cases_root / probe.model_name}")
        write_cross_model_table(args.out_root)
    run_main(run)


def embedding_stage(description: str) -> None:
    parser = probing_parser(description)
    parser.add_argument("--hard-count", type=positive_int,
                        help="hardest examples to analyse (default 50; --smoke: 10)")
    args = parser.parse_args()

    def run():
        probe, outputs, table = ranked_probe(args)
        names = probe.class_names
        train = l2_normalize(probe.train_features)
        test = l2_normalize(probe.test_features)
        labels = torch.as_tensor(probe.train_labels)
        present = [c for c in range(len(names)) if (labels == c).any()]
        centroids = torch.zeros(len(names), train.shape[1])
        for c in present:
            centroids[c] = train[labels == c].mean(0)
        centroids = torch.nn.functional.normalize(centroids, dim=1)
        similarity = (centroids @ centroids.T).numpy()
        atomic.write_csv(probe.out_dir / "centroid_similarity.csv",
                         [{"class": names[i], **dict(zip(names, similarity[i].round(6).tolist()))}
                          for i in range(len(names))], ["class", *names])
        figure, axis = plt.subplots(figsize=(7.5, 6.5), dpi=100)
        image = axis.imshow(similarity, cmap="viridis")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                axis.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        figure.colorbar(image, ax=axis)
        axis.set_title(f"{probe.model_name}: cosine similarity of class centroids")
        figure.tight_layout()
        atomic.save_figure(probe.out_dir / "centroid_similarity.png", figure)
        plt.close(figure)

        count = args.hard_count or (10 if args.smoke else 50)
        hard = table.head(count)
        indices = hard.test_index.to_numpy(copy=True)
        own = torch.as_tensor(probe.test_labels[indices])
        predicted = torch.as_tensor([names.index(p) for p in hard.linear_pred])
        to_centroids = test[indices] @ centroids.T
        sims, neighbours = nearest_neighbours(train, test[indices], 5)
        rows = [{"rank": row.rank, "test_index": row.test_index, "true_label": row.true_label,
                 "predicted_label": row.linear_pred,
                 "sim_own_centroid": round(float(to_centroids[i, own[i]]), 6),
                 "sim_predicted_centroid": round(float(to_centroids[i, predicted[i]]), 6),
                 "closer_to_predicted": bool(to_centroids[i, predicted[i]] > to_centroids[i, own[i]]),
                 "neighbour_indices": " ".join(map(str, neighbours[i].tolist())),
                 "neighbour_labels": " ".join(names[probe.train_labels[n]] for n in neighbours[i].tolist()),
                 "neighbour_sims": " ".join(f"{s:.4f}" for s in sims[i].tolist())}
                for i, row in enumerate(hard.itertuples())]
        atomic.write_csv(probe.out_dir / "hard_example_similarity.csv", rows, list(rows[0]))
        tsne_plot(probe, test, indices)
        closer = sum(r["closer_to_predicted"] for r in rows)
        print(f"{probe.model_name}: {closer} of {len(rows)} hardest test images lie closer to the predicted class "
              f"centroid than to their own -> {probe.out_dir}")
    run_main(run)


def tsne_plot(probe: Probe, test: torch.Tensor, hard_indices: np.ndarray, max_points: int = 2000) -> None:
    """2-D t-SNE (after PCA to 50 dimensions) of test embeddings coloured by class, hard examples marked."""
    rng = np.random.default_rng(probe.seed)
    keep = np.union1d(rng.permutation(len(test))[:max_points], hard_indices)
    points = test[keep].numpy()
    points = PCA(n_components=min(50, *points.shape), random_state=probe.seed).fit_transform(points)
    embedded = TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca",
                    random_state=probe.seed).fit_transform(points)
    figure, axis = plt.subplots(figsize=(8, 7), dpi=100)
    labels = probe.test_labels[keep]
    for c, name in enumerate(probe.class_names):
        axis.scatter(*embedded[labels == c].T, s=6, alpha=0.6, label=name, color=plt.cm.tab10(c))
    hard = np.isin(keep, hard_indices)
    axis.scatter(*embedded[hard].T, s=40, marker="x", color="black", label="hard examples")
    axis.legend(markerscale=2, fontsize=8, loc="best")
    axis.set_title(f"{probe.model_name}: t-SNE of test embeddings ({len(keep)} images)")
    axis.set_xticks([])
    axis.set_yticks([])
    atomic.save_figure(probe.out_dir / "tsne.png", figure)
    plt.close(figure)
