"""Stages 3 and 6: Grad-CAM (pytorch_grad_cam) of a checkpoint on every saved failure case."""
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_grad_cam as cams  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from . import atomic  # noqa: E402
from .cases import read_cases  # noqa: E402
from .checkpoint import load_classifier  # noqa: E402
from .cli import UserError, add_common_args, make_parser, positive_int, run_main  # noqa: E402
from .data import Normalizer  # noqa: E402
from .device import pick_precision, resolve_device  # noqa: E402
from .plots import explanation_figure  # noqa: E402
from .predict import probabilities  # noqa: E402

METHODS = {
    "gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "hirescam": cams.HiResCAM,
    "xgradcam": cams.XGradCAM, "layercam": cams.LayerCAM, "eigencam": cams.EigenCAM,
    "eigengradcam": cams.EigenGradCAM, "gradcamelementwise": cams.GradCAMElementWise, "scorecam": cams.ScoreCAM,
    "ablationcam": cams.AblationCAM,
}
# layer3 gives an 8x8 map for a 32x32 input (each cell sees a 4x4 patch); layer4 is only 4x4, too coarse to
# tell an object from its background, while layer3 is still deep enough (6 of 8 blocks) to be class-specific.
DEFAULT_LAYER = "layer3"


def compute_cams(model: torch.nn.Module, images: torch.Tensor, classes: list[int], method: str, layer: str,
                 batch_size: int) -> np.ndarray:
    """(N, H, W) CAMs in [0, 1] for normalized images, one target class per image, batched."""
    try:
        target_layer = model.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name.startswith("layer") and name.count(".") <= 1]
        raise UserError(f"--layer {layer} is not a layer of this model; choose one of {', '.join(names)}") from None
    maps = []
    with METHODS[method](model=model, target_layers=[target_layer]) as cam:
        for start in range(0, len(images), batch_size):
            targets = [ClassifierOutputTarget(c) for c in classes[start:start + batch_size]]
            maps.append(cam(input_tensor=images[start:start + batch_size], targets=targets))
    return np.concatenate(maps).astype(np.float32)


def explain(cases_dir: Path, checkpoint_path: Path, producer: str, tag: str, device_name: str, method: str,
            layer: str, target: str, batch_size: int) -> list[dict]:
    device = resolve_device(device_name)
    cases = read_cases(cases_dir)
    model, checkpoint = load_classifier(checkpoint_path, producer, device)
    class_names = checkpoint["class_names"]
    for case in cases:
        if case.get("true_label") not in class_names:
            raise UserError(f"{case['path'] / 'meta.txt'} names class {case.get('true_label')!r}, which "
                            f"{checkpoint_path} does not know; run failure_analysis.py again")
    images = np.stack([np.asarray(Image.open(case["path"] / "image.png").convert("RGB")) for case in cases])
    images_on_device = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    probs = probabilities(model, checkpoint, images_on_device, pick_precision(device)).cpu().numpy()
    normalization = checkpoint["normalization"]
    inputs = Normalizer(normalization["mean"], normalization["std"], device)(images_on_device)
    predicted = probs.argmax(1)
    true = np.array([class_names.index(case["true_label"]) for case in cases])
    targets = (predicted if target == "predicted" else true).tolist()
    maps = compute_cams(model, inputs, targets, method, layer, batch_size)
    results = []
    for case, image, cam, pred, prob, target_class in zip(cases, images, maps, predicted, probs, targets):
        title = (f"{case['case']} (test #{case['test_index']}): true {case['true_label']}, "
                 f"{tag} model predicts {class_names[pred]} ({prob[pred]:.3f})")
        subtitle = (f"{method} on {layer}, explaining the {target} class ({class_names[target_class]}, "
                    f"p={prob[target_class]:.3f})")
        figure = explanation_figure(image, cam, title, subtitle)
        atomic.save_figure(case["path"] / f"gradcam_{tag}.png", figure)
        plt.close(figure)
        buffer = io.BytesIO()
        np.save(buffer, cam)
        atomic.write_bytes(case["path"] / f"gradcam_{tag}.npy", buffer.getvalue())
        results.append({"case": case["case"], "predicted": class_names[pred], "confidence": float(prob[pred])})
    print(f"{method} on {layer} ({target} class) for {len(cases)} cases: {cases_dir}/case_*/gradcam_{tag}.png")
    return results


def main(description: str, tag: str, checkpoint: str, producer: str) -> None:
    parser = make_parser(description)
    add_common_args(parser)
    parser.add_argument("--checkpoint", type=Path, default=Path(checkpoint), help="model to explain")
    parser.add_argument("--cases-dir", type=Path, default=Path("failure_cases/baseline"),
                        help="case_XX folders written by failure_analysis.py")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS), help="CAM method of pytorch_grad_cam")
    parser.add_argument("--layer", default=DEFAULT_LAYER,
                        help="target layer (layer3: 8x8 map; layer4 is only 4x4 on 32x32 inputs)")
    parser.add_argument("--target", default="predicted", choices=["predicted", "true"],
                        help="class to explain: the model's prediction (why it went wrong) or the true class")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per Grad-CAM batch")
    parser.add_argument("--smoke", action="store_true", help="accepted for pipeline symmetry; changes nothing")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    run_main(lambda: explain(args.cases_dir, args.checkpoint, producer, tag, args.device, args.method, args.layer,
                             args.target, args.batch_size))
