"""Class activation maps, the one CAM driver of both studies: Grad-CAM batched on the device (below), its
relatives through pytorch_grad_cam.

Imported only where maps are computed: pytorch_grad_cam takes seconds to import."""
import numpy as np
import pytorch_grad_cam as cams
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

METHODS = {
    "gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "hirescam": cams.HiResCAM,
    "xgradcam": cams.XGradCAM, "layercam": cams.LayerCAM, "eigencam": cams.EigenCAM,
    "eigengradcam": cams.EigenGradCAM, "gradcamelementwise": cams.GradCAMElementWise, "scorecam": cams.ScoreCAM,
    "ablationcam": cams.AblationCAM,
}


def scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Each (N, 1, H, W) map shifted to minimum 0 and divided by its maximum (+1e-7), as the package does."""
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + 1e-7)).view_as(maps)


def gradcam_on_device(model: nn.Module, inputs: torch.Tensor, classes, target_layer: nn.Module, batch_size: int,
                      reshape_transform=None, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017) on whole batches, staying on the device: the gradient of each image's
    class logit with respect to the target layer's activations only (autograd.grad: parameters get none),
    channel weights as their spatial mean, ReLU, then the package's post-processing as tensors (scale to
    [0, 1], bilinear upsampling to the input size, ReLU, scale again), optionally under bf16 autocast.
    Equal to pytorch_grad_cam's GradCAM (tests/test_gradcam.py), which post-processes each map in numpy and
    takes every parameter's gradient; bench.py measures both."""
    captured = {}
    handle = target_layer.register_forward_hook(lambda module, args, output: captured.__setitem__("out", output))
    targets = torch.as_tensor(np.asarray(classes), device=inputs.device).long()
    maps, probabilities = [], []
    try:
        for start in range(0, len(inputs), batch_size):
            with torch.enable_grad(), torch.autocast(inputs.device.type, torch.bfloat16, enabled=precision == "bf16"):
                logits = model(inputs[start:start + batch_size]).float()
                chosen = logits.gather(1, targets[start:start + batch_size, None]).sum()
                gradients, = torch.autograd.grad(chosen, captured["out"])
            activations = captured.pop("out").detach()
            if reshape_transform is not None:  # e.g. ViT tokens to a grid, for activations and gradients alike
                activations, gradients = reshape_transform(activations), reshape_transform(gradients)
            weights = gradients.float().mean((2, 3), keepdim=True)
            cam = scale_to_unit((weights * activations.float()).sum(1, keepdim=True).relu())
            cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(scale_to_unit(cam.relu())[:, 0])
            probabilities.append(logits.detach().softmax(1))
    finally:
        handle.remove()
    return torch.cat(maps).cpu().numpy(), torch.cat(probabilities).double().cpu().numpy()


def compute_cams(model: nn.Module, inputs: torch.Tensor, classes, target_layer: nn.Module, method: str = "gradcam",
                 batch_size: int = 64, reshape_transform=None) -> tuple[np.ndarray, np.ndarray]:
    """CAMs (N, H, W) in [0, 1] of normalized fp32 inputs, one target class per image, in batches; and the
    softmax probabilities (N, classes) of the very forward pass that was explained, so a caller can show
    which class that pass predicted (it may differ from a prediction made in another precision).
    Grad-CAM runs batched on the device (gradcam_on_device); the other methods through pytorch_grad_cam."""
    if method == "gradcam":
        return gradcam_on_device(model, inputs, classes, target_layer, batch_size, reshape_transform)
    maps, probabilities = [], []
    with METHODS[method](model=model, target_layers=[target_layer], reshape_transform=reshape_transform) as cam:
        for start in range(0, len(inputs), batch_size):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[start:start + batch_size]]
            maps.append(cam(input_tensor=inputs[start:start + batch_size], targets=targets))
            probabilities.append(cam.outputs.detach().float().softmax(1).cpu().numpy())
    return np.concatenate(maps).astype(np.float32), np.concatenate(probabilities)
