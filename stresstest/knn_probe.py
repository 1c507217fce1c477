"""Study B, stage 1 (probing/baseline_knn.py): kNN and linear-head accuracy on a backbone's frozen features."""
import numpy as np

from . import atomic
from .cli import run_main
from .plots import confusion_figure
from .probe import Probe, heads, probe_from_args, probing_parser, sklearn_knn_predictions


def knn_report(probe: Probe) -> None:
    """probe_accuracy.csv, per_class_accuracy.csv and confusion_matrices.png in the probe's folder."""
    names, labels = probe.class_names, probe.test_labels
    outputs = heads(probe)
    predictions = {"knn": outputs["knn"].argmax(1), "linear": outputs["linear"].argmax(1)}
    sklearn_pred = sklearn_knn_predictions(probe.train_features, probe.train_labels, probe.test_features)
    accuracy = {head: float((pred == labels).mean()) for head, pred in predictions.items()}
    sklearn_accuracy = float((sklearn_pred == labels).mean())
    rows = [{"head": "knn_dino", "accuracy": accuracy["knn"], "test_images": len(labels)},
            {"head": "knn_sklearn", "accuracy": sklearn_accuracy, "test_images": len(labels)},
            {"head": "linear_logreg", "accuracy": accuracy["linear"], "test_images": len(labels)}]
    atomic.write_csv(probe.out_dir / "probe_accuracy.csv", rows, ["head", "accuracy", "test_images"])
    per_class = []
    for c, name in enumerate(names):
        members = labels == c
        per_class.append({"class": name, "images": int(members.sum()),
                          **{f"{head}_accuracy": float((pred[members] == c).mean()) if members.any() else ""
                             for head, pred in predictions.items()}})
    atomic.write_csv(probe.out_dir / "per_class_accuracy.csv", per_class,
                     ["class", "images", "knn_accuracy", "linear_accuracy"])
    confusion_figure(labels, {f"{probe.model_name} kNN (DINO)": predictions["knn"],
                              f"{probe.model_name} linear": predictions["linear"]}, names,
                     probe.out_dir / "confusion_matrices.png")
    agreement = float(np.mean(sklearn_pred == predictions["knn"]))
    print(f"{probe.model_name} ({probe.settings['weights']}), {len(labels)} test images: kNN k=20 accuracy "
          f"{accuracy['knn']:.4f} (scikit-learn {sklearn_accuracy:.4f}, same prediction on {agreement:.1%}), "
          f"linear head {accuracy['linear']:.4f} -> {probe.out_dir}")


def main(description: str, argv=None) -> None:
    args = probing_parser(description).parse_args(argv)
    run_main(lambda: knn_report(probe_from_args(args)))
