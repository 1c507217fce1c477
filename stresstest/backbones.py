"""Study B backbones: torchvision ResNet-50 and ViT-B/16 as frozen feature extractors on CIFAR-10."""
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.error import URLError

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from tqdm import tqdm

from . import atomic
from .cli import UserError
from .device import autocast

IMAGE_SIZE = 224  # CIFAR's 32x32 is resized (not padded) to the resolution the ImageNet weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1 + 14*14, C) ViT tokens -> (B, C, 14, 14) map for CAM methods; the class token is dropped."""
    patches = tokens[:, 1:, :]
    side = int(patches.shape[1] ** 0.5)
    return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., nn.Module]
    weights: object                           # torchvision Weights enum entry
    feature_dim: int
    drop_head: Callable[[nn.Module], None]    # replace the ImageNet head with Identity
    cam_layer: Callable[[nn.Module], nn.Module]
    cam_reshape: Callable | None


BACKBONES = {
    # ResNet-50: the last bottleneck block (7x7 at 224); features are the 2048-d pooled vector.
    "resnet50": BackboneSpec(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, 2048,
                             lambda m: setattr(m, "fc", nn.Identity()), lambda m: m.layer4[-1], None),
    # ViT-B/16: only the class token reaches the head, so gradients past the last attention block are zero
    # for the patch tokens; Grad-CAM uses the LayerNorm before it, reshaped to the 14x14 patch grid.
    "vit_b_16": BackboneSpec(tvm.vit_b_16, tvm.ViT_B_16_Weights.IMAGENET1K_V1, 768,
                             lambda m: setattr(m, "heads", nn.Identity()), lambda m: m.encoder.layers[-1].ln_1,
                             vit_tokens_to_grid),
}


def weights_identity(name: str, weights: str, seed: int) -> str:
    """What identifies the weights, known before loading them (part of the feature-cache key)."""
    if weights == "none":
        return f"random-init(seed={seed})"
    if weights == "default":
        return str(BACKBONES[name].weights)
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"--weights {weights}: no such file; pass a state dict file, 'default' or 'none'")
    return f"file:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def load_backbone(name: str, weights: str, seed: int) -> tuple[nn.Module, str]:
    """The backbone without its ImageNet head, in eval mode, and a string that identifies its weights.

    weights: 'default' (torchvision's ImageNet weights, from its cache or downloaded), 'none' (random
    init from `seed`, for tests and offline use) or the path of a state dict saved earlier."""
    if name not in BACKBONES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    identity = weights_identity(name, weights, seed)
    torch.manual_seed(seed)
    model = spec.build(weights=None)
    if weights == "default":
        try:
            state = spec.weights.get_state_dict(progress=sys.stderr.isatty(), check_hash=True)
        except (URLError, OSError, RuntimeError) as error:
            raise UserError(f"could not load the ImageNet weights of {name} ({getattr(error, 'reason', error)}); "
                            f"when offline, put {spec.weights.url.rsplit('/', 1)[1]} (from {spec.weights.url}) into "
                            f"{torch.hub.get_dir()}/checkpoints/, or pass --weights FILE or --weights none") from None
        model.load_state_dict(state)
    elif weights != "none":
        path = Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise UserError(f"--weights {path} is not a state dict of torchvision's {name} ({first}); "
                            f"pass the matching file, 'default' or 'none'") from None
    spec.drop_head(model)
    return model.eval(), identity


class Preprocess(nn.Module):
    """uint8 32x32 images -> bilinear resize to 224 -> ImageNet normalization, channels-last."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", 255.0 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(images.float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        return ((resized - self.mean) * self.scale).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def extract_features(model: nn.Module, images: torch.Tensor, precision: str, batch_size: int,
                     label: str = "features") -> torch.Tensor:
    """Penultimate features (fp32, on the CPU) of uint8 images held on the model's device."""
    preprocess = Preprocess().to(images.device)
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=label, leave=False, disable=not sys.stderr.isatty()):
        with autocast(images.device, precision):
            chunks.append(model(preprocess(images[start:start + batch_size])).float().cpu())
    return torch.cat(chunks)


def data_fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.md5()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def cached(cache: Path, settings: dict, compute: Callable[[], dict]) -> dict:
    """`cache`'s contents when it was made with exactly `settings`, else computed afresh and cached."""
    if cache.is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:
            stored = {}
        if stored.get("settings") == settings:
            print(f"cache: reusing {cache}", file=sys.stderr)
            return stored
        changed = sorted(k for k in settings if stored.get("settings", {}).get(k) != settings[k])
        print(f"cache: {cache} was made with other settings ({', '.join(changed) or 'unreadable'}); "
              "recomputing", file=sys.stderr)
    result = {**compute(), "settings": settings}
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic.save_torch(cache, result)
    return result
