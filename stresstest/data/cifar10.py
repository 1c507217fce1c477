"""CIFAR-10 in the official python layout, held on the device as uint8 and augmented there."""
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..core.record import portable

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
OFFICIAL_TRAIN_COUNT, OFFICIAL_TEST_COUNT = 50_000, 10_000
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CROP_PADDING = 4
# The open-set protocol's CIFAR-10 split (Neal et al. 2018, 6 known / 4 held-out classes), as split 0 of the five
# that Vaze et al. 2022 publish (osr_splits.py: known 0, 1, 2, 4, 5, 9); cat, frog, horse and ship are held out.
OPEN_SET_KNOWN = ("airplane", "automobile", "bird", "deer", "dog", "truck")


@dataclass
class Cifar10:
    train_images: np.ndarray  # (N, 3, 32, 32) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    root: Path


def data_summary(data: Cifar10) -> dict:
    """What a stage's record says of the data it read."""
    return {"data_dir": portable(data.root.parent), "train_images": len(data.train_labels),
            "test_images": len(data.test_labels),
            "full_cifar10": (len(data.train_labels), len(data.test_labels)) == (OFFICIAL_TRAIN_COUNT,
                                                                                OFFICIAL_TEST_COUNT)}


def known_class_indices(classes: tuple, class_names: list[str]) -> list[int]:
    """The sorted indices of the classes an open-set run trains on, given by name or index; one clear line for a
    list that is empty, repeats a class, names an unknown one, or leaves no class out (all: an empty tuple)."""
    if not classes:
        return list(range(len(class_names)))
    indices = []
    for given in map(str, classes):
        if not given.strip():
            raise UserError("--classes: an empty class name; give CIFAR-10 class names or indices, or --classes "
                            f"alone for the 6/4 open-set split ({' '.join(OPEN_SET_KNOWN)})")
        index = int(given) if given.isdigit() else class_names.index(given) if given in class_names else -1
        if not 0 <= index < len(class_names):
            raise UserError(f"--classes: {given} is not a class of this data ({', '.join(class_names)}, or 0 to "
                            f"{len(class_names) - 1})")
        if index in indices:
            raise UserError(f"--classes: {class_names[index]} is given twice; give each class once")
        indices.append(index)
    if len(indices) == len(class_names):
        raise UserError("--classes leaves no class out, so nothing is held out as near-OOD; leave some out, or "
                        "drop --classes to train on all of them")
    if len(indices) < 2:
        raise UserError("--classes: a classifier needs at least two classes")
    return sorted(indices)


def restricted(data: Cifar10, known: list[int]) -> Cifar10:
    """The images of the `known` classes only (sorted indices), labelled 0..len(known)-1 in that order."""
    relabel = np.full(len(data.class_names), -1, dtype=np.int64)
    relabel[known] = np.arange(len(known))
    train, test = np.isin(data.train_labels, known), np.isin(data.test_labels, known)
    return Cifar10(data.train_images[train], relabel[data.train_labels[train]], data.test_images[test],
                   relabel[data.test_labels[test]], [data.class_names[i] for i in known], data.root)


def download_cifar10(data_dir: Path, url: str | None = None, md5: str | None = None) -> None:
    """Download and extract the official archive into data_dir; torchvision verifies the md5."""
    from torchvision.datasets.utils import download_and_extract_archive

    url, md5 = url or CIFAR10_URL, md5 or CIFAR10_MD5
    print(f"CIFAR-10 not found in {data_dir}; downloading {url}", file=sys.stderr)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(url, download_root=str(data_dir), md5=md5)
    except (URLError, OSError, RuntimeError) as error:
        reason = getattr(error, "reason", None) or error
        raise UserError(
            f"CIFAR-10 is not in {data_dir / BATCHES_DIR} and could not be downloaded ({reason}); "
            f"download {url} and extract it into {data_dir}/ (so that {data_dir / BATCHES_DIR / 'data_batch_1'} "
            "exists), or point --data-dir at a folder that holds cifar-10-batches-py/") from None


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except Exception as error:  # truncated or foreign files fail in many ways inside pickle
        raise UserError(f"{path} is truncated or corrupt ({type(error).__name__}); replace it from "
                        f"cifar-10-python.tar.gz, or delete {path.parent} to download CIFAR-10 again") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} is not a CIFAR-10 batch file; replace it from cifar-10-python.tar.gz")
    return batch


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data)):
        raise UserError(f"{path} does not hold CIFAR-10 images (expected uint8 data of shape N x 3072 and N labels); "
                        "replace it from cifar-10-python.tar.gz")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} has labels outside 0..{num_classes - 1}; replace it from cifar-10-python.tar.gz")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: Path, download: bool = True, quiet: bool = False) -> Cifar10:
    """Read the official python batches from data_dir/cifar-10-batches-py (downloading them when absent).

    A copy with fewer images in the same layout loads too, with a notice of the counts.
    """
    data_dir = Path(data_dir)
    root = data_dir / BATCHES_DIR
    if not root.is_dir():
        if (data_dir / META_FILE).is_file() or (data_dir / TRAIN_FILES[0]).is_file():
            raise UserError(f"{data_dir} holds the batch files themselves; pass its parent folder "
                            f"(--data-dir {data_dir.parent}), which must contain {BATCHES_DIR}/")
        if data_dir.exists() and not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} is a file, not a folder; pass the folder that holds {BATCHES_DIR}/")
        if not download:
            raise UserError(f"CIFAR-10 is not in {root}; extract cifar-10-python.tar.gz into {data_dir}/")
        download_cifar10(data_dir)
    missing = [name for name in [*TRAIN_FILES, TEST_FILE, META_FILE] if not (root / name).is_file()]
    if missing:
        raise UserError(f"{root} lacks {', '.join(missing)}: wrong layout or an incomplete extraction; re-extract "
                        f"cifar-10-python.tar.gz into {data_dir}/, or delete {root} to download it again")
    meta = _read_pickle(root / META_FILE)
    class_names = list(meta.get("label_names") or [])
    if not class_names:
        raise UserError(f"{root / META_FILE} has no label_names; replace it from cifar-10-python.tar.gz")
    train = [_read_batch(root / name, len(class_names)) for name in TRAIN_FILES]
    test_images, test_labels = _read_batch(root / TEST_FILE, len(class_names))
    data = Cifar10(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   test_images, test_labels, class_names, root)
    if not quiet:
        n_train, n_test = len(data.train_labels), len(data.test_labels)
        subset = "" if (n_train, n_test) == (OFFICIAL_TRAIN_COUNT, OFFICIAL_TEST_COUNT) else (
            f" (a subset: the full CIFAR-10 has {OFFICIAL_TRAIN_COUNT:,} and {OFFICIAL_TEST_COUNT:,})")
        print(f"data: read {n_train:,} training and {n_test:,} test images from {root}{subset}", file=sys.stderr)
    if len(data.train_labels) == 0 or len(data.test_labels) == 0:
        raise UserError(f"{root} holds no training or no test images; re-extract cifar-10-python.tar.gz there")
    return data


def split_validation(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out: `fraction` of each class (at least one image of a class that has two) goes to
    validation. Returns sorted (train, val) indices.

    The split depends on `seed` only (not on the training seed), so every run on the same data
    selects its checkpoint on the same images; and a smaller fraction holds out a subset of a larger
    one's images, so runs with different hold-outs can be compared on images none of them trained on.
    """
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        val.append(members[:max(int(round(fraction * len(members))), int(len(members) > 1))])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def cross_validation_fold(labels: np.ndarray, folds: int, fold: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of fold `fold` of `folds` stratified folds (scikit-learn's StratifiedKFold, shuffled by
    `seed`): the images a cross-validation run never trains on and predicts out of sample."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.unique(labels, return_counts=True)[1]
    smallest = int(counts.min()) if len(counts) else 0
    if smallest < folds:
        raise UserError(f"a class has only {smallest} training images, too few for {folds} folds; use fewer folds "
                        "or more images")
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    return np.sort(list(splits)[fold][1])


def run_split(labels: np.ndarray, val_fraction: float, max_train_images: int = 0, cv_folds: int = 0,
              cv_fold: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, cross-validation fold) indices of a training run's images, as its config says: the
    first `max_train_images` (0: all), less fold `cv_fold` of `cv_folds` when cross-validating (never trained
    on), then the stratified validation hold-out of the rest."""
    labels = labels[:max_train_images] if max_train_images else labels
    held_out = cross_validation_fold(labels, cv_folds, cv_fold) if cv_folds else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    train_idx, val_idx = split_validation(labels[kept], val_fraction)
    return kept[train_idx], kept[val_idx], held_out


def pad_for_crop(images: torch.Tensor, padding: int = CROP_PADDING) -> torch.Tensor:
    """Zero-pad a uint8 (N, C, H, W) batch once, so every epoch's random crops are plain indexing."""
    return F.pad(images, (padding, padding, padding, padding))


def random_crop_flip(padded: torch.Tensor, indices: torch.Tensor, generator: torch.Generator,
                     padding: int = CROP_PADDING, keep: slice = slice(None)) -> torch.Tensor:
    """Random crop (from a `padding`-padded image) and horizontal flip, drawn independently per image.

    One gather on the device instead of a per-sample PIL transform: the crop offsets and the flip
    are folded into row/column index grids, so the cost is a single uint8 copy of the batch.
    The draws are made for all of `indices` and only the images in `keep` are returned: each process of a
    data-parallel run keeps its share of one global batch, augmented exactly as one process would.
    """
    device = padded.device
    size = padded.shape[-1] - 2 * padding
    count = indices.numel()
    top = torch.randint(0, 2 * padding + 1, (count,), device=device, generator=generator)[keep]
    left = torch.randint(0, 2 * padding + 1, (count,), device=device, generator=generator)[keep]
    flip = torch.randint(0, 2, (count, 1), device=device, generator=generator).bool()[keep]
    indices = indices[keep]
    steps = torch.arange(size, device=device)
    rows = top[:, None] + steps
    cols = left[:, None] + torch.where(flip, size - 1 - steps, steps)
    channels = torch.arange(padded.shape[1], device=device)
    return padded[indices[:, None, None, None], channels[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 images -> (optionally resized) normalized float, channels-last (the layout convolutions run
    fastest in). The one way images enter a model, in both studies."""

    def __init__(self, mean, std, device: torch.device, size: int | None = None):
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.size = size  # bilinear resize to size x size first (study B's 224), or none
        self._scale = (1.0 / (255.0 * torch.tensor(self.std, device=device))).view(1, -1, 1, 1)
        self._shift = (255.0 * torch.tensor(self.mean, device=device)).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = images.float()
        if self.size is not None and out.shape[-2:] != (self.size, self.size):
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = (out - self._shift) * self._scale
        return out.contiguous(memory_format=torch.channels_last)
