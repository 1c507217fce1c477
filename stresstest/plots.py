"""Figures: training curves and CAM explanations."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from . import atomic  # noqa: E402


DISPLAY_SIZE = 256  # pixels per panel: 32x32 upscaled 8x


def confusion_figure(labels, predictions: dict, class_names: list[str], path: Path) -> None:
    """Confusion matrices side by side, one per {title: predicted labels}, each titled with its accuracy."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    figure, axes = plt.subplots(1, len(predictions), figsize=(7.5 * len(predictions), 6.5), dpi=100)
    for axis, (title, predicted) in zip(np.atleast_1d(axes), predictions.items()):
        matrix = confusion_matrix(labels, predicted, labels=range(len(class_names)))
        ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(ax=axis, colorbar=False,
                                                                        xticks_rotation=45, cmap="Blues")
        axis.set_title(f"{title}: accuracy {(predicted == labels).mean():.3f}")
    figure.tight_layout()
    atomic.save_figure(path, figure)
    plt.close(figure)


def plot_curves(rows: list[dict], out_dir: Path, title: str) -> None:
    """accuracy_curve.png and loss_curve.png: train, validation and test per epoch."""
    epochs = [row["epoch"] for row in rows]
    for metric, filename, label in [("acc", "accuracy_curve.png", "accuracy"), ("loss", "loss_curve.png", "loss")]:
        figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
        for split, style in [("train", "-"), ("val", "--"), ("test", ":")]:
            axes.plot(epochs, [row[f"{split}_{metric}"] for row in rows], style, marker="o", markersize=3,
                      label=split)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label + (" (train: with label smoothing)" if metric == "loss" else ""))
        axes.set_title(f"{title}: {label}")
        axes.grid(alpha=0.3)
        axes.legend()
        atomic.save_figure(Path(out_dir) / filename, figure)
        plt.close(figure)


def upscale(image: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32x32 RGB uint8 and CAM -> DISPLAY_SIZE float RGB in [0, 1] (bicubic) and CAM (bilinear)."""
    big = np.asarray(Image.fromarray(image).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.BICUBIC), np.float32) / 255
    big_cam = F.interpolate(torch.from_numpy(cam)[None, None], size=(DISPLAY_SIZE, DISPLAY_SIZE), mode="bilinear",
                            align_corners=False)[0, 0].clamp(0, 1).numpy()
    return big, big_cam


def explanation_figure(image: np.ndarray, cam: np.ndarray, title: str, subtitle: str):
    big, big_cam = upscale(image, cam)
    figure, axes = plt.subplots(1, 3, figsize=(9.6, 3.8), dpi=100)
    axes[0].imshow(Image.fromarray(image).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.NEAREST))
    axes[0].set_title("image (32x32, pixels kept)")
    heat = axes[1].imshow(big_cam, cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("CAM")
    figure.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04)
    # imported here: pytorch_grad_cam takes seconds to import and only the CAM stages draw these figures
    from pytorch_grad_cam.utils.image import show_cam_on_image

    axes[2].imshow(show_cam_on_image(big, big_cam, use_rgb=True, image_weight=0.5))
    axes[2].set_title("overlay")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(f"{title}\n{subtitle}", fontsize=11)
    return figure
