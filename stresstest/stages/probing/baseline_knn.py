"""Study B, stage 1 (probing/baseline_knn.py): kNN and linear-head accuracy on a backbone's frozen features, with
Wilson intervals and McNemar's test of one head against the other."""
import numpy as np

from ...core import atomic
from ...core.cli import params_from, run_main
from ...core.findings import Picture, Section, Table, wilson
from ...core.record import write_record
from ...metrics import mcnemar_exact, wilson_interval
from ...plots import confusion_figure, save
from ...probe import SMOKE, Probe, ProbeParams, heads, load_probe, probing_parser, sklearn_knn_predictions


def knn_report(probe: Probe) -> None:
    """probe_accuracy.csv (with Wilson 95% intervals), head_comparison.csv (McNemar's exact test of kNN against
    the linear head on the same test images), per_class_accuracy.csv and confusion_matrices.png in the probe's
    folder."""
    names, labels = probe.class_names, probe.test_labels
    outputs = heads(probe)
    predictions = {"knn": outputs["knn"].argmax(1), "linear": outputs["linear"].argmax(1)}
    sklearn_pred = sklearn_knn_predictions(probe.train_features, probe.train_labels, probe.test_features)
    right = {"knn_dino": predictions["knn"] == labels, "knn_sklearn": sklearn_pred == labels,
             "linear_logreg": predictions["linear"] == labels}
    precision = probe.settings["precision"]
    rows = [{"head": head, "accuracy": round(float(correct.mean()), 6), "test_images": len(labels),
             "feature_precision": precision,
             **{name: round(bound, 6) for name, bound in zip(["low95", "high95"],
                                                             wilson_interval(correct.sum(), len(labels)))}}
            for head, correct in right.items()]
    atomic.write_csv(probe.out_dir / "probe_accuracy.csv", rows, list(rows[0]))
    only_knn, only_linear, p_value = mcnemar_exact(right["knn_dino"], right["linear_logreg"])
    test = {"first": "knn_dino", "second": "linear_logreg", "right_only_first": only_knn,
            "right_only_second": only_linear, "mcnemar_exact_p": round(p_value, 6), "test_images": len(labels)}
    atomic.write_csv(probe.out_dir / "head_comparison.csv", [test], list(test))
    per_class = []
    for c, name in enumerate(names):
        members = labels == c
        per_class.append({"class": name, "images": int(members.sum()),
                          **{f"{head}_accuracy": float((pred[members] == c).mean()) if members.any() else ""
                             for head, pred in predictions.items()}})
    atomic.write_csv(probe.out_dir / "per_class_accuracy.csv", per_class,
                     ["class", "images", "knn_accuracy", "linear_accuracy"])
    save(probe.out_dir / "confusion_matrices.png",
         confusion_figure(labels, {f"{probe.model_name} kNN (DINO)": predictions["knn"],
                                   f"{probe.model_name} linear": predictions["linear"]}, names))
    agreement = float(np.mean(sklearn_pred == predictions["knn"]))
    print(f"{probe.model_name} ({probe.settings['weights']}), {len(labels)} test images: kNN k=20 accuracy "
          f"{right['knn_dino'].mean():.4f} (scikit-learn {right['knn_sklearn'].mean():.4f}, same prediction on "
          f"{agreement:.1%}), linear head {right['linear_logreg'].mean():.4f}; McNemar's exact test: {only_knn} "
          f"images right only for kNN, {only_linear} only for the linear head, p = {p_value:.3g} ({precision} "
          f"features) -> {probe.out_dir}")
    accuracy = Table(["head", "accuracy (Wilson 95%)", "n"],
                     [[head, wilson(int(correct.sum()), len(labels)), len(labels)] for head, correct in right.items()],
                     note=f"{probe.model_name} ({probe.settings['weights']}), frozen {precision} features: kNN with "
                          "the DINO protocol (ours and scikit-learn's) and a logistic-regression head. McNemar's "
                          f"exact test, kNN against the linear head on the same images: {only_knn} right only for "
                          f"kNN, {only_linear} only for the linear head, p = {p_value:.2g}.")
    section = Section(f"Study B: {probe.model_name}, frozen features",
                      lead=Picture(probe.out_dir / "confusion_matrices.png", "confusion matrices"), tables=[accuracy],
                      links=[probe.out_dir / name for name in ["probe_accuracy.csv", "head_comparison.csv",
                                                               "per_class_accuracy.csv"]])
    write_record(f"baseline_knn.{probe.model_name}", {"probe": probe.out_dir}, sections=[section],
                 model=probe.model_name, weights=probe.settings["weights"], precision=precision,
                 test_images=len(labels))


def main(description: str | None, argv: list[str] | None = None) -> None:
    args = probing_parser(description, ProbeParams(), SMOKE).parse_args(argv)
    params = params_from(args, ProbeParams(), SMOKE)
    run_main(lambda: knn_report(load_probe(params)), args.debug)
