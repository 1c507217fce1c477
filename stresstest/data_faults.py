"""The data's own faults, checked with cleanlab's Datalab: near duplicates between the training and the test images
(leakage that flatters test accuracy: ciFAIR, Barz and Denzler 2020, report about 3% of CIFAR-10's test images have
one in the training set) and within each split, exact duplicates (identical pixels, by hash), and outliers among a
model's features."""
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataFaults:
    pairs: pd.DataFrame          # kind (exact / near), split_a, index_a, split_b, index_b, cosine_distance
    outliers: pd.DataFrame       # split, index, outlier_score (lower: more unusual), is_outlier, most unusual first
    twin_in_training: np.ndarray  # per test image: an exact or near duplicate among the training images read
    settings: dict               # Datalab's threshold, k, metric and median nearest-neighbour distance


def exact_duplicate_pairs(images: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i < j) of images with identical pixels."""
    groups: dict[bytes, list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest(),
                          []).append(index)
    return [(a, b) for members in groups.values() for a in members for b in members if a < b]


def locate(index: int, train_count: int) -> tuple[str, int]:
    return ("train", index) if index < train_count else ("test", index - train_count)


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """Each image (N, 3, 32, 32 uint8) as its 2x2-pooled pixels (768 values) standardised within the image: cosine
    distance is then one minus the pixels' correlation, blind to brightness and contrast, so that a re-saved or
    re-exposed copy of one photograph comes out near while two photographs of one class do not."""
    import torch

    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(images).float(), 2).flatten(1)
    pooled = pooled - pooled.mean(1, keepdim=True)
    return (pooled / (pooled.std(1, keepdim=True) + 1e-6)).numpy()


def datalab_issues(features: np.ndarray, issue: str):
    """cleanlab's Datalab with one check on these features, at its defaults."""
    from cleanlab import Datalab

    lab = Datalab(data=pd.DataFrame({"row": np.arange(len(features))}), verbosity=0)
    lab.find_issues(features=features.astype(np.float32), issue_types={issue: {}})
    return lab.get_issues(issue), lab.get_info(issue)


def find_data_faults(train_images: np.ndarray, test_images: np.ndarray, train_features: np.ndarray,
                     test_features: np.ndarray) -> DataFaults:
    """Near duplicates by Datalab's near_duplicate check over the images' pixels (pixel_vectors; cosine distance over
    the k = 10 nearest neighbours, closer than 0.13 of the median nearest-neighbour distance: its defaults), exact
    duplicates by pixel hash, and outliers by Datalab's outlier check over the model's features. A model's
    features call look-alikes of one class duplicates (a barely trained one paired a cat with a frog: measured,
    docs/decisions.md); the pixels find copies."""
    count = len(train_images)
    images = np.concatenate([train_images, test_images])
    pixels = pixel_vectors(images)
    _, near = datalab_issues(pixels, "near_duplicate")
    rows = []
    for kind, found in [("exact", exact_duplicate_pairs(images)),
                        ("near", [(i, int(j)) for i, group in enumerate(near["near_duplicate_sets"])
                                  for j in group if i < j])]:
        for a, b in found:
            (split_a, index_a), (split_b, index_b) = locate(a, count), locate(b, count)
            rows.append({"kind": kind, "split_a": split_a, "index_a": index_a, "split_b": split_b,
                         "index_b": index_b,
                         "cosine_distance": round(float(1 - pixels[a] @ pixels[b] / len(pixels[a])), 6)})
    pairs = pd.DataFrame(rows, columns=["kind", "split_a", "index_a", "split_b", "index_b", "cosine_distance"])
    # an exact duplicate the pixels also call near is listed once, as exact
    pairs = pairs.drop_duplicates(["split_a", "index_a", "split_b", "index_b"]).reset_index(drop=True)
    outlier, _ = datalab_issues(np.concatenate([train_features, test_features]), "outlier")
    outliers = pd.DataFrame({"split": np.array(SPLITS).repeat([count, len(test_images)]),
                             "index": np.r_[np.arange(count), np.arange(len(test_images))],
                             "outlier_score": outlier.outlier_score.round(6),
                             "is_outlier": outlier.is_outlier_issue}).sort_values("outlier_score",
                                                                                 ignore_index=True)
    twin = np.zeros(len(test_images), bool)
    across = pairs[(pairs.split_a == "train") & (pairs.split_b == "test")]
    twin[across.index_b.to_numpy(int)] = True
    settings = {"near_duplicates_over": "pixels (2x2-pooled, standardised per image)",
                "outliers_over": "the model's features", "metric": str(near["metric"]), "k": int(near["k"]),
                "threshold": float(near["threshold"]),
                "median_nearest_distance": float(near["median_distance_to_nearest_neighbor"]),
                "images": {"train": count, "test": len(test_images)}}
    return DataFaults(pairs, outliers, twin, settings)
