"""Which layer Grad-CAM explains, for any classifier: a deliberate choice for the built-in network, a rule for
the rest (the deepest convolution whose map is still at least MIN_SIDE x MIN_SIDE at the model's input size; a
1x1 map would say nothing about where), and token models' last attention block reshaped to its patch grid."""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.checkpoint import input_size
from ..core.errors import UserError

# layer3 gives an 8x8 map for a 32x32 input (each cell sees a 4x4 patch); layer4 is only 4x4, too coarse to
# tell an object from its background, while layer3 is still deep enough (6 of 8 blocks) to be class-specific.
BUILT_IN_LAYERS = {"resnet18": "layer3"}
MIN_SIDE = 4
AUTO = "auto"


def last_child(model: nn.Module, path: str) -> nn.Module:
    """The last module inside the container at `path` (`layer4[-1]`: last_child(model, "layer4"))."""
    return list(model.get_submodule(path).children())[-1]


class TokensToGrid:
    """(B, prefix + side*side, C) transformer tokens -> (B, C, side, side), the class/register tokens dropped."""

    def __init__(self, prefix_tokens: int):
        self.prefix_tokens = prefix_tokens

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix_tokens:, :]
        side = int(round(patches.shape[1] ** 0.5))
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class CamTarget:
    name: str                       # the module's name in the model, as --layer takes it
    module: nn.Module
    grid: tuple                     # (height, width) of its map at the model's input size
    reshape: Callable | None = None  # token models: tokens to a grid

    def describe(self) -> str:
        return f"{self.name} ({self.grid[0]}x{self.grid[1]})"


def token_layer(model: nn.Module) -> tuple[nn.Module, int] | None:
    """The LayerNorm before the last attention block of a torchvision or timm ViT, and its prefix tokens. Only the
    class token reaches the head, so gradients after the last block's attention are zero for the patch tokens."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "layers") and hasattr(model, "class_token"):  # torchvision
        return last_child(model, "encoder.layers").get_submodule("ln_1"), 1
    blocks = getattr(model, "blocks", None)
    prefix_tokens = getattr(model, "num_prefix_tokens", None)
    if blocks is not None and isinstance(prefix_tokens, int) and hasattr(blocks[-1], "norm1"):  # timm
        return last_child(model, "blocks").get_submodule("norm1"), prefix_tokens
    return None


def output_shapes(model: nn.Module, modules: dict, side: int) -> dict:
    """{name: output shape} of `modules` for one zero image of side x side, in the order they ran."""
    shapes, handles = {}, []

    def record(name):
        def hook(module, args, output):  # returns None: the output passes on unchanged
            shapes.setdefault(name, tuple(output.shape))
        return hook
    for name, module in modules.items():
        handles.append(module.register_forward_hook(record(name)))
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, side, side, device=device))
    except Exception as error:
        raise UserError(f"the model fails on a {side}x{side} input ({str(error).splitlines()[0][:150]})") from None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def cam_target(model: nn.Module, checkpoint: dict, layer: str = AUTO) -> CamTarget:
    """The layer to explain: `layer` by name, or (AUTO) the built-in choice, a token model's last block, or the
    deepest convolution whose map is at least MIN_SIDE on each side."""
    side = input_size(checkpoint)
    modules = dict(model.named_modules())
    tokens = token_layer(model)
    if layer == AUTO:
        if checkpoint["arch"] in BUILT_IN_LAYERS:
            layer = BUILT_IN_LAYERS[checkpoint["arch"]]
        elif tokens is not None:
            layer = next(name for name, module in modules.items() if module is tokens[0])
        else:
            convolutions = {name: m for name, m in modules.items() if isinstance(m, nn.Conv2d)}
            if not convolutions:
                raise UserError(f"{checkpoint['arch']} has no convolution and is no known token model: pass --layer "
                                "NAME, a module whose output is an (N, C, H, W) map")
            shapes = output_shapes(model, convolutions, side)
            large = [name for name, shape in shapes.items() if min(shape[-2:]) >= MIN_SIDE]
            if not large:
                raise UserError(f"every convolution of {checkpoint['arch']} maps a {side}x{side} input to less than "
                                f"{MIN_SIDE}x{MIN_SIDE}; pass --layer NAME")
            layer = large[-1]
    if layer not in modules or not layer:
        candidates = [name for name, m in modules.items() if name and isinstance(m, (nn.Conv2d, nn.Sequential))]
        raise UserError(f"--layer {layer} is not a module of this model; candidates: {', '.join(candidates[-12:])}")
    module = modules[layer]
    shape = output_shapes(model, {layer: module}, side).get(layer)
    if shape is None:
        raise UserError(f"--layer {layer} is not used in the model's forward pass; choose another")
    if len(shape) == 3 and tokens is not None:
        grid = TokensToGrid(tokens[1])
        side_tokens = int(round((shape[1] - tokens[1]) ** 0.5))
        return CamTarget(layer, module, (side_tokens, side_tokens), grid)
    if len(shape) != 4:
        raise UserError(f"--layer {layer} outputs shape {shape}, not an (N, C, H, W) map; choose a convolutional layer")
    return CamTarget(layer, module, tuple(shape[-2:]))


def to_image_size(maps: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W) maps computed at a model's input size brought to the images' side (area averaging)."""
    if maps.shape[-1] == side:
        return maps
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(maps))[:, None].float(), size=(side, side),
                            mode="area")
    return resized[:, 0].numpy()
