"""Study B: a frozen backbone's cached features on CIFAR-10, the kNN and linear heads fitted on them, and the
test images ranked by how hard they are: what every probing stage starts from (load_probe)."""
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from .core import atomic, paths
from .core.cli import Common, add_common_args, add_flags, flag, make_parser, non_negative_int
from .core.device import pick_precision, resolve_device, to_channels_last
from .core.distributed import Ranks, barrier
from .core.errors import UserError
from .data.cifar10 import load_cifar10
from .metrics import top_two_margin, true_class_margin
from .nn.backbones import (BACKBONES, IMAGE_SIZE, check_name, data_fingerprint, extract_features,
                           feature_code_identity, load_backbone, weights_identity)

KNN_K, KNN_TEMPERATURE = 20, 0.07  # the DINO protocol
LINEAR_C = 1.0                     # inverse L2 strength of the logistic-regression head


@dataclass(frozen=True)
class ProbeParams(Common):
    """Which backbone's features, on how many images; every probing stage's parameters extend these."""
    model: str = field(default="resnet50", metadata=flag("frozen backbone", choices=list(BACKBONES)))
    weights: str = field(default="default", metadata=flag(
        "'default' (the model's ImageNet weights: torchvision's cache or download; the installed package for "
        "efficientnet_lite0), 'none' (random init from the seed, for tests and offline runs) or a state-dict FILE "
        "of the whole classifier"))
    out_dir: Path = field(default=paths.PROBING_DIR, metadata=flag("results go to OUT_DIR/<model>/"))
    train_images: int = field(default=0, metadata=flag("the first N train images (0: all)", non_negative_int))
    test_images: int = field(default=0, metadata=flag("the first N test images (0: all)", non_negative_int))
    batch_size: int = field(default=0, metadata=flag("feature-extraction batch (0: 256 on GPU, 32 on CPU)",
                                                     non_negative_int))
    precision: str = field(default="auto", metadata=flag(
        "precision of the features (part of the cache key, written beside the results); auto: bf16 where the "
        "hardware has it (speed only)", choices=["auto", "bf16", "fp32"]))
    cached_only: bool = field(default=False, metadata=flag(
        "fail instead of extracting when no matching feature cache exists"))


# --smoke: a few hundred images, minutes on a 2-core CPU even for ViT-B/16
SMOKE = ProbeParams(train_images=400, test_images=150)


def feature_batch_size(device: torch.device) -> int:
    """Images per feature-extraction batch at 224x224 (study A's 32x32 batches would not fit)."""
    return 32 if device.type == "cpu" else 256


@dataclass
class Probe:
    """One backbone's cached features on (a prefix of) CIFAR-10, with what the stages need beside them."""
    model_name: str
    weights: str
    train_features: torch.Tensor  # (N, D) fp32
    test_features: torch.Tensor
    train_labels: np.ndarray
    test_labels: np.ndarray
    train_images: np.ndarray      # uint8 (N, 3, 32, 32), for case folders and Grad-CAM
    test_images: np.ndarray
    class_names: list[str]
    out_dir: Path                 # <out-dir>/<model>/
    device: torch.device
    seed: int
    settings: dict                # the feature-cache key


def matching_cache(cache: Path, settings: dict, say: Callable = print) -> dict | None:
    """`cache`'s contents when it was made with exactly `settings`, else None (saying why)."""
    if not cache.is_file():
        return None
    try:
        stored = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception:
        stored = {}
    if stored.get("settings") == settings:
        say(f"cache: reusing {cache}", file=sys.stderr)
        return stored
    changed = sorted(k for k in settings if stored.get("settings", {}).get(k) != settings[k])
    say(f"cache: {cache} was made with other settings ({', '.join(changed) or 'unreadable'}); recomputing",
        file=sys.stderr)
    return None


def cached(cache: Path, settings: dict, compute: Callable[[], dict]) -> dict:
    """`cache`'s contents when it was made with exactly `settings`, else computed afresh and cached."""
    stored = matching_cache(cache, settings)
    if stored is None:
        stored = {**compute(), "settings": settings}
        atomic.save_torch(cache, stored)
    return stored


def extract_in_shards(backbone: nn.Module, name: str, images: np.ndarray, precision: str, batch_size: int,
                      ranks: Ranks, shard_stem: Path, label: str) -> torch.Tensor | None:
    """Features of uint8 images; under torchrun each process extracts every world-th image, writes its shard
    with the images' global indices, and the main process merges the shards (full coverage, no duplicates).
    The merged features on the main process; None on the others."""
    device = next(backbone.parameters()).device
    if ranks.world == 1:
        return extract_features(backbone, name, torch.from_numpy(images).to(device), precision, batch_size, label)
    mine = np.arange(len(images))[ranks.rank::ranks.world]
    features = extract_features(backbone, name, torch.from_numpy(images[mine]).to(device), precision, batch_size,
                                f"{label} (process {ranks.rank})" if ranks.main else None)
    shards = [shard_stem.with_name(f"{shard_stem.name}.shard{r}of{ranks.world}.pt") for r in range(ranks.world)]
    atomic.save_torch(shards[ranks.rank], {"indices": torch.from_numpy(mine), "features": features})
    barrier(ranks)
    if not ranks.main:
        return None
    return merge_shards(shards, len(images))


def merge_shards(shards: list[Path], count: int) -> torch.Tensor:
    """The features of `count` images from shard files of {indices, features}, in index order; every index
    must appear exactly once. The shard files are removed."""
    parts = [torch.load(shard, map_location="cpu", weights_only=True) for shard in shards]
    indices = torch.cat([part["indices"] for part in parts])
    if len(indices) != count or not torch.equal(indices.sort().values, torch.arange(count)):
        raise RuntimeError(f"feature shards cover {indices.unique().numel()} of {count} images with "
                           f"{len(indices) - indices.unique().numel()} duplicates")
    features = torch.empty(count, parts[0]["features"].shape[1], dtype=parts[0]["features"].dtype)
    features[indices] = torch.cat([part["features"] for part in parts])
    for shard in shards:
        shard.unlink()
    return features


def load_probe(params: ProbeParams, ranks: Ranks = Ranks()) -> Probe:
    """Features of params.model on the data, from out_dir/<model>/features.pt when its key matches, else
    extracted now (sharded over the processes of a torchrun job, `ranks`). The key holds everything that
    changes the features (see feature_code_identity)."""
    model_name, weights, seed = params.model, params.weights, params.seed
    check_name(model_name)
    device = resolve_device(params.device)
    data = load_cifar10(params.data_dir)
    n_train = min(params.train_images or len(data.train_labels), len(data.train_labels))
    n_test = min(params.test_images or len(data.test_labels), len(data.test_labels))
    train_images, train_labels = data.train_images[:n_train], data.train_labels[:n_train]
    test_images, test_labels = data.test_images[:n_test], data.test_labels[:n_test]
    precision = pick_precision(device, params.precision)
    spec = BACKBONES[model_name]
    settings = {"model": model_name, "weights": weights_identity(model_name, weights, seed),
                "image_size": IMAGE_SIZE, "mean": list(spec.mean), "std": list(spec.std), "precision": precision,
                "train_images": n_train, "test_images": n_test,
                "data": data_fingerprint(train_images, train_labels, test_images, test_labels),
                **feature_code_identity(model_name)}
    model_dir = Path(params.out_dir) / model_name
    if ranks.main:
        atomic.ensure_writable_dir(model_dir)
    barrier(ranks)
    cache = model_dir / "features.pt"
    batch_size = params.batch_size or feature_batch_size(device)

    def compute() -> dict:
        if params.cached_only:
            raise UserError(f"no cached features for {model_name} with these settings in {cache}; run "
                            f"probing/extract_features.py --model {model_name} with the same flags first, "
                            "or drop --cached-only")
        backbone = to_channels_last(load_backbone(model_name, weights, seed), device)
        started = time.perf_counter()
        features = {split: extract_in_shards(backbone, model_name, images, precision, batch_size, ranks,
                                             model_dir / f"features.{split}", f"{model_name} {split}")
                    for split, images in [("train", train_images), ("test", test_images)]}
        seconds = time.perf_counter() - started
        say(f"features: {model_name} on {n_train + n_test:,} images in {seconds:.1f} s "
            f"({(n_train + n_test) / seconds:.1f} img/s, {precision}, {ranks.world} process"
            f"{'es' if ranks.world > 1 else ''}) -> {cache}", file=sys.stderr)
        return {"train": features["train"], "test": features["test"], "images_per_s": (n_train + n_test) / seconds}

    say = print if ranks.main else (lambda *args, **kwargs: None)
    stored = matching_cache(cache, settings, say)  # every process decides alike: they read the same file
    if stored is None:
        computed = compute()
        if ranks.main:
            atomic.save_torch(cache, {**computed, "settings": settings})
        barrier(ranks)
        stored = torch.load(cache, map_location="cpu", weights_only=True)
    return Probe(model_name, weights, stored["train"], stored["test"], train_labels, test_labels, train_images,
                 test_images, data.class_names, model_dir, device, seed, settings)


# -- heads -------------------------------------------------------------------------------------------------

def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=1)


def nearest_neighbours(train: torch.Tensor, query: torch.Tensor, k: int, chunk: int = 1024):
    """Cosine similarities and indices of the k nearest training features of each query (both L2-normalized)."""
    sims, indices = [], []
    for start in range(0, len(query), chunk):
        top = (query[start:start + chunk] @ train.T).topk(min(k, len(train)), dim=1)
        sims.append(top.values)
        indices.append(top.indices)
    return torch.cat(sims), torch.cat(indices)


def knn_probabilities(train_features, train_labels, test_features, num_classes: int, k: int = KNN_K,
                      temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """Weighted kNN of DINO (Caron et al. 2021): cosine similarity, k neighbours, votes exp(sim / T)."""
    sims, indices = nearest_neighbours(l2_normalize(train_features), l2_normalize(test_features), k)
    votes = torch.zeros(len(test_features), num_classes, dtype=torch.float64)
    labels = torch.as_tensor(train_labels)[indices]
    votes.scatter_add_(1, labels, (sims.double() / temperature).exp())
    return (votes / votes.sum(1, keepdim=True)).numpy()


def sklearn_knn_predictions(train_features, train_labels, test_features, k: int = KNN_K,
                            temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """The same protocol through scikit-learn, as an independent check (cosine distance d = 1 - sim)."""
    # weights takes a callable (scikit-learn's docs); pyright infers str from its default "uniform"
    classifier = KNeighborsClassifier(n_neighbors=min(k, len(train_labels)), metric="cosine", algorithm="brute",
                                      weights=lambda d: np.exp((1.0 - d) / temperature))  # pyright: ignore[reportArgumentType]
    classifier.fit(l2_normalize(train_features).numpy(), train_labels)
    return classifier.predict(l2_normalize(test_features).numpy())


def fit_linear_head(train_features, train_labels, num_classes: int, c: float = LINEAR_C) -> nn.Linear:
    """Multinomial logistic regression on standardized features, returned as one torch Linear layer
    (the standardization folded in) so that Grad-CAM can backpropagate through it."""
    scaler = StandardScaler().fit(train_features.numpy())
    regression = LogisticRegression(C=c, max_iter=2000)
    regression.fit(scaler.transform(train_features.numpy()), train_labels)
    weight = np.zeros((num_classes, train_features.shape[1]))
    bias = np.full(num_classes, -1e4)  # classes absent from a small training set are never predicted
    weight[regression.classes_] = regression.coef_ / scaler.scale_
    bias[regression.classes_] = regression.intercept_ - (regression.coef_ * scaler.mean_ / scaler.scale_).sum(1)
    head = nn.Linear(train_features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


def heads(probe: Probe) -> dict:
    """kNN and linear-head test probabilities and the linear head itself (cached beside the features)."""
    settings = {**probe.settings, "knn_k": KNN_K, "knn_temperature": KNN_TEMPERATURE, "linear_c": LINEAR_C}

    def compute() -> dict:
        num_classes = len(probe.class_names)
        head = fit_linear_head(probe.train_features, probe.train_labels, num_classes)
        with torch.no_grad():
            linear = head(probe.test_features).softmax(1).double().numpy()
        knn = knn_probabilities(probe.train_features, probe.train_labels, probe.test_features, num_classes)
        return {"knn": torch.from_numpy(knn), "linear": torch.from_numpy(linear),
                "head_weight": head.weight.detach().clone(), "head_bias": head.bias.detach().clone()}

    stored = cached(probe.out_dir / "heads.pt", settings, compute)
    head = nn.Linear(stored["head_weight"].shape[1], stored["head_weight"].shape[0])
    with torch.no_grad():
        head.weight.copy_(stored["head_weight"])
        head.bias.copy_(stored["head_bias"])
    return {"knn": stored["knn"].numpy(), "linear": stored["linear"].numpy(), "head": head}


# -- hardness ----------------------------------------------------------------------------------------------

def hardness_table(probe: Probe, outputs: dict) -> pd.DataFrame:
    """Every test image ranked hardest first: lowest true-class probability of the linear head, then lowest
    true-class margin (true-class probability minus the best other class)."""
    labels, linear, knn = probe.test_labels, outputs["linear"], outputs["knn"]
    rows = np.arange(len(labels))
    names = np.array(probe.class_names)
    table = pd.DataFrame({
        "test_index": rows, "true_label": names[labels],
        "linear_pred": names[linear.argmax(1)], "linear_confidence": linear.max(1),
        "true_class_probability": linear[rows, labels], "margin": top_two_margin(linear),
        "true_class_margin": true_class_margin(linear, labels),
        "knn_pred": names[knn.argmax(1)], "knn_true_vote": knn[rows, labels]})
    table["linear_wrong"] = table.linear_pred != table.true_label
    table["knn_wrong"] = table.knn_pred != table.true_label
    table["knn_agrees"] = table.knn_pred == table.linear_pred
    table = table.sort_values(["true_class_probability", "true_class_margin", "test_index"], ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def ranked(probe: Probe) -> tuple[dict, pd.DataFrame]:
    """The probe's heads' outputs and its test images ranked hardest first."""
    outputs = heads(probe)
    return outputs, hardness_table(probe, outputs)


# -- command line, shared by the probing stages ------------------------------------------------------------

def probing_parser(description: str | None, defaults: ProbeParams, smoke: ProbeParams):
    """A probing stage's flags: those of its parameter dataclass `defaults` (ProbeParams or one extending it),
    with its --smoke preset `smoke`."""
    parser = make_parser(description)
    add_common_args(parser, seed_help="seed of --weights none (random init) and of t-SNE")
    add_flags(parser, defaults, smoke)
    parser.add_argument("--smoke", action="store_true", help="a few hundred images")
    return parser
