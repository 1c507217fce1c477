"""CIFAR-10-C's own file layout: write it from corruptions computed here, read it (ours or the published one).

A folder holds `<corruption>.npy` (uint8, (S*N, 32, 32, 3), severity-major: all N test images at the first
severity, then the next) and `labels.npy` (uint8, S*N). The published folder has S = 5 (severities 1-5);
a folder written here for fewer severities says which in `manifest.json`."""
import json
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from .corruptions import SEVERITIES, corrupt, severity_generator

MANIFEST = "manifest.json"
BLOCK = 1000  # images corrupted at once; fixed, since the random draws follow the blocks (a seed is a data set)


def corrupted_images(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) images on the device under one corruption and severity, drawn block by block."""
    generator = severity_generator(seed, name, severity, images.device)
    return torch.cat([corrupt(images[start:start + BLOCK], name, severity, generator)
                      for start in range(0, len(images), BLOCK)])


def corrupted_test_set(images: torch.Tensor, name: str, severities: list[int], seed: int) -> np.ndarray:
    """(len(severities) * N, 32, 32, 3) uint8, severity-major, from uint8 (N, 3, 32, 32) images on the device."""
    return np.concatenate([corrupted_images(images, name, severity, seed).permute(0, 2, 3, 1).cpu().numpy()
                           for severity in severities])


def read_cifar10c(folder: Path, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, 32, 32) uint8 and labels (N,) int64 of one corruption at one severity."""
    folder = Path(folder)
    labels_path, images_path = folder / "labels.npy", folder / f"{name}.npy"
    for path in [labels_path, images_path]:
        if not path.is_file():
            raise UserError(f"{path} not found: --cifar10c-dir must hold CIFAR-10-C's <corruption>.npy and "
                            "labels.npy (the published files, or make_cifar10c.py's)")
    manifest_path = folder / MANIFEST
    severities = json.loads(manifest_path.read_text())["severities"] if manifest_path.is_file() else SEVERITIES
    if severity not in severities:
        raise UserError(f"{folder} holds severities {severities} only, not {severity}; "
                        f"make it again with make_cifar10c.py --severity {severity}")
    labels = np.load(labels_path)
    images = np.load(images_path, mmap_mode="r")
    count = len(labels) // len(severities)
    if (len(labels) % len(severities) or images.dtype != np.uint8 or images.shape != (len(labels), 32, 32, 3)):
        raise UserError(f"{images_path} is not in CIFAR-10-C's layout (uint8 {len(labels)} x 32 x 32 x 3 to match "
                        f"labels.npy, got {images.dtype} {images.shape}); replace it")
    block = severities.index(severity)
    chosen = slice(block * count, (block + 1) * count)
    return np.ascontiguousarray(images[chosen].transpose(0, 3, 1, 2)), labels[chosen].astype(np.int64)
