"""CIFAR-10-C's own file layout: write it from corruptions computed here, read it (ours or the published one).

A folder holds `<corruption>.npy` (uint8, (S*N, 32, 32, 3), severity-major: all N test images at the first
severity, then the next) and `labels.npy` (uint8, S*N). The published folder has S = 5 (severities 1-5);
a folder written here for fewer severities says which in `manifest.json`."""
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import atomic
from .cli import add_common_args, make_parser, run_main
from .corruptions import NAMES, SEVERITIES, corrupt, severity_generator
from .data import load_cifar10
from .device import resolve_device
from .errors import UserError
from .plots import corruption_examples_figure, save

MANIFEST = "manifest.json"
BLOCK = 1000  # images corrupted at once; fixed, since the random draws follow the blocks (a seed is a data set)


def save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic.write_bytes(path, buffer.getvalue())


def corrupted_images(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) images on the device under one corruption and severity, drawn block by block."""
    generator = severity_generator(seed, name, severity, images.device)
    return torch.cat([corrupt(images[start:start + BLOCK], name, severity, generator)
                      for start in range(0, len(images), BLOCK)])


def corrupted_test_set(images: torch.Tensor, name: str, severities: list[int], seed: int) -> np.ndarray:
    """(len(severities) * N, 32, 32, 3) uint8, severity-major, from uint8 (N, 3, 32, 32) images on the device."""
    return np.concatenate([corrupted_images(images, name, severity, seed).permute(0, 2, 3, 1).cpu().numpy()
                           for severity in severities])


def export(data_dir: Path, out_dir: Path, names: list[str], severities: list[int], seed: int,
           device_name: str) -> None:
    device = resolve_device(device_name)
    data = load_cifar10(data_dir)
    out_dir = atomic.ensure_writable_dir(out_dir)
    images = torch.from_numpy(data.test_images).to(device)
    examples = {}
    for name in tqdm(names, desc="corruptions", disable=not sys.stderr.isatty()):
        corrupted = corrupted_test_set(images, name, severities, seed)
        save_npy(out_dir / f"{name}.npy", corrupted)
        examples.update({(name, s): corrupted[i * len(images)] for i, s in enumerate(severities)})
        print(f"{name}: {len(severities)} x {len(images):,} images -> {out_dir / (name + '.npy')}", flush=True)
    save(out_dir / "examples.png", corruption_examples_figure(
        data.test_images[0].transpose(1, 2, 0), examples, names, severities,
        f"test image 0 under each corruption (CIFAR-10-C-style, seed {seed})"))
    save_npy(out_dir / "labels.npy", np.tile(data.test_labels, len(severities)).astype(np.uint8))
    manifest = {"severities": severities, "images_per_severity": len(images), "seed": seed,
                "source": str(data.root), "corruptions": names,
                "made_by": "make_cifar10c.py (CIFAR-10-C-style: computed here, not the published files)"}
    atomic.write_json(out_dir / MANIFEST, manifest)


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


def main(description: str, argv=None) -> None:
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the random corruptions (one generator per corruption and severity)")
    parser.add_argument("--out-dir", type=Path, default=Path("data/CIFAR-10-C-style"),
                        help="folder for <corruption>.npy, labels.npy and manifest.json")
    parser.add_argument("--corruption", nargs="+", choices=NAMES, default=NAMES, metavar="NAME",
                        help=f"corruptions to export (default all 15: {' '.join(NAMES)})")
    parser.add_argument("--severity", nargs="+", type=int, choices=SEVERITIES, default=SEVERITIES,
                        help="severities to export, in this order (default 1 2 3 4 5, the published layout)")
    args = parser.parse_args(argv)
    run_main(lambda: export(args.data_dir, args.out_dir, list(dict.fromkeys(args.corruption)),
                            list(dict.fromkeys(args.severity)), args.seed, args.device))
