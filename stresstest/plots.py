"""Every figure of both studies. The one module that imports matplotlib. Figures are matplotlib.figure.Figure
objects written straight to files: no pyplot, so no backend is chosen here or forced on anyone who imports this."""
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter
from PIL import Image

from .core import atomic

TAB10 = colormaps["tab10"]

DISPLAY_SIZE = 256  # pixels per panel: 32x32 upscaled 8x


def subplots(*grid, figsize, dpi: int = 100, **options):
    """A new figure and its axes, as pyplot.subplots makes them."""
    figure = Figure(figsize=figsize, dpi=dpi)
    return figure, figure.subplots(*grid, **options)


def save(path: Path, figure: Figure) -> None:
    """Write a figure atomically (in the format its suffix names)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=figure.dpi, bbox_inches="tight")
    atomic.write_bytes(path, buffer.getvalue())


def confusion_figure(labels, predictions: dict, class_names: list[str]) -> Figure:
    """Confusion matrices side by side, one per {title: predicted labels}, each titled with its accuracy."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    figure, axes = subplots(1, len(predictions), figsize=(7.5 * len(predictions), 6.5), dpi=100)
    for axis, (title, predicted) in zip(np.atleast_1d(axes), predictions.items()):
        matrix = confusion_matrix(labels, predicted, labels=range(len(class_names)))
        ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(ax=axis, colorbar=False, cmap="Blues")
        axis.tick_params(axis="x", labelrotation=45)
        axis.set_title(f"{title}: accuracy {(predicted == labels).mean():.3f} (n={len(labels)})")
    figure.tight_layout()
    return figure


def plot_curves(rows: list[dict], out_dir: Path, title: str) -> None:
    """accuracy_curve.png and loss_curve.png: train, validation and test per epoch."""
    epochs = [row["epoch"] for row in rows]
    for metric, filename, label in [("acc", "accuracy_curve.png", "accuracy"), ("loss", "loss_curve.png", "loss")]:
        figure, axes = subplots(figsize=(6, 4), dpi=120)
        for split, style in [("train", "-"), ("val", "--"), ("test", ":")]:
            axes.plot(epochs, [row[f"{split}_{metric}"] for row in rows], style, marker="o", markersize=3,
                      label=split)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label + (" (train: with label smoothing)" if metric == "loss" else ""))
        axes.set_title(f"{title}: {label}")
        axes.grid(alpha=0.3)
        axes.legend()
        save(Path(out_dir) / filename, figure)


def upscale(image: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and CAM -> DISPLAY_SIZE float RGB in [0, 1] (bicubic) and CAM (bilinear)."""
    big = Image.fromarray(image).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.BICUBIC)
    big = np.asarray(big, np.float32) / 255
    big_cam = F.interpolate(torch.from_numpy(cam)[None, None], size=(DISPLAY_SIZE, DISPLAY_SIZE), mode="bilinear",
                            align_corners=False)[0, 0].clamp(0, 1).numpy()
    return big, big_cam


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    # imported here: pytorch_grad_cam takes seconds to import and only the CAM figures need it
    from pytorch_grad_cam.utils.image import show_cam_on_image

    big, big_cam = upscale(image, cam)
    return show_cam_on_image(big, big_cam, use_rgb=True, image_weight=0.5)


def pixels(image: np.ndarray) -> Image.Image:
    """The image upscaled with its pixels kept (nearest neighbour)."""
    return Image.fromarray(image).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.NEAREST)


def explanation_figure(image: np.ndarray, cam: np.ndarray, title: str, subtitle: str):
    """Image, map and overlay in a row, titled with what is explained."""
    figure, axes = subplots(1, 3, figsize=(9.6, 3.8), dpi=100)
    axes[0].imshow(pixels(image))
    axes[0].set_title("image (32x32, pixels kept)")
    heat = axes[1].imshow(upscale(image, cam)[1], cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("CAM")
    figure.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(overlay(image, cam))
    axes[2].set_title("overlay")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(f"{title}\n{subtitle}", fontsize=11)
    return figure


def cam_grid_figure(image: np.ndarray, rows: list[str], columns: list[str], cams: dict, captions: dict, title: str):
    """The image beside a grid of overlays: one row per explained class, one column per model, so that every
    row compares the models on the same class. cams/captions are keyed by (row, column)."""
    figure, axes = subplots(len(rows), len(columns) + 1, figsize=(3.2 * (len(columns) + 1), 3.3 * len(rows)),
                            dpi=100, squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(pixels(image))
        axes[r, 0].set_title(f"explaining: {row}", fontsize=10)
        for c, column in enumerate(columns):
            axes[r, c + 1].imshow(overlay(image, cams[row, column]))
            axes[r, c + 1].set_title(f"{column}\n{captions[row, column]}", fontsize=9)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def neighbours_figure(query: np.ndarray, query_label: str, neighbours: list[np.ndarray], labels: list[str],
                      sims: list[float], title: str):
    """A query image and its nearest training images, each titled with its class and cosine similarity."""
    figure, axes = subplots(1, len(neighbours) + 1, figsize=(1.6 * (len(neighbours) + 1), 2.3), dpi=100)
    axes[0].imshow(query)
    axes[0].set_title(f"query\n{query_label}", fontsize=9)
    for axis, image, label, sim in zip(axes[1:], neighbours, labels, sims):
        axis.imshow(image)
        axis.set_title(f"{label}\ncos {sim:.3f}", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return figure


def centroid_similarity_figure(similarity: np.ndarray, names: list[str], title: str):
    figure, axis = subplots(figsize=(7.5, 6.5), dpi=100)
    image = axis.imshow(similarity, cmap="viridis")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            axis.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    figure.colorbar(image, ax=axis)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def tsne_figure(embedded: np.ndarray, labels: np.ndarray, hard: np.ndarray, names: list[str], title: str):
    """2-D embedding coloured by class, hard examples marked with a cross."""
    figure, axis = subplots(figsize=(8, 7), dpi=100)
    for c, name in enumerate(names):
        axis.scatter(*embedded[labels == c].T, s=6, alpha=0.6, label=name, color=TAB10(c))
    axis.scatter(*embedded[hard].T, s=40, marker="x", color="black", label="hard examples")
    axis.legend(markerscale=2, fontsize=8, loc="best")
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    return figure


def corruption_examples_figure(clean: np.ndarray, examples: dict, names: list[str], severities: list[int],
                               title: str):
    """One image under every corruption (rows) at each severity (columns), beside the clean image.
    `examples` maps (name, severity) to an HxWx3 uint8 image."""
    figure, axes = subplots(len(names), len(severities) + 1, figsize=(1.3 * (len(severities) + 1),
                                                                      1.3 * len(names)), dpi=100, squeeze=False)
    for row, name in enumerate(names):
        axes[row, 0].imshow(clean)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        for column, severity in enumerate(severities, start=1):
            axes[row, column].imshow(examples[name, severity])
            if row == 0:
                axes[row, column].set_title(f"severity {severity}", fontsize=8)
    axes[0, 0].set_title("clean", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def reliability_figure(tables: dict, count: int):
    """Reliability diagrams, one row per model, before and after temperature scaling: bars of accuracy per
    confidence bin, the gap to the diagonal, and each bin's count.
    tables: {model: {scaling: (table, ece, (low, high) of its 95% interval)}}."""
    scalings = list(next(iter(tables.values())))
    figure, axes = subplots(len(tables), len(scalings), figsize=(5 * len(scalings), 4.6 * len(tables)),
                            dpi=100, squeeze=False)
    for row, (model, by_scaling) in enumerate(tables.items()):
        for column, scaling in enumerate(scalings):
            table, ece, (low, high) = by_scaling[scaling]
            axis = axes[row, column]
            width = table["bin_high"] - table["bin_low"]
            centres = (table["bin_low"] + table["bin_high"]) / 2
            filled = table["count"] > 0
            axis.bar(centres[filled], table["accuracy"][filled], width=width[filled], color="tab:blue",
                     edgecolor="black", label="accuracy")
            axis.bar(centres[filled], (table["mean_confidence"] - table["accuracy"])[filled],
                     bottom=table["accuracy"][filled], width=width[filled], color="tab:red", alpha=0.35,
                     edgecolor="tab:red", label="gap to confidence")
            axis.plot([0, 1], [0, 1], "k--", linewidth=1)
            for x, n in zip(centres[filled], table["count"][filled]):
                axis.text(x, 0.02, str(int(n)), ha="center", va="bottom", fontsize=6, rotation=90, color="white")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1)
            axis.set_xlabel("confidence (15 equal-width bins)")
            axis.set_ylabel("accuracy")
            axis.set_title(f"{model}, scaling: {scaling}\nECE {ece:.3f} (95% {low:.3f}-{high:.3f}, n={count})")
            axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def risk_coverage_figure(curves: dict, count: int | str):
    """Selective risk against coverage, one panel per model, one line per confidence score.
    curves: {model: {score: (coverage, risk, aurc, (low, high) of its 95% interval)}}; count: the images (n, or
    words that say what they are)."""
    figure, axes = subplots(1, len(curves), figsize=(5.5 * len(curves), 4.3), dpi=100, squeeze=False)
    for axis, (model, by_score) in zip(axes[0], curves.items()):
        for score, (coverage, risk, area, (low, high)) in by_score.items():
            axis.plot(coverage, risk, label=f"{score}: AURC {area:.4f} (95% {low:.4f}-{high:.4f})")
        axis.set_xlabel("coverage")
        axis.set_ylabel("selective risk (error rate among kept)")
        axis.set_title(f"{model} (n={count})" if isinstance(count, int) else f"{model}: {count}", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def severity_figure(table, names: list[str], title: str):
    """Accuracy against severity, one panel per corruption, one line per model with its 95% band
    (`accuracy_low95`, `accuracy_high95`); clean accuracy dashed."""
    columns = 5
    rows = -(-len(names) // columns)
    figure, axes = subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), dpi=100, squeeze=False,
                            sharey=True)
    models = list(dict.fromkeys(table.model))
    for axis, name in zip(axes.flat, names):
        for index, model in enumerate(models):
            rows_of = table[(table.model == model) & (table.corruption == name)]
            clean = table[(table.model == model) & (table.severity == 0)].accuracy.iloc[0]
            colour = TAB10(index)
            axis.plot(rows_of.severity, rows_of.accuracy, marker="o", color=colour, label=model)
            axis.fill_between(rows_of.severity, rows_of.accuracy_low95, rows_of.accuracy_high95, color=colour,
                              alpha=0.15, linewidth=0)
            axis.axhline(clean, color=colour, linestyle="--", linewidth=0.8)
        axis.set_title(name, fontsize=9)
        axis.set_ylim(0, 1)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(names):]:
        axis.axis("off")
    axes[0, 0].legend(fontsize=8, title="dashed: clean", title_fontsize=7)
    figure.supxlabel("severity")
    figure.supylabel("accuracy")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def occlusion_figure(image: np.ndarray, occlusion: np.ndarray, cam: np.ndarray, title: str, patch: int, stride: int):
    """The image, its occlusion sensitivity (the fall in probability, scaled to its maximum) and its Grad-CAM."""
    scaled = np.clip(occlusion, 0, None)
    scaled = scaled / scaled.max() if scaled.max() > 0 else scaled
    figure, axes = subplots(1, 3, figsize=(9.6, 3.8), dpi=100)
    axes[0].imshow(pixels(image))
    axes[0].set_title("image")
    axes[1].imshow(overlay(image, scaled.astype(np.float32)))
    axes[1].set_title(f"occlusion ({patch}x{patch} patch, stride {stride})\nmax fall {occlusion.max():.3f}",
                      fontsize=9)
    axes[2].imshow(overlay(image, cam.astype(np.float32)))
    axes[2].set_title("Grad-CAM", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return figure


def seeds_figure(per_seed, summary, metrics: list[str], count: int):
    """One panel per metric: each seed's value per model (points) and the mean with its 95% t-interval."""
    figure, axes = subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.8), dpi=100, squeeze=False)
    models = list(dict.fromkeys(per_seed.model))
    for axis, metric in zip(axes[0], metrics):
        for x, model in enumerate(models):
            values = per_seed[per_seed.model == model][metric]
            axis.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values, s=18,
                         color=TAB10(x), alpha=0.7)
            row = summary[(summary.model == model) & (summary.metric == metric)].iloc[0]
            if np.isfinite(float(row.t95_low)):
                axis.errorbar(x + 0.3, row["mean"], yerr=[[row["mean"] - row.t95_low], [row.t95_high - row["mean"]]],
                              fmt="o", color="black", capsize=4)
            else:
                axis.plot(x + 0.3, row["mean"], "o", color="black")
        axis.set_xticks(range(len(models)), models)
        axis.set_xlim(-0.5, len(models) - 0.3)
        axis.set_title(metric.replace("_", " "), fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    seeds = per_seed.seed.nunique()
    figure.suptitle(f"{seeds} seeds per model (points), mean and 95% t-interval (black); n={count} test images",
                    fontsize=10)
    figure.tight_layout()
    return figure


def randomisation_figure(image: np.ndarray, cascade: dict, title: str):
    """One row per model: the original Grad-CAM, then the map after each step of the re-initialisation cascade
    (each model its own steps). cascade: {model: {step: cam}}."""
    columns = max(len(maps) for maps in cascade.values())
    figure, axes = subplots(len(cascade), columns, figsize=(2.4 * columns, 2.7 * len(cascade)), dpi=100,
                            squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row, (model, maps) in enumerate(cascade.items()):
        for column, (step, cam) in enumerate(maps.items()):
            axes[row, column].imshow(overlay(image, cam))
            axes[row, column].set_title(f"{model}\n{step}" if column == 0 else step, fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def label_issues_figure(images: np.ndarray, issues, total: int, split: str, columns: int = 8):
    """The most suspicious flagged images (HWC uint8, in the order of `issues`), each titled with its index, the
    given label, the model's suggestion and cleanlab's label quality, so a person can judge the flags by eye."""
    rows = -(-len(images) // columns)
    figure, axes = subplots(rows, columns, figsize=(1.75 * columns, 2.4 * rows), dpi=100, squeeze=False)
    index_column = f"{split}_index"
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, row in zip(axes.flat, images, issues.itertuples()):
        axis.imshow(image)
        axis.set_title(f"#{getattr(row, index_column)}\ngiven {row.given_label}\nmodel {row.suggested_label}\n"
                       f"quality {row.label_quality:.3f}", fontsize=7.5)
    figure.suptitle(f"The {len(images)} most suspicious of the {len(issues)} labels cleanlab flags among n = {total} "
                    f"{split} images (lowest label quality first)", fontsize=10)
    figure.tight_layout()
    return figure


def robust_accuracy_figure(table, title: str) -> Figure:
    """Robust accuracy against the radius: a row of panels per model, one panel per norm, a line per attack with
    its 95% band (one legend entry per attack: the models are the rows); attacks run at one radius only are points;
    dashed: the model's clean accuracy on the same images."""
    norms = [norm for norm in ("Linf", "L2") if (table.norm == norm).any()]
    models = list(dict.fromkeys(table.model))
    attacks = list(dict.fromkeys(table.attack))
    figure, axes = subplots(len(models), len(norms), figsize=(6.5 * len(norms), 4.2 * len(models)), dpi=100,
                            squeeze=False)
    markers = "osD^v<>px"
    for row, model in enumerate(models):
        for column, norm in enumerate(norms):
            axis = axes[row, column]
            scale = 255 if norm == "Linf" else 1
            for a, attack in enumerate(attacks):
                chosen = table[(table.model == model) & (table.norm == norm) & (table.attack == attack)]
                chosen = chosen.sort_values("eps")
                if not len(chosen):
                    continue
                axis.plot(chosen.eps * scale, chosen.robust_accuracy, color=TAB10(a), marker=markers[a % 9],
                          markersize=4, label=attack)
                if len(chosen) > 1:
                    axis.fill_between(chosen.eps * scale, chosen.robust_low95, chosen.robust_high95, color=TAB10(a),
                                      alpha=0.1, linewidth=0)
            clean = table[(table.model == model) & (table.norm == norm)].clean_accuracy.max()
            axis.axhline(clean, color="0.3", linestyle="--", linewidth=0.8)
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xlabel("radius, 1/255" if norm == "Linf" else "L2 radius (pixels in [0, 1])")
            axis.set_ylabel("robust accuracy")
            axis.set_ylim(0, 1)
            axis.set_title(f"{model}, {norm} (dashed: clean accuracy)", fontsize=10)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7, loc="upper right")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def profile_figure(rows: list[dict]) -> Figure:
    """The models across the stress axes, one panel per axis: each model's value with its 95% interval (rates in
    percent), the better direction in the panel's title. `rows`: headline rows with an axis (core.findings)."""
    figure, axes = subplots(1, len(rows), figsize=(2.3 * len(rows) + 0.6, 3.2), dpi=100, squeeze=False)
    models = list(dict.fromkeys(model for row in rows for model in row["values"]))
    for axis, row in zip(axes.flat, rows):
        for m, model in enumerate(models):
            estimate = row["values"].get(model)
            if estimate is None:
                continue
            scale = 100 if estimate["unit"] == "percent" else 1
            value = estimate["value"] * scale
            low = value if estimate["low"] is None else estimate["low"] * scale
            high = value if estimate["high"] is None else estimate["high"] * scale
            axis.errorbar([m], [value], yerr=[[value - low], [high - value]], fmt="o", color=TAB10(m), capsize=4)
        axis.set_xticks(range(len(models)), models, rotation=30, fontsize=8)
        axis.set_xlim(-0.6, len(models) - 0.4)
        unit = next(iter(row["values"].values()))["unit"]
        axis.set_ylabel("%" if unit == "percent" else "", fontsize=8)
        axis.set_title(f"{row['axis']}\n({row['better']} is better; n={row['n']})", fontsize=8)
        axis.tick_params(axis="y", labelsize=8)
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle("Where each model stands (95% intervals)", fontsize=10)
    figure.tight_layout()
    return figure


def distance_figure(per_image, title: str) -> Figure:
    """Top: the least perturbation per correctly classified image, per norm and model; bottom: against the
    model's confidence."""
    norms = [norm for norm in ("linf", "l2") if f"min_{norm}" in per_image]
    figure, axes = subplots(2, len(norms), figsize=(6 * len(norms), 8), dpi=100, squeeze=False)
    for column, norm in enumerate(norms):
        for m, (model, rows) in enumerate(per_image.groupby("model", sort=False)):
            known = rows[np.isfinite(rows[f"min_{norm}"])]
            values = known[f"min_{norm}"] * (255 if norm == "linf" else 1)
            if not len(values):
                continue
            axes[0, column].hist(values, bins=30, alpha=0.5, color=TAB10(m), label=f"{model} (n={len(values)})")
            axes[1, column].scatter(known.confidence, values, s=8, alpha=0.6, color=TAB10(m), label=model)
        unit = "Linf, 1/255" if norm == "linf" else "L2"
        axes[0, column].set_xlabel(f"least perturbation that changes the answer ({unit})")
        axes[0, column].set_ylabel("images")
        axes[1, column].set_xlabel("confidence (maximum softmax probability)")
        axes[1, column].set_ylabel(f"least perturbation ({unit})")
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
            if axis.get_legend_handles_labels()[0]:  # no legend when no distance was found
                axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def adversarial_examples_figure(images: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor, model,
                                class_names: list[str], title: str) -> Figure:
    """Clean image, its perturbation amplified to the full range, and the adversarial image with the new answer."""
    with torch.no_grad():
        before, after = model(images).argmax(1), model(adversarial).argmax(1)
    figure, axes = subplots(3, len(images), figsize=(1.9 * len(images), 6.2), dpi=100, squeeze=False)
    for column in range(len(images)):
        delta = (adversarial[column] - images[column]).cpu()
        scale = float(delta.abs().max()) or 1.0
        truth, answer = class_names[int(labels[column])], class_names[int(before[column])]
        panels = [(images[column].cpu(), f"{truth}\nanswer {answer}"),
                  (delta / (2 * scale) + 0.5, f"x{0.5 / scale:.0f}"),
                  (adversarial[column].cpu(), f"answer {class_names[int(after[column])]}")]
        for row, (picture, text) in enumerate(panels):
            axes[row, column].imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes[row, column].set_title(text, fontsize=7)
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


OOD_HISTOGRAM_SCORES = ("msp", "energy", "knn", "vim")          # a logit and a feature score of each kind
OOD_ROC_SCORES = ("msp", "energy", "odin", "mahalanobis", "knn", "vim")  # at most six lines a panel


def auroc_figure(table, set_names: list[str]) -> Figure:
    """Per model, the AUROC of every score (rows) on every OOD set and their far-set mean (columns)."""
    models = list(dict.fromkeys(table.model))
    columns = [name for name in [*set_names, "far_mean"] if name in set(table.set)]
    scores = list(dict.fromkeys(table.score))
    figure, axes = subplots(1, len(models), figsize=(1.1 * len(columns) * len(models) + 3, 0.42 * len(scores) + 2),
                            dpi=100, squeeze=False)
    for axis, model in zip(axes.flat, models):
        grid = table[table.model == model].pivot(index="score", columns="set", values="auroc").reindex(
            index=scores, columns=columns)
        axis.imshow(grid.to_numpy(dtype=float), vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
        for (r, c), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                axis.text(c, r, f"{100 * value:.1f}", ha="center", va="center", fontsize=7,
                          color="white" if value < 0.8 else "black")
        axis.set_xticks(range(len(columns)), columns, rotation=35, ha="right", fontsize=8)
        axis.set_yticks(range(len(scores)), scores, fontsize=8)
        axis.set_title(f"{model}: AUROC (%), test images vs each set", fontsize=9)
    figure.tight_layout()
    return figure


def ood_histogram_figure(per_image, set_names: list[str]) -> Figure:
    """Per model (rows) and score (columns): the distribution of the score on the test images and on each OOD set."""
    models = list(dict.fromkeys(per_image.model))
    scores = [s for s in OOD_HISTOGRAM_SCORES if s in per_image]
    figure, axes = subplots(len(models), len(scores), figsize=(3.6 * len(scores), 2.8 * len(models)), dpi=100,
                            squeeze=False)
    for row, model in enumerate(models):
        rows = per_image[per_image.model == model]
        for column, score in enumerate(scores):
            axis = axes[row, column]
            values = rows[score].to_numpy(dtype=float)
            bins = np.linspace(np.nanmin(values), np.nanmax(values), 40)
            for k, name in enumerate(["cifar10_test", *set_names]):
                chosen = rows[rows.set == name][score].to_numpy(dtype=float)
                axis.hist(chosen, bins=bins, density=True, histtype="step", linewidth=1.8 if k == 0 else 1.0,
                          color="black" if k == 0 else TAB10(k - 1), label=f"{name} ({len(chosen)})")
            axis.set_title(f"{model}: {score} (higher: more in-distribution)", fontsize=8)
            axis.tick_params(labelsize=7)
        axes[row, 0].legend(fontsize=6)
    figure.tight_layout()
    return figure


def ood_roc_figure(per_image, set_names: list[str]) -> Figure:
    """ROC curves (in-distribution positive) per model (rows) and OOD set (columns), a line per score."""
    from sklearn.metrics import roc_curve

    models = list(dict.fromkeys(per_image.model))
    scores = [s for s in OOD_ROC_SCORES if s in per_image]
    figure, axes = subplots(len(models), len(set_names), figsize=(2.8 * len(set_names), 2.8 * len(models)),
                            dpi=100, squeeze=False)
    for row, model in enumerate(models):
        rows = per_image[per_image.model == model]
        test = rows[rows.set == "cifar10_test"]
        for column, name in enumerate(set_names):
            axis, other = axes[row, column], rows[rows.set == name]
            for k, score in enumerate(scores):
                values = np.concatenate([test[score], other[score]])
                truth = np.concatenate([np.ones(len(test)), np.zeros(len(other))])
                fpr, tpr, _ = roc_curve(truth, values)
                axis.plot(fpr, tpr, color=TAB10(k), linewidth=1, label=score)
            axis.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
            axis.set_title(f"{model} vs {name}", fontsize=8)
            axis.set_xlabel("OOD accepted", fontsize=7)
            axis.set_ylabel("test images accepted", fontsize=7)
            axis.tick_params(labelsize=7)
        axes[row, 0].legend(fontsize=6, loc="lower right")
    figure.tight_layout()
    return figure


def accepted_ood_figure(images: dict, per_image, set_names: list[str], class_names: list[str],
                        count: int) -> Figure:
    """Per model (rows), the OOD images it accepts with the highest confidence, titled with their set, the class
    it gives them and that confidence."""
    models = list(dict.fromkeys(per_image.model))
    figure, axes = subplots(len(models), count, figsize=(1.6 * count, 2.0 * len(models)), dpi=100, squeeze=False)
    for row, model in enumerate(models):
        ood = per_image[(per_image.model == model) & per_image.set.isin(set_names)]
        top = ood.nlargest(count, "confidence")
        for axis in axes[row]:
            axis.axis("off")
        for axis, item in zip(axes[row], top.itertuples()):
            axis.imshow(images[item.set][item.index].transpose(1, 2, 0), interpolation="nearest")
            axis.set_title(f"{model}\n{item.set}\n{class_names[item.prediction]} {item.confidence:.2f}", fontsize=6)
    figure.tight_layout()
    return figure


def correlation_figure(matrices: dict, names: list[str], title: str) -> Figure:
    """Spearman's rho between the per-image stress signals, one heatmap per model ({model: square array})."""
    figure, axes = subplots(1, len(matrices), figsize=(0.55 * len(names) * len(matrices) + 2.5,
                                                      0.5 * len(names) + 2.5), dpi=100, squeeze=False)
    figure.set_layout_engine("constrained")  # the colour bar, the long tick labels and the title without overlap
    for number, (axis, (tag, matrix)) in enumerate(zip(axes[0], matrices.items())):
        image = axis.imshow(matrix, cmap="coolwarm", vmin=-1, vmax=1)
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axis.set_yticks(range(len(names)), names if number == 0 else [], fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                if np.isfinite(matrix[i, j]):
                    axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6)
        axis.set_title(tag)
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8)
    figure.suptitle(title, fontsize=9)
    return figure


def slice_gallery_figure(rows: list[tuple[str, np.ndarray]], columns: int = 8) -> Figure:
    """One row of images (HWC uint8) per failure slice, titled with its description."""
    figure, axes = subplots(len(rows), columns, figsize=(1.4 * columns, 1.9 * len(rows)), dpi=100, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axes_row, (caption, images) in zip(axes, rows):
        for axis, image in zip(axes_row, images[:columns]):
            axis.imshow(image)
        # above the row's first image, as wide as the row (a title would squeeze the axes)
        axes_row[0].text(0, 1.06, caption, transform=axes_row[0].transAxes, fontsize=7.5, va="bottom")
    figure.subplots_adjust(hspace=0.45, wspace=0.05)
    return figure
