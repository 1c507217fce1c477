"""How in-distribution an image looks to a classifier: twelve scores, computed by pytorch-ood's detectors (the
reference implementation; KNN written here on the device and tested equal to it) from the logits, from the input
of the model's last linear layer, or (ODIN) from a perturbed input. Every score here is higher for what looks
more in-distribution (pytorch-ood's outlier scores, negated). Hyperparameters are OpenOOD v1.5's published
CIFAR-10 settings (configs/postprocessors), never tuned on a test OOD set."""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from pytorch_ood.detector import (ASH, GEN, ODIN, RMD, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax, ReAct, ViM)

LOGITS, FEATURES, INPUT = "logits", "features", "input gradient"
# the in-distribution sets' names in ood.py's scores.csv (stress_profile.py reads the first)
ID_SET, CORRUPTED_SET = "cifar10_test", "cifar10_test_corrupted"


@dataclass(frozen=True)
class OodSettings:
    """OpenOOD v1.5's CIFAR-10 settings (knn.yml, react.yml, ash.yml, odin.yml, gen.yml, vim.yml)."""
    knn_k: int = 50
    react_percentile: float = 0.90
    ash_percentile: float = 0.90
    odin_temperature: float = 1000.0
    odin_noise: float = 0.0014
    gen_gamma: float = 0.1
    gen_top: int = 100            # M: the largest probabilities GEN averages (all 10 of CIFAR-10's)
    vim_dim: int = 256            # principal subspace; half the features where they are fewer than 512


@dataclass(frozen=True)
class Score:
    name: str       # the column in the outputs
    display: str
    uses: str       # LOGITS, FEATURES or INPUT
    paper: str


SCORES = (
    Score("msp", "MSP", LOGITS, "Hendrycks & Gimpel 2017"),
    Score("msp_temperature", "MSP, temperature-scaled", LOGITS, "Guo et al. 2017 (T from calibration.py)"),
    Score("max_logit", "max logit", LOGITS, "Hendrycks et al. 2022"),
    Score("energy", "energy", LOGITS, "Liu et al. 2020"),
    Score("gen", "GEN", LOGITS, "Liu et al. 2023"),
    Score("odin", "ODIN", INPUT, "Liang et al. 2018"),
    Score("mahalanobis", "Mahalanobis (MDS)", FEATURES, "Lee et al. 2018"),
    Score("relative_mahalanobis", "relative Mahalanobis (RMDS)", FEATURES, "Ren et al. 2021"),
    Score("knn", "KNN", FEATURES, "Sun et al. 2022"),
    Score("vim", "ViM", FEATURES, "Wang et al. 2022"),
    Score("react", "ReAct (energy)", FEATURES, "Sun et al. 2021"),
    Score("ash", "ASH-B (energy)", FEATURES, "Djurisic et al. 2023"),
)
BY_NAME = {score.name: score for score in SCORES}


def settings_text(name: str, settings: OodSettings, temperature: float, vim_dim: int) -> str:
    """The hyperparameters behind a score, written beside each of its numbers."""
    return {"msp": "", "msp_temperature": f"T {temperature:.4g}", "max_logit": "", "energy": "T 1",
            "gen": f"gamma {settings.gen_gamma}, M {settings.gen_top}",
            "odin": f"T {settings.odin_temperature:g}, noise {settings.odin_noise} (pixels 0..1)",
            "mahalanobis": "tied covariance, training features", "relative_mahalanobis": "training features",
            "knn": f"k {settings.knn_k}, L2-normalised training features", "vim": f"principal dimension {vim_dim}",
            "react": f"clip at the training features' {settings.react_percentile:.0%} percentile",
            "ash": f"prune {settings.ash_percentile:.0%} of each image's features, binarise the rest"}[name]


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to length 1 (a zero row stays zero), as pytorch-ood's KNN normalises."""
    return features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)


class DeviceKNN:
    """pytorch-ood's KNN score (the distance to the k-th nearest L2-normalised training feature) computed on the
    features' device as a batched matrix product and top-k, instead of scikit-learn on the CPU: for unit vectors
    the squared distance is 2 - 2 cos. Equal to pytorch-ood's to float32 rounding (tests/test_ood.py)."""

    def __init__(self, train_features: torch.Tensor, k: int, batch_size: int = 1024):
        self.bank, self.k, self.batch_size = unit_rows(train_features.float()), k, batch_size

    @torch.no_grad()
    def predict_features(self, features: torch.Tensor) -> torch.Tensor:
        """Outlier scores (higher: farther from the training features), as pytorch-ood's KNN.predict_features."""
        queries = unit_rows(features.float().to(self.bank.device))
        # the k-th largest cosine gives the k-th smallest distance: top-k on the products themselves spares a pass
        # over the (batch x bank) matrix (3.7 -> 2.5 s for 10,000 queries on a 50,000 bank, 2-core Xeon)
        cosine = [(batch @ self.bank.T).topk(self.k, dim=1).values[:, -1] for batch in queries.split(self.batch_size)]
        return (2 - 2 * torch.cat(cosine)).clamp(min=0).sqrt()


class Detectors:
    """The feature detectors fitted on a model's training features (eval mode, no augmentation), and the logit
    scores; `scores` gives every score of a batch as higher-is-more-in-distribution numpy arrays."""

    def __init__(self, head: nn.Linear | None, train_features: torch.Tensor | None, train_labels: torch.Tensor,
                 temperature: float, settings: OodSettings):
        self.settings, self.temperature = settings, temperature
        self.head = head
        self.feature_detectors: dict = {}
        self.vim_dim = 0
        if head is None or train_features is None:
            return
        weight = head.weight.detach().float()
        bias = head.bias.detach().float() if head.bias is not None else torch.zeros(len(weight), device=weight.device)
        width = train_features.shape[1]
        self.vim_dim = settings.vim_dim if width >= 2 * settings.vim_dim else width // 2
        classify = self.classify  # the head on (clipped or pruned) features
        self.feature_detectors = {
            "mahalanobis": Mahalanobis(None).fit_features(train_features, train_labels),
            "relative_mahalanobis": RMD(None).fit_features(train_features, train_labels),
            "knn": DeviceKNN(train_features, min(settings.knn_k, len(train_labels))),
            "vim": ViM(None, d=self.vim_dim, w=weight, b=bias).fit_features(train_features, train_labels),
            "react": ReAct(lambda x: x, classify, percentile=settings.react_percentile).fit_feature_maps(
                train_features, train_labels),
            "ash": ASH(lambda x: x, lambda x: classify(x.flatten(1)), variant="ash-b",
                       percentile=settings.ash_percentile)}

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        assert self.head is not None
        return self.head(features.float())

    def logit_scores(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        logits = logits.float()
        outlier = {"msp": MaxSoftmax.score(logits), "msp_temperature": MaxSoftmax.score(logits, self.temperature),
                   "max_logit": MaxLogit.score(logits), "energy": EnergyBased.score(logits),
                   "gen": GEN.score(logits, self.settings.gen_gamma, min(self.settings.gen_top, logits.shape[1]))}
        return {name: -value.double().cpu().numpy() for name, value in outlier.items()}

    def feature_scores(self, features: torch.Tensor) -> dict[str, np.ndarray]:
        scores = {}
        for name, detector in self.feature_detectors.items():
            if name in ("react", "ash"):
                value = detector.predict_feature_maps(features[:, :, None, None] if name == "ash" else features)
            else:
                value = detector.predict_features(features)
            scores[name] = -torch.as_tensor(value).double().cpu().numpy()
        return scores


def odin_scores(pixel_model: nn.Module, images: torch.Tensor, settings: OodSettings, batch_size: int) -> np.ndarray:
    """ODIN on [0, 1] float images through a model with its normalisation inside, so the noise is in pixels as
    OpenOOD's (which divides the normalised step by the channel's std); higher = more in-distribution."""
    detector = ODIN(pixel_model, eps=settings.odin_noise, temperature=settings.odin_temperature)
    return np.concatenate([-detector.predict(images[start:start + batch_size]).double().cpu().numpy()
                           for start in range(0, len(images), batch_size)])
