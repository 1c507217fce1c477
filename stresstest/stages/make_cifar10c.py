"""make_cifar10c.py: the CIFAR-10 test set under the 15 CIFAR-10-C corruptions (severities 1-5, CIFAR-10-C's own
parameters, computed in torch) written in CIFAR-10-C's file layout: <name>.npy, labels.npy and manifest.json."""
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core import atomic
from ..core.cli import Common, add_common_args, add_flags, flag, make_parser, params_from, run_main
from ..core.device import describe_device, resolve_device
from ..core.record import write_record
from ..data.cifar10 import data_summary, load_cifar10
from ..data.cifar10c import MANIFEST, corrupted_test_set
from ..data.corruptions import NAMES, SEVERITIES
from ..plots import corruption_examples_figure, save


@dataclass(frozen=True)
class ExportParams(Common):
    out_dir: Path = field(default=Path("data/CIFAR-10-C-style"), metadata=flag(
        "folder for <corruption>.npy, labels.npy and manifest.json"))
    corruptions: tuple = field(default=tuple(NAMES), metadata=flag(
        "corruptions to export", name="--corruption", choices=NAMES, metavar="NAME",
        default_text=f"all 15: {' '.join(NAMES)}"))
    severities: tuple = field(default=tuple(SEVERITIES), metadata=flag(
        "severities to export, in this order (the published layout: 1 2 3 4 5)", int, name="--severity",
        choices=SEVERITIES))


def export(params: ExportParams) -> None:
    names, severities, seed = list(params.corruptions), list(params.severities), params.seed
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    images = torch.from_numpy(data.test_images).to(device)
    examples = {}
    for name in tqdm(names, desc="corruptions", disable=not sys.stderr.isatty()):
        corrupted = corrupted_test_set(images, name, severities, seed)
        atomic.save_npy(out_dir / f"{name}.npy", corrupted)
        examples.update({(name, s): corrupted[i * len(images)] for i, s in enumerate(severities)})
        print(f"{name}: {len(severities)} x {len(images):,} images -> {out_dir / (name + '.npy')}", flush=True)
    save(out_dir / "examples.png", corruption_examples_figure(
        data.test_images[0].transpose(1, 2, 0), examples, names, severities,
        f"test image 0 under each corruption (CIFAR-10-C-style, seed {seed})"))
    atomic.save_npy(out_dir / "labels.npy", np.tile(data.test_labels, len(severities)).astype(np.uint8))
    manifest = {"severities": severities, "images_per_severity": len(images), "seed": seed,
                "source": str(data.root), "corruptions": names,
                "made_by": "make_cifar10c.py (CIFAR-10-C-style: computed here, not the published files)"}
    atomic.write_json(out_dir / MANIFEST, manifest)
    write_record("make_cifar10c", {"cifar10c": out_dir}, data=data_summary(data), device=describe_device(device),
                 seed=seed,
                 corruptions=names, severities=severities)


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = ExportParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the random corruptions (one generator per corruption and severity)")
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    run_main(lambda: export(params_from(args, defaults)), args.debug)
