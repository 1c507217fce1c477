"""Study B: probing frozen ImageNet backbones on CIFAR-10 with kNN and linear heads, and their hard examples."""
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from . import atomic
from .backbones import (BACKBONES, cached, data_fingerprint, extract_features, load_backbone,
                        weights_identity)
from .cli import UserError, add_common_args, make_parser, positive_int
from .data import load_cifar10
from .device import pick_precision, resolve_device

SMOKE_IMAGES = {"train": 400, "test": 150}  # a few hundred: minutes on a 2-core CPU, even for ViT-B/16
KNN_K, KNN_TEMPERATURE = 20, 0.07           # the DINO protocol
LINEAR_C = 1.0                              # inverse L2 strength of the logistic-regression head


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
    out_dir: Path
    device: torch.device
    seed: int
    settings: dict


def probing_parser(description: str):
    parser = make_parser(description)
    add_common_args(parser)
    parser.add_argument("--model", default="resnet50", choices=list(BACKBONES), help="frozen backbone")
    parser.add_argument("--weights", default="default",
                        help="'default' (ImageNet weights from torchvision's cache or download), 'none' "
                             "(random init, for tests and offline runs) or a state-dict FILE")
    parser.add_argument("--out-root", type=Path, default=Path("experiments/probing"),
                        help="results go to OUT_ROOT/<model>/")
    parser.add_argument("--batch-size", type=positive_int, help="feature-extraction batch (default 256 on GPU, "
                                                                "32 on CPU)")
    parser.add_argument("--cached-only", action="store_true",
                        help="fail instead of extracting when no matching feature cache exists")
    parser.add_argument("--smoke", action="store_true",
                        help=f"the first {SMOKE_IMAGES['train']} training and {SMOKE_IMAGES['test']} test images")
    return parser


def load_probe(args) -> Probe:
    """Features of --model on the data, from the cache when its settings match, else extracted now."""
    if args.model not in BACKBONES:
        raise UserError(f"unknown model {args.model!r}; choose one of {', '.join(BACKBONES)}")
    device = resolve_device(args.device)
    data = load_cifar10(args.data_dir)
    n_train = min(SMOKE_IMAGES["train"], len(data.train_labels)) if args.smoke else len(data.train_labels)
    n_test = min(SMOKE_IMAGES["test"], len(data.test_labels)) if args.smoke else len(data.test_labels)
    train_images, train_labels = data.train_images[:n_train], data.train_labels[:n_train]
    test_images, test_labels = data.test_images[:n_test], data.test_labels[:n_test]
    precision = pick_precision(device)
    settings = {"model": args.model, "weights": weights_identity(args.model, args.weights, args.seed),
                "image_size": 224, "precision": precision, "train_images": n_train, "test_images": n_test,
                "data": data_fingerprint(train_images, train_labels, test_images, test_labels)}
    out_dir = atomic.ensure_writable_dir(args.out_root / args.model)
    cache = out_dir / "features.pt"
    batch_size = args.batch_size or (32 if device.type == "cpu" else 256)

    def compute() -> dict:
        if args.cached_only:
            raise UserError(f"no cached features for {args.model} with these settings in {cache}; run "
                            f"probing/extract_features.py --model {args.model} with the same flags first, "
                            "or drop --cached-only")
        backbone, _ = load_backbone(args.model, args.weights, args.seed)
        backbone = backbone.to(device, memory_format=torch.channels_last)
        started = time.perf_counter()
        features = {split: extract_features(backbone, torch.from_numpy(images).to(device), precision, batch_size,
                                             f"{args.model} {split}")
                    for split, images in [("train", train_images), ("test", test_images)]}
        seconds = time.perf_counter() - started
        print(f"features: {args.model} on {n_train + n_test:,} images in {seconds:.1f} s "
              f"({(n_train + n_test) / seconds:.1f} img/s, {precision}) -> {cache}", file=sys.stderr)
        return {"train": features["train"], "test": features["test"], "images_per_s": (n_train + n_test) / seconds}

    stored = cached(cache, settings, compute)
    return Probe(args.model, args.weights, stored["train"], stored["test"], train_labels, test_labels, train_images,
                 test_images, data.class_names, out_dir, device, args.seed, settings)


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
    classifier = KNeighborsClassifier(n_neighbors=min(k, len(train_labels)), metric="cosine", algorithm="brute",
                                      weights=lambda d: np.exp((1.0 - d) / temperature))
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
    """kNN and linear-head test probabilities (cached beside the features, keyed by the same settings)."""
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
