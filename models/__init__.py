"""Architectures only: the built-in ones, by name (stresstest.core.architecture builds these and any other spec)."""
import torch.nn as nn

from .resnet18 import ResNet18

ARCHITECTURES = {"resnet18": ResNet18}


def build_model(arch: str, num_classes: int) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes)
