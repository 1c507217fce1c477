"""bench.py: throughput of this pipeline beside the common DataLoader + PIL way (../shared/bench/peer_dataloader.py),
in one run, on the same data and device. The speed targets live here (TARGETS)."""
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core import atomic, paths
from ..core.cli import (Common, add_common_args, add_flags, flag, make_parser, non_negative_int, params_from,
                        positive_int, run_main)
from ..core.device import describe_device, pick_precision, resolve_device, synchronize, to_channels_last
from ..core.errors import UserError
from ..core.findings import Section, Table
from ..core.record import write_record
from ..data.cifar10 import BATCHES_DIR, CIFAR10_MEAN, CIFAR10_STD, Normalizer
from ..nn.inference import REPORTED_PRECISION, inference_model, predict_logits
from ..nn.occlusion import occlusion_maps, patch_starts
from ..training import TrainConfig, Trainer

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_PEER = REPOSITORY.parent / "shared" / "bench" / "peer_dataloader.py"
TARGETS = {"cpu": {"train": 2.0, "eval": 3.0, "corruptions": 5.0, "gradcam": 10.0}, "cuda": {"train": 5.0}}
OCCLUSION = {"patch": 8, "stride": 2, "severity": 3}


def measure_ours(data_dir: Path, device: torch.device, steps: int, warmup: int, batch_size: int,
                 compile_model: bool) -> dict:
    # one epoch per step at least, so that the one-cycle schedule never runs out whatever --steps is
    config = TrainConfig(batch_size=batch_size, epochs=warmup + steps, compile=compile_model)
    trainer = Trainer(config, data_dir, device)
    generator = trainer.epoch_generator(0)
    count = trainer.train_labels.numel()
    trainer.model.train()

    def train_steps(number: int) -> None:
        for _ in range(number):
            trainer.train_step(torch.randint(0, count, (trainer.batch_size,), device=device, generator=generator),
                               generator)

    train_steps(warmup)
    train_rate = timed_rate(device, lambda: train_steps(steps), steps * trainer.batch_size)
    eval_rates = {}
    for precision in dict.fromkeys([trainer.precision, REPORTED_PRECISION]):  # the fast path; what stages report in
        predict_logits(trainer.model, trainer.test_images[:trainer.batch_size], trainer.normalize, precision)
        eval_rates[precision] = timed_rate(device, lambda: predict_logits(
            trainer.model, trainer.test_images, trainer.normalize, precision).argmax(1).cpu(),
            len(trainer.test_images))
    return {"train": train_rate, "eval": eval_rates[trainer.precision], "eval_rates": eval_rates,
            "precision": trainer.precision, "trainer": trainer}


def timed_seconds(device: torch.device, run) -> float:
    """The seconds `run()` takes, the device's queue drained before and after: every timing here."""
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def timed_rate(device: torch.device, run, n: int) -> float:
    """n over the seconds `run()` takes."""
    return n / timed_seconds(device, run)


def measure_gradcam(trainer: Trainer, count: int, single_count: int) -> dict:
    """Grad-CAM images/s: batched on the device (gradcam.py, one batch of `count` images, fp32 and the device's
    precision) versus pytorch_grad_cam's GradCAM one image per call, and that package on one batch."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from ..nn.cam_layers import BUILT_IN_LAYERS
    from ..nn.gradcam import gradcam_on_device

    model = trainer.model.eval()
    layer = model.get_submodule(BUILT_IN_LAYERS[trainer.config.arch])
    images = trainer.normalize(trainer.test_images[:count])
    classes = [0] * len(images)

    def on_device(precision: str):
        return lambda: gradcam_on_device(model, images, classes, layer, len(images), precision=precision)

    rates = {}
    for precision in dict.fromkeys(["fp32", trainer.precision]):
        gradcam_on_device(model, images[:8], classes[:8], layer, 8, precision=precision)  # warm-up
        rates[f"on_device_{precision}"] = timed_rate(trainer.device, on_device(precision), len(images))
    # pytorch_grad_cam's hints ask for List[nn.Module] targets; it calls them, and its own target classes are
    # plain callables (reportArgumentType below)
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as cam:
        targets = [ClassifierOutputTarget(c) for c in classes]
        cam(input_tensor=images[:8], targets=targets[:8])  # pyright: ignore[reportArgumentType]
        rates["package_batch"] = timed_rate(
            trainer.device, lambda: cam(input_tensor=images, targets=targets),  # pyright: ignore[reportArgumentType]
            len(images))
        rates["package_single"] = timed_rate(
            trainer.device, lambda: [cam(input_tensor=images[i:i + 1],
                                         targets=targets[i:i + 1])  # pyright: ignore[reportArgumentType]
                                     for i in range(single_count)], single_count)
    sample = len(images[:8])
    with FlopCounterMode(display=False) as counter:  # forward plus the backward to the layer, as run above
        gradcam_on_device(model, images[:sample], classes[:sample], layer, sample)
    return {"rates": rates, "count": len(images), "flops_per_map": counter.get_total_flops() / sample,
            "matmul_flops_per_s": matmul_rate(trainer.device)}


def matmul_rate(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Floating-point operations per second of a large fp32 matrix product: about the most this device's
    arithmetic gives a convolution network, so flops per map over it bounds Grad-CAM's maps/s."""
    a, b = torch.randn(2, size, size, device=device).unbind()
    torch.mm(a, b)  # warm-up
    return timed_rate(device, lambda: [torch.mm(a, b) for _ in range(repeats)], 2 * size ** 3 * repeats)


def measure_knn(device: torch.device, bank_size: int, query_count: int, width: int = 512, k: int = 50) -> dict:
    """Queries/s of ood.py's KNN score (distance to the k-th nearest unit-length training feature) on random
    post-ReLU features of a ResNet-18's width: DeviceKNN (matrix product + top-k on the device) against
    pytorch-ood's KNN (scikit-learn's NearestNeighbors, all cores), and the ceiling the distances' matrix product
    sets (2 x queries x bank x width flops at the device's measured fp32 rate); beside it the bare products of
    DeviceKNN's batches, which at this narrow width (512) run well below the square product's rate."""
    from pytorch_ood.detector import KNN

    from ..ood_scores import DeviceKNN

    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(bank_size, width, generator=generator).relu()
    queries = torch.randn(query_count, width, generator=generator).relu()
    ours = DeviceKNN(bank.to(device), k)
    on_device = queries.to(device)
    ours.predict_features(on_device[:256])  # warm-up
    ours_seconds = timed_seconds(device, lambda: ours.predict_features(on_device))
    reference = KNN(None, k=k).fit_features(bank, torch.zeros(bank_size, dtype=torch.long))
    reference_seconds = timed_seconds(torch.device("cpu"), lambda: reference.predict_features(queries))
    batches = on_device.split(ours.batch_size)
    products_seconds = timed_seconds(device, lambda: [batch @ ours.bank.T for batch in batches])
    ceiling_seconds = 2 * query_count * bank_size * width / matmul_rate(device)
    return {"ours": query_count / ours_seconds, "reference": query_count / reference_seconds,
            "ceiling": query_count / ceiling_seconds, "products_only": query_count / products_seconds}


def measure_feature_extraction(device: torch.device, count: int) -> dict:
    """Frozen-backbone feature extraction images/s at 224x224 (random-init weights: speed does not depend on them)."""
    from ..nn.backbones import BACKBONES, extract_features, load_backbone

    precision = pick_precision(device)
    rates = {}
    for name in BACKBONES:
        model = to_channels_last(load_backbone(name, "none", seed=0), device)
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, device=device)
        extract_features(model, name, images[:max(1, count // 4)], precision, batch_size=count)  # warm-up
        rates[name] = timed_rate(device, lambda: extract_features(model, name, images, precision,
                                                                  batch_size=min(count, 256)), count)
    return rates


def measure_corruptions(images: torch.Tensor, reference_count: int, severity: int) -> dict:
    """Images/s of every corruption here (the whole uint8 batch on its device) and of the per-image numpy/PIL
    reference (reference_corruptions.py) on the first `reference_count` images, at one severity."""
    from ..data.corruptions import NAMES, PARAMETERS, corrupt, severity_generator
    from ..data.reference_corruptions import corrupt_one_by_one

    on_cpu = images[:reference_count].permute(0, 2, 3, 1).cpu().numpy()
    rates = {}
    for name in NAMES:
        generator = severity_generator(0, name, severity, images.device)
        corrupt(images[:8], name, severity, generator)  # warm-up
        rates[name] = {"ours": timed_rate(images.device, lambda: corrupt(images, name, severity, generator),
                                          len(images)),
                       "reference": timed_rate(torch.device("cpu"), lambda: corrupt_one_by_one(
                           on_cpu, name, PARAMETERS[name][severity - 1]), len(on_cpu))}
    return rates


def occlusion_by_position(model: torch.nn.Module, normalizer: Normalizer, fill: torch.Tensor, image: torch.Tensor,
                          target: int, patch: int, stride: int) -> np.ndarray:
    """Occlusion sensitivity the plain way: one forward per patch position, the fall averaged per pixel."""
    size = image.shape[-1]
    with torch.no_grad():
        base = model(normalizer(image[None])).softmax(1)[0, target]
        total = torch.zeros(size, size, device=image.device)
        cover = torch.zeros(size, size, device=image.device)
        for top in patch_starts(size, patch, stride):
            for left in patch_starts(size, patch, stride):
                occluded = image.clone()
                occluded[:, top:top + patch, left:left + patch] = fill
                occluded_prob = model(normalizer(occluded[None])).softmax(1)[0, target]
                total[top:top + patch, left:left + patch] += base - occluded_prob
                cover[top:top + patch, left:left + patch] += 1
    return (total / cover).cpu().numpy()


def measure_occlusion(model: torch.nn.Module, images: torch.Tensor, single_count: int) -> dict:
    """Occlusion maps/s: robustness.py's batched pass over all positions of all images, versus one forward per
    position (fp32 both, so that only the batching differs)."""
    model = model.eval()
    device = images.device
    checkpoint = {"normalization": {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}}
    classes = np.zeros(len(images), dtype=int)
    occlusion_maps(model, checkpoint, images[:1], classes[:1], OCCLUSION["patch"], 8)  # warm-up
    batched = timed_rate(device, lambda: occlusion_maps(model, checkpoint, images, classes, OCCLUSION["patch"],
                                                        OCCLUSION["stride"]), len(images))
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, device)
    fill = torch.tensor([round(255 * m) for m in CIFAR10_MEAN], dtype=torch.uint8, device=device).view(3, 1, 1)
    single = timed_rate(device, lambda: [occlusion_by_position(model, normalizer, fill, image, 0, OCCLUSION["patch"],
                                                               OCCLUSION["stride"]) for image in images[:single_count]],
                        single_count)
    return {"batched": batched, "single": single, "count": len(images)}


def measure_import_check(trainer: Trainer) -> dict:
    """What import_model.py spends checking a model: rebuild from the spec, strict load, plain forward over the test
    images, the fast path compared with it (the built-in ResNet-18, as a user's state dict)."""
    from ..importing import Preprocessing, import_classifier

    test_images, test_labels = trainer.test_images.cpu().numpy(), trainer.test_labels.cpu().numpy()
    checked = []
    seconds = timed_seconds(trainer.device, lambda: checked.append(import_classifier(
        trainer.model, trainer.config.arch, trainer.class_names, Preprocessing(), test_images, test_labels,
        trainer.device)[1]))
    return {"seconds": seconds, "images": checked[0].test_images}


def measure_attacks(model: torch.nn.Module, images: torch.Tensor, single_count: int, autoattack_count: int) -> dict:
    """Attacked images/s: adversarial.py's PGD (10 steps) on one batch of the images versus one image per call
    (fp32 both, the same steps: the labels are the model's own answers and the radius, Linf 0.25/255, is small
    enough that most images run every step), and the standard AutoAttack at Linf 8/255 (its cost is fixed:
    APGD-CE's 100 iterations on every image, then the later attacks on what is left)."""
    from ..attacks.gradient import PGDSettings, pgd
    from ..attacks.reference import autoattack
    from ..attacks.threat import PixelModel, Threat, predict

    device = images.device
    attacked = PixelModel(inference_model(model), Normalizer(CIFAR10_MEAN, CIFAR10_STD, device))
    pixels = images.float() / 255
    answers = predict(attacked, pixels, 256)
    threat, settings = Threat("Linf", 0.25 / 255), PGDSettings(steps=10)

    def one_batch():
        pgd(attacked, pixels, answers, threat, settings, seed=0)

    def one_image_per_call():
        for i in range(single_count):
            pgd(attacked, pixels[i:i + 1], answers[i:i + 1], threat, settings, seed=0)

    def standard_autoattack():
        autoattack(attacked, pixels[:autoattack_count], answers[:autoattack_count], Threat("Linf", 8 / 255), 0, 256)

    pgd(attacked, pixels[:2], answers[:2], threat, settings, seed=0)  # warm-up
    rates = {"pgd_batched": timed_rate(device, one_batch, len(pixels)),
             "pgd_single": timed_rate(device, one_image_per_call, single_count)}
    if autoattack_count:
        rates["autoattack"] = timed_rate(device, standard_autoattack, autoattack_count)
    return rates


def measure_data_parallel(data_dir: Path, processes: int, images: int, batch_size: int) -> dict:
    """Training images/s of train.py as one process and under torchrun with `processes` gloo processes on the
    CPU (one thread each, the same global batch), from the second epoch of each run's metrics.csv."""
    import tempfile

    import pandas as pd

    torchrun = Path(sys.executable).parent / "torchrun"
    script = REPOSITORY / "train.py"
    flags = ["--data-dir", str(Path(data_dir).resolve()), "--device", "cpu", "--epochs", "2", "--batch-size",
             str(batch_size), "--max-train-images", str(images), "--precision", "fp32"]
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, launch, threads in [("one process", [sys.executable], processes),
                                      (f"{processes} processes", [str(torchrun), "--standalone",
                                                                  f"--nproc_per_node={processes}"], 1)]:
            out = Path(folder) / name.replace(" ", "_")
            # from the temporary folder: train.py writes its record under the working directory's experiments/,
            # which from the user's would replace the record of their real training run
            result = subprocess.run([*launch, str(script), *flags, "--out-dir", str(out)], capture_output=True,
                                    text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, cwd=folder)
            if result.returncode != 0:
                raise UserError(f"the data-parallel measurement failed: "
                                f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
            rates[name] = float(pd.read_csv(out / "metrics.csv").train_images_per_s.iloc[-1])
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


@dataclass(frozen=True)
class BenchParams(Common):
    out_dir: Path = field(default=paths.EXPERIMENTS / "bench", metadata=flag("where bench.csv goes"))
    steps: int = field(default=20, metadata=flag("timed training steps (after warm-up)", positive_int))
    warmup: int = field(default=3, metadata=flag("untimed warm-up steps", positive_int))
    batch_size: int = field(default=128, metadata=flag("training batch size for both", positive_int))
    compile: bool = field(default=False, metadata=flag("torch.compile our model"))
    peer: Path = field(default=DEFAULT_PEER, metadata=flag("path to peer_dataloader.py"))
    skip_peer: bool = field(default=False, metadata=flag("measure this pipeline only"))
    gradcam_images: int = field(default=256, metadata=flag(
        "batch size of the Grad-CAM measurement (one-at-a-time uses an eighth of it)", positive_int))
    feature_images: int = field(default=64, metadata=flag(
        "images per backbone for the study B feature-extraction measurement (0: skip)", non_negative_int))
    corruption_images: int = field(default=500, metadata=flag(
        "test images per corruption for the corruption measurement (0: skip)", non_negative_int))
    reference_images: int = field(default=50, metadata=flag(
        "of those, how many go through the per-image numpy/PIL reference", positive_int))
    ddp_processes: int = field(default=0, metadata=flag(
        "also time train.py under torchrun with this many gloo processes on the CPU beside one process (0: skip; "
        "on a 2-core CPU this shows the overhead, not a speed-up)", non_negative_int))
    occlusion_images: int = field(default=8, metadata=flag(
        f"images for the occlusion measurement (patch {OCCLUSION['patch']}, stride {OCCLUSION['stride']}; one "
        "forward per position on an eighth of them; 0: skip)", non_negative_int))
    knn_bank: int = field(default=50_000, metadata=flag(
        "training features (512 wide) in the OOD KNN measurement's bank (0: skip)", non_negative_int))
    knn_queries: int = field(default=10_000, metadata=flag("queries of the OOD KNN measurement", positive_int))
    attack_images: int = field(default=64, metadata=flag(
        "images for the PGD measurement (one image per call on an eighth of them; 0: skip)", non_negative_int))
    autoattack_images: int = field(default=16, metadata=flag(
        "images for the standard AutoAttack's rate (0: skip)", non_negative_int))


class Figures:
    """The measured figures, printed as they come and kept as rows (measure, value, unit, note) for the CSV and the
    record that docs/performance.md quotes."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, measure: str, value: float, unit: str, note: str = "") -> None:
        self.rows.append({"measure": measure, "value": round(float(value), 3), "unit": unit, "note": note})
        print(f"{measure:44s} {value:10.2f} {unit}{'  (' + note + ')' if note else ''}", flush=True)


def benchmark(params: BenchParams) -> None:
    if not params.skip_peer and not params.peer.is_file():
        raise UserError(f"peer benchmark {params.peer} not found; pass --peer PATH to peer_dataloader.py or "
                        "--skip-peer")
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    print(f"benchmark on {describe_device(device)}, batch {params.batch_size}, {params.steps} timed steps", flush=True)
    figures, targets = Figures(), TARGETS.get(device.type, {})
    ours = measure_ours(params.data_dir, device, params.steps, params.warmup, params.batch_size, params.compile)
    figures.add("ours train", ours["train"], "img/s", ours["precision"])
    for precision, rate in ours["eval_rates"].items():
        figures.add(f"ours eval, {precision}", rate, "img/s",
                    "what the analysis stages report in" if precision == REPORTED_PRECISION else "the fast path")
    trainer = ours["trainer"]
    cams = measure_gradcam(trainer, params.gradcam_images, max(1, params.gradcam_images // 8))
    single = cams["rates"]["package_single"]
    for kind, rate in cams["rates"].items():
        target = f"; target {targets['gradcam']:.0f}x" if "gradcam" in targets and kind.startswith("on_device") else ""
        figures.add(f"Grad-CAM {kind}", rate, "img/s", f"{rate / single:.1f}x pytorch_grad_cam one image per call"
                                                       f"{target}")
    ceiling = cams["matmul_flops_per_s"] / cams["flops_per_map"]
    figures.add("Grad-CAM arithmetic ceiling", ceiling, "img/s",
                f"{cams['flops_per_map'] / 1e9:.2f} GFLOP per map at {cams['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s "
                f"(fp32 matrix product): {ceiling / single:.1f}x pytorch_grad_cam one image per call")
    if params.feature_images > 0:
        for name, rate in measure_feature_extraction(device, params.feature_images).items():
            figures.add(f"ours {name} features", rate, "img/s", "224x224")
    if params.corruption_images > 0:
        images = trainer.test_images[:params.corruption_images]
        rates = measure_corruptions(images, min(params.reference_images, len(images)), OCCLUSION["severity"])
        for name, rate in rates.items():
            figures.add(f"corruption {name}", rate["ours"], "img/s",
                        f"per-image reference {rate['reference']:.1f} img/s: {rate['ours'] / rate['reference']:.1f}x")
        # all 15 types on the same images: total seconds per image, ours versus the reference
        overall = sum(1 / r["reference"] for r in rates.values()) / sum(1 / r["ours"] for r in rates.values())
        figures.add("ratio corruptions", overall, "x", f"all 15 types at severity {OCCLUSION['severity']}, "
                    f"{len(images)} images" + (f"; target {targets['corruptions']:.0f}x" if "corruptions" in targets
                                               else ""))
    if params.occlusion_images > 0:
        occlusion = measure_occlusion(trainer.model, trainer.test_images[:params.occlusion_images],
                                      max(1, params.occlusion_images // 8))
        figures.add("ours occlusion, batched", occlusion["batched"], "maps/s",
                    f"{occlusion['count']} images; one forward per position {occlusion['single']:.2f} maps/s: "
                    f"{occlusion['batched'] / occlusion['single']:.1f}x")
    if params.knn_bank > 0:
        knn = measure_knn(device, params.knn_bank, params.knn_queries)
        figures.add("ours OOD KNN (k 50)", knn["ours"], "queries/s",
                    f"{params.knn_bank:,} x 512 bank; pytorch-ood's (scikit-learn) {knn['reference']:.0f} queries/s: "
                    f"{knn['ours'] / knn['reference']:.1f}x; {knn['ours'] / knn['ceiling']:.2f} of the matrix "
                    f"product's ceiling ({knn['ceiling']:.0f} queries/s); the products alone "
                    f"{knn['products_only']:.0f} queries/s ({knn['products_only'] / knn['ceiling']:.2f})")
    if params.attack_images > 0:
        attacks = measure_attacks(trainer.model, trainer.test_images[:params.attack_images],
                                  max(1, params.attack_images // 8), params.autoattack_images)
        figures.add("ours PGD-10, batched", attacks["pgd_batched"], "img/s",
                    f"{params.attack_images} images; one image per call {attacks['pgd_single']:.1f} img/s: "
                    f"{attacks['pgd_batched'] / attacks['pgd_single']:.1f}x (fp32, every step run)")
        if "autoattack" in attacks:
            figures.add("AutoAttack (standard, Linf 8/255)", attacks["autoattack"], "img/s",
                        f"{params.autoattack_images} images")
    check = measure_import_check(trainer)
    figures.add("import_model.py check of a ResNet-18", check["seconds"], "s",
                f"{check['images']} test images: rebuild, strict load, plain fp32 forward, fast path compared")
    if params.ddp_processes > 0:
        for name, rate in measure_data_parallel(params.data_dir, params.ddp_processes, 2048,
                                                params.batch_size).items():
            figures.add(f"data-parallel train.py, {name}", rate, "img/s", "gloo on the CPU")
    if not params.skip_peer:
        peer = measure_peer(params.peer, params.data_dir, device, params.steps, params.warmup, params.batch_size)
        for kind in ["train", "eval"]:
            figures.add(f"peer {kind}", peer[kind], "img/s", "DataLoader + PIL")
            figures.add(f"ratio {kind}", ours[kind] / peer[kind], "x",
                        f"target {targets[kind]:.0f}x" if kind in targets else "")
    for row in figures.rows:
        row.update(device=describe_device(device), precision=ours["precision"])
    atomic.write_csv(out_dir / "bench.csv", figures.rows, list(figures.rows[0]))
    print(f"-> {out_dir / 'bench.csv'}")
    table = Table(["measure", "value", "unit", "note"],
                  [[row["measure"], row["value"], row["unit"], row["note"]] for row in figures.rows])
    write_record("bench", {"bench": out_dir}, sections=[Section("Throughput (bench.py)", tables=[table],
                                                                links=[out_dir / "bench.csv"])],
                 device=describe_device(device), precision=ours["precision"], batch_size=params.batch_size,
                 steps=params.steps)


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = BenchParams()
    parser = make_parser(description)
    add_common_args(parser)
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    run_main(lambda: benchmark(params_from(args, defaults)), args.debug)
