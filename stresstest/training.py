"""Training: the config a run is made with, the trainer, and the stage that train.py (baseline) and improvement.py
(label smoothing 0.1) share; they differ only in their RunSettings. Also what other stages need of runs: reading a
saved config, and ensuring a finished run of a config (seeds, cross-validation folds)."""
import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


from .core import atomic, paths
from .core.architecture import build_architecture, is_user_code
from .core.checkpoint import classifier_checkpoint
from .core.cli import (add_common_args, add_flags, flag, make_parser, non_negative_float, non_negative_int,
                       open_fraction, params_from, positive_float, positive_int, run_main, unit_interval)
from .core.device import autocast, describe_device, hardware_name, pick_precision, seeded, synchronize, to_channels_last
from .core.distributed import Ranks, all_sum, barrier, torchrun_job
from .core.errors import UserError
from .core.findings import Estimate, Picture, Section, Table, wilson
from .core.record import write_record
from .data.cifar10 import (CIFAR10_MEAN, CIFAR10_STD, OPEN_SET_KNOWN, Normalizer, data_summary, known_class_indices,
                           load_cifar10, pad_for_crop, random_crop_flip, restricted, run_split)
from .nn.inference import REPORTED_PRECISION, loss_and_accuracy, predict_logits
from .plots import plot_curves


def trainable_arch(text: str) -> str:
    if is_user_code(text):
        raise argparse.ArgumentTypeError("user code is not trained here: train it yourself, then import_model.py")
    return text


class OpenSetClasses(argparse.Action):
    """--classes alone stands for the open-set split's known classes."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(values or []) or list(OPEN_SET_KNOWN))


@dataclass
class TrainConfig:
    arch: str = field(default="resnet18", metadata=flag(
        "the network: resnet18 (the study's CIFAR ResNet-18), or torchvision:<builder> / timm:<name> trained from "
        "scratch with the same recipe (your own code: train it yourself, then import_model.py)", trainable_arch))
    epochs: int = field(default=30, metadata=flag("training epochs", positive_int))
    batch_size: int = field(default=128, metadata=flag(
        "training batch size; under torchrun the global batch, split evenly among the processes", positive_int))
    # peak of the one-cycle schedule (torch's OneCycleLR, cosine annealing)
    lr: float = field(default=0.1, metadata=flag("peak learning rate of the one-cycle schedule", positive_float))
    warmup_fraction: float = 0.15  # share of steps spent rising to the peak
    div_factor: float = 25.0       # the schedule starts at lr / div_factor
    final_div_factor: float = 1e3  # and ends at that divided by final_div_factor
    momentum: float = 0.9          # SGD with Nesterov momentum; used as is only when cycle_momentum is off
    # momentum max -> base -> max against the lr (chosen on validation, docs/decisions.md "Momentum")
    cycle_momentum: bool = field(default=True, metadata=flag(
        "cycle SGD momentum 0.95 -> 0.85 -> 0.95 against the learning rate (on by default, as torch's OneCycleLR); "
        "--no-cycle-momentum holds it at 0.9", action=argparse.BooleanOptionalAction))
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    weight_decay: float = field(default=5e-4, metadata=flag("SGD weight decay", float))
    label_smoothing: float = field(default=0.0, metadata=flag("label smoothing in [0, 1)", unit_interval))
    # docs/decisions.md "Checkpoint choice"
    select_within_se: float = field(default=1.0, metadata=flag(
        "best_model.pth is the latest epoch whose validation accuracy is within this many binomial standard errors "
        "of the best (0: the best epoch itself)", non_negative_float))
    # 1,000 images of full CIFAR-10, 102 of the subset (chosen on validation over two seeds, docs/decisions.md
    # "Validation hold-out"; 10% until then)
    val_fraction: float = field(default=0.02, metadata=flag(
        "share of the training images held out (stratified) to pick the best checkpoint and fit calibration",
        open_fraction))
    classes: tuple = field(default=(), metadata=flag(
        "train on these classes only, by name or index: an open-set run, whose left-out classes' test images are "
        "near-OOD for ood.py --open-set; --classes alone: the 6/4 split of Neal et al. 2018 ("
        + " ".join(OPEN_SET_KNOWN) + "; Vaze et al.'s split 0)", str, nargs="*", action=OpenSetClasses,
        repeats=True, metavar="CLASS", default_text="all"))
    max_train_images: int = field(default=0, metadata=flag("use only the first N training images (0: all)",
                                                           non_negative_int))
    cv_folds: int = 0              # >0: a cross-validation run that never trains on fold cv_fold of cv_folds
    cv_fold: int = 0               # (stratified folds of the training images; out-of-fold label issues)
    seed: int = 0
    precision: str = field(default="auto", metadata=flag(
        "autocast precision of the training steps; auto: bf16 where the hardware has it (CUDA GPUs that support it, "
        "CPUs with native bf16), else fp32 (evaluation is always fp32)", choices=["auto", "bf16", "fp32"]))
    compile: bool = field(default=False, metadata=flag("torch.compile the model (pays off on long GPU runs)"))
    eval_batch_size: int = 0       # 0: by device (256 on CPU, 1024 on GPU)


RUN_ONLY_SETTINGS = {"compile", "eval_batch_size"}  # config keys that do not change the trained model

# --smoke: about a minute per training stage on a 2-core CPU (the smoke pipeline trains four runs: both stages and
# a second seed of each). 56 steps of 32 images at a peak lr of 0.02 learn on fp32 and bf16 CPUs alike (27.8-28.8%
# test accuracy on the subset over two seeds and both precisions); the earlier 20 steps of 64 at 0.05 diverged in
# both (training loss above ln 10, validation loss near 1,000 after epoch 1: 10-15%, docs/decisions.md). A 10%
# hold-out (102 images, not the default's 20) leaves stage 7 something to fit.
SMOKE_CONFIG = TrainConfig(epochs=2, max_train_images=1024, batch_size=32, lr=0.02, val_fraction=0.1)

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "epoch_seconds", "train_images_per_s", "best"]
STATE_FILE = paths.LAST_STATE
LOSS_CHECK_EVERY = 20  # steps between host syncs that read the running loss


def run_info(device: torch.device, precision: str, config: TrainConfig) -> dict:
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        commit = git.stdout.strip() if git.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"git_commit": commit, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": hardware_name(device), "precision": precision,
            "cpu_threads": torch.get_num_threads(), "command": " ".join(sys.argv), "seed": config.seed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def best_row(rows: list[dict]) -> dict:
    """The metrics row of the epoch whose checkpoint is best_model.pth (the last one flagged best)."""
    return next(row for row in reversed(rows) if row["best"])


def within_noise_of_best(val_acc: float, best_val_acc: float, val_images: int, within_se: float) -> bool:
    """The checkpoint rule: an epoch is kept when its validation accuracy is within `within_se` binomial standard
    errors of the best so far; the latest such epoch wins (with a one-cycle schedule the late epochs are the
    annealed ones, and on a small hold-out the best epoch is partly noise)."""
    return val_acc >= best_val_acc - within_se * math.sqrt(best_val_acc * (1 - best_val_acc) / val_images)


def saved_config(config: dict, source: str | Path) -> TrainConfig:
    """The TrainConfig a run was saved with (settings added since take their defaults, which are what runs did
    before the setting existed)."""
    unknown = sorted(set(config) - {field.name for field in dataclasses.fields(TrainConfig)})
    if unknown:
        raise UserError(f"{source} was saved by a newer version of this project (unknown settings: "
                        f"{', '.join(unknown)}); update this checkout")
    settings = dict(config)
    settings["classes"] = tuple(settings.get("classes", ()))  # JSON reads the tuple back as a list
    return TrainConfig(**settings)


def training_forward(model: nn.Module, device: torch.device, ranks: Ranks,
                     compile_model: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the training step calls: `model` itself in a one-process run; under torchrun a DistributedDataParallel
    replica (on CUDA with SyncBatchNorm, so batch statistics span the global batch; on CPUs, gloo, they stay per
    process); compiled with torch.compile when asked. The parameters stay `model`'s."""
    replica = model
    if ranks.world > 1:
        if device.type == "cuda":
            replica = nn.SyncBatchNorm.convert_sync_batchnorm(replica)
        replica = nn.parallel.DistributedDataParallel(replica, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    return torch.compile(replica) if compile_model else replica


class Trainer:
    """Holds the device-resident data, model and optimizer of one run; one call to `fit` trains it."""

    def __init__(self, config: TrainConfig, data_dir: Path, device: torch.device, ranks: Ranks = Ranks()):
        self.config, self.device, self.ranks = config, device, ranks
        self.precision = pick_precision(device, config.precision)
        data = load_cifar10(data_dir, quiet=not ranks.main)
        if config.classes:  # an open-set run: the other classes' images are never seen
            data = restricted(data, known_class_indices(config.classes, data.class_names))
        self.class_names = data.class_names
        train_images, train_labels = data.train_images, data.train_labels
        train_idx, val_idx, fold_idx = run_split(train_labels, config.val_fraction, config.max_train_images,
                                                 config.cv_folds, config.cv_fold)
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise UserError(f"{len(train_idx) + len(val_idx)} training images are too few for a validation split of "
                            f"{config.val_fraction}; use more data or another --val-fraction")

        def on_device(array):
            return torch.from_numpy(array).to(device)

        # The whole dataset lives on the device as uint8; training crops come from a padded copy.
        self.train_padded = pad_for_crop(on_device(train_images[train_idx]))
        self.train_labels = on_device(train_labels[train_idx])
        self.val_images, self.val_labels = on_device(train_images[val_idx]), on_device(train_labels[val_idx])
        self.test_images, self.test_labels = on_device(data.test_images), on_device(data.test_labels)
        self.normalize = Normalizer(CIFAR10_MEAN, CIFAR10_STD, device)
        self.split_sizes = {"train": len(train_idx), "val": len(val_idx), "test": len(data.test_labels)} | (
            {"cv_fold": len(fold_idx)} if config.cv_folds else {})
        self.data_summary = data_summary(data)

        self.batch_size = min(config.batch_size, len(train_idx))  # the global batch, over all processes
        if self.batch_size % ranks.world:
            raise UserError(f"--batch-size {self.batch_size} does not split evenly among {ranks.world} processes; "
                            f"choose a multiple of {ranks.world}")
        self.rank_batch = self.batch_size // ranks.world
        self.steps_per_epoch = len(train_idx) // self.batch_size  # drop the ragged last batch
        with seeded(config.seed):  # the same initial weights in every process
            self.model = build_architecture(config.arch, len(self.class_names))
        to_channels_last(self.model, device)
        self.forward = training_forward(self.model, device, ranks, config.compile)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=self.steps_per_epoch,
            pct_start=config.warmup_fraction, anneal_strategy="cos", div_factor=config.div_factor,
            final_div_factor=config.final_div_factor, cycle_momentum=config.cycle_momentum,
            base_momentum=config.base_momentum, max_momentum=config.max_momentum)
        self.rows: list[dict] = []

    # -- state ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "epoch": len(self.rows), "rows": self.rows,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rows = list(state["rows"])

    # -- loop ----------------------------------------------------------------------------------------
    def epoch_generator(self, epoch: int) -> torch.Generator:
        """Shuffling and augmentation draws depend only on (seed, epoch): a resumed run repeats them."""
        return torch.Generator(device=self.device).manual_seed(self.config.seed * 1_000_003 + epoch)

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on the global batch `batch` (training image indices), augmented on the device; this
        process takes its own equal share (all of it in a one-process run), DDP averages the gradients.

        Returns this process's mean loss and number of correct predictions as device tensors (no host sync)."""
        share = slice(self.ranks.rank * self.rank_batch, (self.ranks.rank + 1) * self.rank_batch)
        images = self.normalize(random_crop_flip(self.train_padded, batch, generator, keep=share))
        labels = self.train_labels[batch[share]]
        with autocast(self.device, self.precision):
            logits = self.forward(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach().float(), (logits.argmax(1) == labels).sum()

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        generator = self.epoch_generator(epoch)
        order = torch.randperm(self.train_labels.numel(), device=self.device, generator=generator)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.config.epochs}", leave=False,
                   disable=not (sys.stderr.isatty() and self.ranks.main), unit="batch")
        started = time.perf_counter()
        for step in range(self.steps_per_epoch):
            loss, hits = self.train_step(order[step * self.batch_size:(step + 1) * self.batch_size], generator)
            loss_sum += loss * self.rank_batch
            correct += hits
            if (step + 1) % LOSS_CHECK_EVERY == 0 or step + 1 == self.steps_per_epoch:
                running = all_sum(loss_sum.clone(), self.ranks).item()  # every process stops together
                self._check_finite(running, epoch)
                bar.set_postfix(loss=f"{running / ((step + 1) * self.batch_size):.3f}")
            bar.update()
        synchronize(self.device)
        seconds = time.perf_counter() - started
        bar.close()
        seen = self.steps_per_epoch * self.batch_size
        # counts summed over the processes, not per-process averages
        return all_sum(loss_sum, self.ranks).item() / seen, all_sum(correct, self.ranks).item() / seen, seconds

    def _check_finite(self, loss_sum: float, epoch: int) -> None:
        if not math.isfinite(loss_sum):
            kept = "the last completed epoch is kept for --resume" if self.rows else "nothing was saved"
            raise UserError(f"training loss became non-finite ({loss_sum}) in epoch {epoch}; {kept}; "
                            f"lower --lr (now {self.config.lr}) or use --precision fp32")

    def _evaluate(self, images, labels) -> tuple[float, float]:
        """Loss and accuracy in fp32 whatever the training precision, as every reported figure (a bf16
        evaluation would choose the checkpoint differently on different CPUs)."""
        logits = predict_logits(self.model, images, self.normalize, REPORTED_PRECISION, self.config.eval_batch_size)
        return loss_and_accuracy(logits, labels)

    def fit(self, out_dir: Path) -> dict:
        """Train the remaining epochs, writing the checkpoints, metrics.csv and curves (titled with the folder's
        name) into `out_dir` after each; the best epoch's metrics row."""
        for epoch in range(len(self.rows) + 1, self.config.epochs + 1):
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_acc, seconds = self._train_epoch(epoch)
            if self.ranks.main:  # the replicas are equal: one process evaluates
                val_loss, val_acc = self._evaluate(self.val_images, self.val_labels)
                test_loss, test_acc = self._evaluate(self.test_images, self.test_labels)
            else:
                val_loss = val_acc = test_loss = test_acc = math.nan
            val_acc = round(val_acc, 5)  # as the rows keep it, so the best so far comes from the rows on resume too
            best_val_acc = max([row["val_acc"] for row in self.rows] + [val_acc])
            is_best = self.ranks.main and within_noise_of_best(val_acc, best_val_acc, len(self.val_labels),
                                                               self.config.select_within_se)
            row = {"epoch": epoch, "lr": round(lr, 6), "train_loss": round(train_loss, 5),
                   "train_acc": round(train_acc, 5), "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5),
                   "test_loss": round(test_loss, 5), "test_acc": round(test_acc, 5),
                   "epoch_seconds": round(seconds, 2),
                   "train_images_per_s": round(self.steps_per_epoch * self.batch_size / seconds, 1),
                   "best": int(is_best)}
            self.rows.append(row)
            if not self.ranks.main:  # one process writes and prints
                continue
            # Order matters for resume: best checkpoint, then loop state, then the CSV and plots.
            if is_best:
                self._save_best(out_dir, epoch, row)
            atomic.save_torch(out_dir / STATE_FILE, self.state())
            atomic.write_csv(out_dir / "metrics.csv", self.rows, METRIC_FIELDS)
            plot_curves(self.rows, out_dir, out_dir.name)
            print(f"epoch {epoch:3d}/{self.config.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                  f"val loss {val_loss:.4f} acc {val_acc:.4f}  test loss {test_loss:.4f} acc {test_acc:.4f}  "
                  f"{row['train_images_per_s']:.0f} img/s{'  *best' if is_best else ''}", flush=True)
        return best_row(self.rows) if self.ranks.main else {}

    def _save_best(self, out_dir: Path, epoch: int, row: dict) -> None:
        checkpoint = classifier_checkpoint(
            self.model, self.config.arch, self.class_names, CIFAR10_MEAN, CIFAR10_STD,
            dataclasses.asdict(self.config), epoch=epoch, metrics=dict(row),
            split_sizes=self.split_sizes)
        atomic.save_torch(out_dir / paths.BEST_MODEL, checkpoint)


def train(config: TrainConfig, data_dir: Path, out_dir: Path, device_name: str = "auto", resume: bool = False,
          record: str | None = None) -> None:
    """Train (or resume) one run into out_dir; under torchrun, data-parallel over its processes. `record`: the
    stage name to leave a record under when done (the training stages; not seeds or folds)."""
    with torchrun_job(device_name, "the epochs completed so far are saved: rerun the same command with --resume") \
            as (ranks, device):
        train_on(ranks, device, config, data_dir, Path(out_dir), resume, record)


def train_on(ranks: Ranks, device: torch.device, config: TrainConfig, data_dir: Path, out_dir: Path,
             resume: bool, record: str | None = None) -> None:
    say = print if ranks.main else (lambda *args, **kwargs: None)
    if ranks.main:
        atomic.ensure_writable_dir(out_dir)  # also clears temporaries a killed run left
    barrier(ranks)
    state = None
    state_path = out_dir / STATE_FILE
    if resume and not state_path.is_file():
        # Killed before its first epoch ended (or never started): the same command must be safe to repeat.
        say(f"--resume: nothing saved in {out_dir} yet (no {STATE_FILE}); starting the run afresh", file=sys.stderr)
        resume = False
    if resume:
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            saved_settings = dict(state["config"])
        except Exception as error:
            raise UserError(f"--resume: {state_path} is unreadable ({type(error).__name__}); "
                            "run without --resume to start afresh") from None
        saved = saved_config(saved_settings, state_path)
        if state["epoch"] >= saved.epochs:
            say(f"the run in {out_dir} already finished all {saved.epochs} epochs; nothing to resume")
            return
        say(f"resuming {out_dir} after epoch {state['epoch']} of {saved.epochs} with its saved config "
            "(training flags given now are ignored)", file=sys.stderr)
        config = dataclasses.replace(saved, compile=config.compile)
    trainer = Trainer(config, data_dir, device, ranks)
    if state is not None:
        trainer.load_state(state)
    elif ranks.main:
        (out_dir / STATE_FILE).unlink(missing_ok=True)  # a fresh run: never resume into an older one
        atomic.write_json(out_dir / paths.CONFIG, dataclasses.asdict(config))
    if ranks.main:
        info = run_info(device, trainer.precision, config) | {"split_sizes": trainer.split_sizes, "resumed": resume,
                                                               "processes": ranks.world,
                                                               "evaluation_precision": REPORTED_PRECISION}
        atomic.write_json(out_dir / "run_info.json", info)
    processes = f", {ranks.world} processes" if ranks.world > 1 else ""
    say(f"training {config.arch} on {device} ({trainer.precision}{processes}): "
        f"{trainer.split_sizes['train']:,} train / {trainer.split_sizes['val']:,} val / "
        f"{trainer.split_sizes['test']:,} test images, label smoothing {config.label_smoothing}, {config.epochs} "
        f"epochs -> {out_dir}", flush=True)
    best = trainer.fit(out_dir)
    if ranks.main:
        highest = max(row["val_acc"] for row in trainer.rows)
        print(f"chosen epoch {best['epoch']} (the latest within {config.select_within_se:g} SE of the best "
              f"validation accuracy, {highest:.4f}): val acc {best['val_acc']:.4f}, test acc "
              f"{best['test_acc']:.4f} -> {out_dir / paths.BEST_MODEL}")
        if record:
            write_record(record, {"run": out_dir}, data=trainer.data_summary, device=describe_device(device),
                         precision=f"training {trainer.precision}, evaluation {REPORTED_PRECISION}",
                         sections=[run_section(out_dir, config, trainer, best)], chosen_epoch=best["epoch"],
                         test_accuracy=best["test_acc"])


def run_section(out_dir: Path, config: TrainConfig, trainer: Trainer, best: dict) -> Section:
    """The report's section of a training run: its curves, the recipe and the chosen epoch."""
    sizes = trainer.split_sizes
    table = Table(["label smoothing", "seed", "epochs", "chosen epoch", "val acc", "test acc", "training precision",
                   "train / val / test images"],
                  [[config.label_smoothing, config.seed, config.epochs, best["epoch"],
                    Estimate(best["val_acc"]), wilson(round(best["test_acc"] * sizes["test"]), sizes["test"]),
                    trainer.precision, f"{sizes['train']} / {sizes['val']} / {sizes['test']}"]],
                  note=f"The chosen epoch is the latest within {config.select_within_se:g} standard errors of the "
                       "best validation accuracy; test accuracy with its Wilson 95% interval.")
    return Section(f"Training run: {out_dir.name} ({config.arch})", lead=Picture(out_dir / "accuracy_curve.png",
                                                                                 "accuracy per epoch"),
                   tables=[table], pictures=[Picture(out_dir / "loss_curve.png", "loss per epoch")],
                   links=[out_dir / "metrics.csv"])


def model_settings(config: dict) -> dict:
    """The settings that make the trained model (keys added to TrainConfig since a run was saved: their
    defaults)."""
    settings = dataclasses.asdict(TrainConfig()) | config
    return {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()
            if key not in RUN_ONLY_SETTINGS}  # as JSON reads them back


def finished_run(folder: Path, config: TrainConfig) -> bool:
    """Whether `folder` holds a finished run of exactly this config (every epoch in metrics.csv)."""
    try:
        saved = json.loads((folder / paths.CONFIG).read_text())
        return (model_settings(saved) == model_settings(dataclasses.asdict(config))
                and (folder / paths.BEST_MODEL).is_file() and len(pd.read_csv(folder / "metrics.csv")) >= config.epochs)
    except (OSError, ValueError):
        return False


def ensure_finished(config: TrainConfig, data_dir: Path, folder: Path, device_name: str, label: str,
                    reuse: Path | None = None) -> Path:
    """The folder of a finished run of `config`: `reuse` or `folder` when one holds it, else `folder` after
    training (or resuming) it now. A `folder` that holds a run with other settings is left alone: an error."""
    for candidate in [reuse, folder]:
        if candidate is not None and finished_run(candidate, config):
            print(f"{label}: finished run in {candidate}", flush=True)
            return candidate
    try:
        saved = model_settings(json.loads((folder / paths.CONFIG).read_text()))
    except (OSError, ValueError):
        saved = None
    wanted = model_settings(dataclasses.asdict(config))
    if saved is not None and saved != wanted:
        changed = sorted(key for key in wanted if saved.get(key) != wanted[key])
        raise UserError(f"{folder} holds a run with other settings ({', '.join(changed)}); remove it or choose "
                        "another --out-dir")
    train(config, data_dir, folder, device_name, resume=True)
    return folder


@dataclass(frozen=True)
class RunSettings:
    """What tells the twin training stages apart."""
    stage: str              # the script, as its record is named: train or improvement
    tag: str                # the run: baseline or improved (its folder, paths.RUNS)
    label_smoothing: float  # the study's one change


def training_stage(description: str | None, settings: RunSettings, argv: list[str] | None = None) -> None:
    """Entry point of train.py and improvement.py."""
    defaults = TrainConfig(label_smoothing=settings.label_smoothing)
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of the initialisation, the shuffling and the augmentation")

    default_dir = paths.run_dir(settings.tag)
    parser.add_argument("--out-dir", type=Path, help=f"where this run's files go (default {default_dir}; with "
                                                     f"--classes {paths.OPEN_SET_DIR})")
    smoke = dataclasses.replace(SMOKE_CONFIG, label_smoothing=settings.label_smoothing)  # the twin's one change
    add_flags(parser, defaults, smoke)
    parser.add_argument("--smoke", action="store_true", help="small preset for a quick check on a CPU")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out-dir with its saved config (starts afresh when "
                             "nothing was saved yet, so the same command is safe to repeat)")
    args = parser.parse_args(argv)
    config = params_from(args, defaults, smoke)
    open_set = bool(config.classes)  # a run of its own: neither its folder nor its record is the study's
    out_dir = args.out_dir or (paths.OPEN_SET_DIR if open_set else paths.run_dir(settings.tag))
    record = f"{settings.stage}_open_set" if open_set else settings.stage
    run_main(lambda: train(config, args.data_dir, out_dir, args.device, args.resume, record=record), args.debug)
