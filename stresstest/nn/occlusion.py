"""Occlusion sensitivity (Zeiler & Fergus 2014), every patch position of every image in one batched pass."""
import numpy as np
import torch

from .inference import REPORTED_PRECISION, checkpoint_normalizer, inference_model, run_batched


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Where an occluding patch starts along one side: every `stride` pixels, and flush with the far edge."""
    return sorted(set(range(0, size - patch + 1, stride)) | {size - patch})


def occlusion_maps(model: torch.nn.Module, checkpoint: dict, images: torch.Tensor, classes: np.ndarray,
                   patch: int, stride: int) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014): for every position of a patch of the training mean colour,
    how much the probability of `classes` falls; each pixel gets the mean fall over the patches covering it.
    Every position of every image goes through the model in one batched pass, in fp32. (N, 32, 32)."""
    size = images.shape[-1]
    starts = patch_starts(size, patch, stride)
    positions = [(top, left) for top in starts for left in starts]
    fill = torch.tensor([round(255 * m) for m in checkpoint["normalization"]["mean"]], dtype=torch.uint8,
                        device=images.device).view(3, 1, 1)
    occluded = images[:, None].repeat(1, len(positions), 1, 1, 1)
    cover = torch.zeros(len(positions), size, size, device=images.device)
    for p, (top, left) in enumerate(positions):
        occluded[:, p, :, top:top + patch, left:left + patch] = fill
        cover[p, top:top + patch, left:left + patch] = 1
    normalizer = checkpoint_normalizer(checkpoint, images.device)
    fused = inference_model(model)
    rows = torch.arange(len(images), device=images.device)
    targets = torch.as_tensor(classes, device=images.device)
    base = run_batched(fused, images, normalizer, REPORTED_PRECISION).softmax(1)[rows, targets]
    probs = run_batched(fused, occluded.flatten(0, 1), normalizer, REPORTED_PRECISION).softmax(1)
    occluded_prob = probs.view(len(images), len(positions), -1)[rows, :, targets]  # (N, positions)
    fall = (base[:, None] - occluded_prob)
    maps = torch.einsum("np,phw->nhw", fall, cover) / cover.sum(0)
    return maps.cpu().numpy()
