"""Training curves."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import atomic  # noqa: E402


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
