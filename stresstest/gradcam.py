"""Grad-CAM and its relatives through pytorch_grad_cam: the one CAM driver of both studies.

Imported only where maps are computed: pytorch_grad_cam takes seconds to import."""
import numpy as np
import pytorch_grad_cam as cams
import torch
import torch.nn as nn
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

METHODS = {
    "gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "hirescam": cams.HiResCAM,
    "xgradcam": cams.XGradCAM, "layercam": cams.LayerCAM, "eigencam": cams.EigenCAM,
    "eigengradcam": cams.EigenGradCAM, "gradcamelementwise": cams.GradCAMElementWise, "scorecam": cams.ScoreCAM,
    "ablationcam": cams.AblationCAM,
}


def compute_cams(model: nn.Module, inputs: torch.Tensor, classes, target_layer: nn.Module, method: str = "gradcam",
                 batch_size: int = 64, reshape_transform=None) -> tuple[np.ndarray, np.ndarray]:
    """CAMs (N, H, W) in [0, 1] of normalized fp32 inputs, one target class per image, in batches; and the
    softmax probabilities (N, classes) of the very forward pass that was explained, so a caller can show
    which class that pass predicted (it may differ from a prediction made in another precision)."""
    maps, probabilities = [], []
    with METHODS[method](model=model, target_layers=[target_layer], reshape_transform=reshape_transform) as cam:
        for start in range(0, len(inputs), batch_size):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[start:start + batch_size]]
            maps.append(cam(input_tensor=inputs[start:start + batch_size], targets=targets))
            probabilities.append(cam.outputs.detach().float().softmax(1).cpu().numpy())
    return np.concatenate(maps).astype(np.float32), np.concatenate(probabilities)
