"""Grad-CAM of a checkpoint on every saved failure case: the one implementation of stages 3 and 6
(explainability.py and explainability_improved.py differ only in their TwinSettings).

Each model's maps are computed for three classes per case: its own prediction, the true class and the
case's failure class (what the analysed model predicted). `gradcam_<tag>.png` shows the one --target
asks for; `gradcam_<tag>.npz` keeps all three; once both models are explained, `gradcam_side_by_side.png`
puts their maps for the same classes next to each other, so that they are compared like with like."""
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .core import atomic, paths
from .core.cases import read_cases
from .core.checkpoint import load_classifier, model_card
from .core.cli import (SEED_UNUSED, Common, add_common_args, add_flags, flag, make_parser, params_from, positive_int,
                       run_main)
from .core.device import describe_device, resolve_device
from .core.errors import UserError
from .core.record import write_record
from .nn.cam_layers import AUTO, MIN_SIDE, cam_target, to_image_size
from .nn.gradcam import METHODS, compute_cams
from .nn.inference import REPORTED_PRECISION, checkpoint_normalizer, probabilities
from .plots import cam_grid_figure, explanation_figure, save

ROLES = ["predicted", "true", "failure"]  # the model's own prediction, the true class, the case's failure class
SIDE_BY_SIDE = "gradcam_side_by_side.png"


@dataclass(frozen=True)
class TwinSettings:
    """What tells the two explanation stages apart."""
    stage: str  # the script, as its record is named
    tag: str    # which study A model: baseline or improved


@dataclass(frozen=True)
class ExplainParams(Common):
    checkpoint: Path = field(default=paths.checkpoint_path("baseline"), metadata=flag("model to explain"))
    cases_dir: Path = field(default=paths.CASES_DIR, metadata=flag(
        f"case_XX folders written by {paths.CASES_PRODUCER}"))
    method: str = field(default="gradcam", metadata=flag("CAM method of pytorch_grad_cam", choices=list(METHODS)))
    layer: str = field(default=AUTO, metadata=flag(
        "target layer by module name; auto: layer3 of the built-in ResNet-18 (8x8 map; layer4 is only 4x4), else "
        f"the deepest convolution whose map is at least {MIN_SIDE}x{MIN_SIDE} at the model's input size (a ViT: "
        "the norm before its last block, as a token grid)"))
    target: str = field(default="predicted", metadata=flag(
        "class that gradcam_<model>.png explains: this model's prediction, the true class, or the case's failure "
        "class (what the analysed model predicted); the .npz keeps all three", choices=ROLES))
    batch_size: int = field(default=128, metadata=flag("images per Grad-CAM batch", positive_int))


def save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic.write_bytes(path, buffer.getvalue())


def explain(params: ExplainParams, settings: TwinSettings) -> None:
    tag, cases_dir, checkpoint_path = settings.tag, params.cases_dir, params.checkpoint
    method, layer, role = params.method, params.layer, params.target
    device = resolve_device(params.device)
    cases = read_cases(cases_dir)
    model, checkpoint = load_classifier(checkpoint_path, paths.producer(tag), device)
    names = checkpoint["class_names"]
    for case in cases:
        for key in ["true_label", "predicted_label"]:
            if case.get(key) not in names:
                raise UserError(f"{case['path'] / 'meta.txt'} names class {case.get(key)!r}, which "
                                f"{checkpoint_path} does not know; run {paths.CASES_PRODUCER} again")
    target = cam_target(model, checkpoint, layer)
    layer = target.describe()  # its name and map size, in every title
    images = np.stack([np.asarray(Image.open(case["path"] / "image.png").convert("RGB")) for case in cases])
    on_device = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    probs = probabilities(model, checkpoint, on_device).cpu().numpy()
    classes = {"predicted": probs.argmax(1),
               "true": np.array([names.index(case["true_label"]) for case in cases]),
               "failure": np.array([names.index(case["predicted_label"]) for case in cases])}
    inputs = checkpoint_normalizer(checkpoint, device)(on_device)
    count = len(cases)
    maps, _ = compute_cams(model, inputs.repeat(len(ROLES), 1, 1, 1), np.concatenate([classes[r] for r in ROLES]),
                           target.module, method, params.batch_size, target.reshape)
    maps = to_image_size(maps, images.shape[1])  # a model fed resized inputs: maps back on the image's pixels
    maps = maps.reshape(len(ROLES), count, *maps.shape[1:])
    shown = ROLES.index(role)
    for i, case in enumerate(cases):
        explained = classes[role][i]
        pred = classes["predicted"][i]
        title = (f"{case['case']} (test #{case['test_index']}): true {case['true_label']}, "
                 f"{tag} model predicts {names[pred]} ({probs[i, pred]:.3f})")
        subtitle = (f"{method} on {layer} explaining {names[explained]} (the {role} class, "
                    f"p={probs[i, explained]:.3f})")
        save(case["path"] / f"gradcam_{tag}.png", explanation_figure(images[i], maps[shown, i], title, subtitle))
        save_npz(case["path"] / f"gradcam_{tag}.npz", maps=maps[:, i], roles=np.array(ROLES),
                 classes=np.array([names[classes[r][i]] for r in ROLES]), probabilities=probs[i],
                 class_names=np.array(names), method=np.array(method), layer=np.array(target.name),
                 layer_map=np.array(layer))
    print(f"{method} on {layer} of {checkpoint['arch']} for {count} cases, explaining the {role} class: "
          f"{cases_dir}/case_*/gradcam_{tag}.png")
    side_by_side(cases, images)
    write_record(settings.stage, {"cases": cases_dir}, {"checkpoint": checkpoint_path}, model=tag, method=method,
                 layer=target.name, layer_map=layer, target=role, cases=count,
                 models={tag: model_card(checkpoint, checkpoint_path)}, device=describe_device(device),
                 precision=REPORTED_PRECISION)


def side_by_side(cases: list[dict], images: np.ndarray) -> None:
    """gradcam_side_by_side.png in every case whose folder has the maps of every model (same method; each model's
    layer named in the title): rows are the true class and the failure class, columns the models."""
    tags = list(paths.RUNS)
    written = 0
    for case, image in zip(cases, images):
        files = [case["path"] / f"gradcam_{tag}.npz" for tag in tags]
        if not all(f.is_file() for f in files):
            continue
        stored = {}
        for tag, f in zip(tags, files):
            with np.load(f) as arrays:
                stored[tag] = dict(arrays)
        methods = {str(s["method"]) for s in stored.values()}
        if len(methods) != 1:
            print(f"{case['case']}: the models' maps use different methods ({sorted(methods)}); rerun both "
                  f"explanation stages with the same --method for {SIDE_BY_SIDE}")
            continue
        method = methods.pop()
        layers = ", ".join(f"{tag} {s.get('layer_map', s['layer'])}" for tag, s in stored.items())
        rows, cams, captions = [], {}, {}
        for role, label in [("true", "true class"), ("failure", "failure class")]:
            class_name = case["true_label" if role == "true" else "predicted_label"]
            row = f"{label} ({class_name})"
            rows.append(row)
            for tag, s in stored.items():
                names = list(s["class_names"])
                probs = s["probabilities"]
                own = names[int(probs.argmax())]
                cams[row, tag] = s["maps"][list(s["roles"]).index(role)]
                captions[row, tag] = f"p({class_name})={probs[names.index(class_name)]:.3f}, predicts {own}"
        title = (f"{case['case']} (test #{case['test_index']}): {method} on {layers}; "
                 f"each row explains one class in every model")
        save(case["path"] / SIDE_BY_SIDE, cam_grid_figure(image, rows, tags, cams, captions, title))
        written += 1
    if written:
        print(f"{written} cases: both models' maps for the true and the failure class side by side in "
              f"case_*/{SIDE_BY_SIDE}")


def explanation_stage(description: str | None, settings: TwinSettings, argv: list[str] | None = None) -> None:
    """Entry point of explainability.py and explainability_improved.py."""
    defaults = ExplainParams(checkpoint=paths.checkpoint_path(settings.tag))
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED)
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    params = params_from(args, defaults)
    run_main(lambda: explain(params, settings), args.debug)
