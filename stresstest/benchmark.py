"""Throughput of this pipeline beside the common DataLoader + PIL way (../shared/bench/peer_dataloader.py),
in one run, on the same data and device."""
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from .cli import add_common_args, make_parser, non_negative_int, positive_int, run_main
from .data import BATCHES_DIR
from .device import pick_precision, resolve_device, synchronize
from .errors import UserError
from .predict import predict_logits
from .training import TrainConfig, Trainer

DEFAULT_PEER = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peer_dataloader.py"
TARGETS = {"cpu": {"train": 2.0, "eval": 3.0}, "cuda": {"train": 5.0}}


def measure_ours(data_dir: Path, device: torch.device, steps: int, warmup: int, batch_size: int,
                 compile_model: bool) -> dict:
    # one epoch per step at least, so that the one-cycle schedule never runs out whatever --steps is
    config = TrainConfig(batch_size=batch_size, epochs=warmup + steps, compile=compile_model)
    trainer = Trainer(config, data_dir, None, device)
    generator = trainer._epoch_generator(0)
    count = trainer.train_labels.numel()
    trainer.model.train()
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
        trainer.train_step(torch.randint(0, count, (trainer.batch_size,), device=device, generator=generator),
                           generator)
    synchronize(device)
    train_rate = steps * trainer.batch_size / (time.perf_counter() - started)

    predict_logits(trainer.model, trainer.test_images[:trainer.batch_size], trainer.normalize, trainer.precision)
    synchronize(device)
    started = time.perf_counter()
    predict_logits(trainer.model, trainer.test_images, trainer.normalize, trainer.precision).argmax(1).cpu()
    eval_rate = len(trainer.test_images) / (time.perf_counter() - started)
    return {"train": train_rate, "eval": eval_rate, "precision": trainer.precision, "trainer": trainer}


def measure_gradcam(trainer: Trainer, count: int, single_count: int) -> dict:
    """Grad-CAM images/s through pytorch_grad_cam: one batch of `count` images versus one image per call."""
    from .explain import DEFAULT_LAYER
    from .gradcam import compute_cams

    model = trainer.model.eval()
    layer = model.get_submodule(DEFAULT_LAYER)
    images = trainer.normalize(trainer.test_images[:count])
    classes = [0] * len(images)
    compute_cams(model, images[:8], classes[:8], layer, batch_size=8)  # warm-up
    synchronize(trainer.device)
    started = time.perf_counter()
    compute_cams(model, images, classes, layer, batch_size=len(images))
    synchronize(trainer.device)
    batched = len(images) / (time.perf_counter() - started)
    started = time.perf_counter()
    compute_cams(model, images[:single_count], classes[:single_count], layer, batch_size=1)
    synchronize(trainer.device)
    single = single_count / (time.perf_counter() - started)
    return {"batched": batched, "single": single, "count": len(images)}


def measure_feature_extraction(device: torch.device, count: int) -> dict:
    """Frozen-backbone feature extraction images/s at 224x224 (random-init weights: speed does not depend on them)."""
    from .backbones import BACKBONES, extract_features, load_backbone

    precision = pick_precision(device)
    rates = {}
    for name in BACKBONES:
        model = load_backbone(name, "none", seed=0).to(device, memory_format=torch.channels_last)
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, device=device)
        extract_features(model, name, images[:max(1, count // 4)], precision, batch_size=count)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        extract_features(model, name, images, precision, batch_size=min(count, 256))
        synchronize(device)
        rates[name] = count / (time.perf_counter() - started)
    return rates


PEER_LINE = re.compile(r"train_img_per_s=([\d.]+) eval_img_per_s=([\d.]+)")


def measure_peer(peer: Path, data_dir: Path, device: torch.device, steps: int, warmup: int, batch_size: int) -> dict:
    command = [sys.executable, str(peer), str(data_dir / BATCHES_DIR), "--steps", str(steps), "--warmup",
               str(warmup), "--batch-size", str(batch_size), "--device", device.type]
    result = subprocess.run(command, capture_output=True, text=True)
    match = PEER_LINE.search(result.stdout)
    if result.returncode != 0 or not match:
        raise UserError(f"the peer benchmark failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return {"train": float(match.group(1)), "eval": float(match.group(2))}


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    add_common_args(parser)
    parser.add_argument("--steps", type=positive_int, default=20, help="timed training steps (after warm-up)")
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed warm-up steps")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="training batch size for both")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER, help="path to peer_dataloader.py")
    parser.add_argument("--skip-peer", action="store_true", help="measure this pipeline only")
    parser.add_argument("--gradcam-images", type=positive_int, default=256,
                        help="batch size of the Grad-CAM measurement (one-at-a-time uses an eighth of it)")
    parser.add_argument("--feature-images", type=non_negative_int, default=64,
                        help="images per backbone for the study B feature-extraction measurement (0: skip)")
    args = parser.parse_args(argv)

    def run():
        if not args.skip_peer and not args.peer.is_file():
            raise UserError(f"peer benchmark {args.peer} not found; pass --peer PATH to peer_dataloader.py "
                            "or --skip-peer")
        device = resolve_device(args.device)
        torch.manual_seed(args.seed)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        print(f"benchmark on {name}, batch {args.batch_size}, {args.steps} timed steps", flush=True)
        ours = measure_ours(args.data_dir, device, args.steps, args.warmup, args.batch_size, args.compile)
        print(f"ours  train {ours['train']:8.1f} img/s   eval {ours['eval']:8.1f} img/s   ({ours['precision']})",
              flush=True)
        cams = measure_gradcam(ours["trainer"], args.gradcam_images, max(1, args.gradcam_images // 8))
        print(f"ours  Grad-CAM {cams['batched']:8.1f} img/s in one batch of {cams['count']}, "
              f"{cams['single']:.1f} img/s one image per call ({cams['batched'] / cams['single']:.1f}x)", flush=True)
        if args.feature_images > 0:
            for name, rate in measure_feature_extraction(device, args.feature_images).items():
                print(f"ours  {name} features {rate:8.1f} img/s at 224x224", flush=True)
        if args.skip_peer:
            return
        peer = measure_peer(args.peer, args.data_dir, device, args.steps, args.warmup, args.batch_size)
        print(f"peer  train {peer['train']:8.1f} img/s   eval {peer['eval']:8.1f} img/s")
        targets = TARGETS.get(device.type, {})
        for kind in ["train", "eval"]:
            ratio = ours[kind] / peer[kind]
            target = f" (target {targets[kind]:.0f}x)" if kind in targets else ""
            print(f"ratio {kind} {ratio:5.2f}x{target}")

    run_main(run)
