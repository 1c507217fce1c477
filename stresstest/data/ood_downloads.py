"""The sets of OpenOOD v1.5's CIFAR-10 benchmark (near: CIFAR-100, TinyImageNet; far: MNIST, SVHN, Textures,
Places365), downloaded once from their official sources into <data-dir>/ood/ and md5-checked as CIFAR-10 is.

OpenOOD scores its own repackaged copies through image lists that drop TinyImageNet and Places365 images showing
CIFAR-10's classes; those archives sit on Google Drive without a published checksum, so here each set is its
official test or validation split whole (said beside every number). To score OpenOOD's exact images, download its
archives and give a list: --ood tin=data/benchmark_imglist/cifar10/test_tin.txt."""
import gzip
import pickle
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.error import URLError

import numpy as np

from ..core.errors import UserError
from .ood_sets import FAR, NEAR, OodSet, centre_cropped, from_files, limited


@dataclass(frozen=True)
class Download:
    name: str
    kind: str                                  # NEAR or FAR
    url: str
    md5: str
    unpacked: str                              # what the download leaves under <data-dir>/ood/ (its presence: done)
    source: str                                # what the images are, written beside every number
    # from the unpacked path: the images, (N, 3, 32, 32) uint8, or the image files (only the sample is decoded)
    read: Callable[[Path], np.ndarray | list[Path]]


def cifar100_test(folder: Path) -> np.ndarray:
    with open(folder / "test", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)


def mnist_test(path: Path) -> np.ndarray:
    """The idx file of MNIST's test images: a big-endian header (magic 2051, count, rows, columns), then bytes."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, columns = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise UserError(f"{path} is not MNIST's image file (magic {magic}); delete it to download it again")
    digits = np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows, columns)
    return np.stack([centre_cropped(digit) for digit in digits])


def svhn_test(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    return np.ascontiguousarray(loadmat(path)["X"].transpose(3, 2, 0, 1))  # stored (32, 32, 3, N)


def sorted_files(pattern: str) -> Callable[[Path], list[Path]]:
    return lambda folder: sorted(folder.glob(pattern))


DOWNLOADS = (
    Download("cifar100", NEAR, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
             "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
             "CIFAR-100's 10,000 test images (official archive; no class shared with CIFAR-10)", read=cifar100_test),
    Download("tin", NEAR, "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
             "tiny-imagenet-200", "TinyImageNet's 10,000 validation images (official archive, 64x64; OpenOOD's "
             "list drops those of CIFAR-10's classes, these are all of them)", read=sorted_files("val/images/*.JPEG")),
    Download("mnist", FAR, "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
             "9fb629c4189551a2d022fa330f9573f3", "t10k-images-idx3-ubyte.gz",
             "MNIST's 10,000 test digits (28x28, upscaled; OpenOOD uses all 70,000)", read=mnist_test),
    Download("svhn", FAR, "http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3",
             "test_32x32.mat", "SVHN's 26,032 test images (house numbers, cropped digits)", read=svhn_test),
    Download("dtd", FAR, "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
             "fff73e5086ae6bdbea199a49dfb8a4c1", "dtd", "the 5,640 images of the Describable Textures Dataset "
                                                       "(OpenOOD's Textures)", read=sorted_files("images/*/*.jpg")),
    Download("places365", FAR, "http://data.csail.mit.edu/places/places365/val_256.tar",
             "e27b17d8d44f4af9a78502beb927f808", "val_256", "Places365's 36,500 validation images (256x256; "
             "OpenOOD's list drops those of CIFAR-10's classes, these are all of them)", read=sorted_files("*.jpg")),
)
NAMES = tuple(download.name for download in DOWNLOADS)


def by_name(name: str) -> Download:
    return {download.name: download for download in DOWNLOADS}[name]


def fetch(download: Download, root: Path) -> Path:
    """The set's unpacked file or folder under root, downloaded, md5-checked and unpacked first when absent. The
    download and the unpacking happen in a temporary folder beside it, so a failed or killed one leaves nothing
    that passes for the set."""
    target = root / download.unpacked
    if target.exists():
        return target
    from torchvision.datasets.utils import download_url, extract_archive

    filename = download.url.rsplit("/", 1)[1]
    print(f"{download.name}: not in {root}; downloading {download.url}", file=sys.stderr)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as temporary:
            folder = Path(temporary)
            download_url(download.url, str(folder), filename, download.md5)  # checks the md5
            unpacked = folder / download.unpacked
            if filename != download.unpacked:
                extract_archive(str(folder / filename), str(folder))
            if not unpacked.exists():
                raise UserError(f"{download.url} did not unpack to {download.unpacked}; delete {root} and retry")
            shutil.move(str(unpacked), str(target))
    except (URLError, OSError, RuntimeError) as error:
        reason = getattr(error, "reason", None) or error
        raise UserError(f"--online-set {download.name}: {target} is not there and {download.url} could not be "
                        f"downloaded ({reason}); fetch it yourself (md5 {download.md5}) and unpack it into {root}/, "
                        "or leave the set out") from None
    return target


def online_set(name: str, root: Path, limit: int, seed: int) -> OodSet:
    """One benchmark set (fetched when absent), sampled to `limit` images (0: all) by `seed`; only the sampled
    files of a folder set are decoded."""
    download = by_name(name)
    where = fetch(download, root)
    read = download.read(where)
    if isinstance(read, np.ndarray):
        return limited(OodSet(name, download.kind, download.source, read), limit, seed)
    if not read:
        raise UserError(f"{where} holds no images of {name}; delete it to download it again")
    return from_files(name, download.kind, download.source, read, limit, seed)
