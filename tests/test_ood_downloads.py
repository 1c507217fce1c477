"""OpenOOD's CIFAR-10 benchmark sets: each downloads from a local archive of its official layout served on loopback,
is md5-checked, unpacks atomically and reads as CIFAR-shaped images; a wrong checksum or no network says so."""
import gzip
import hashlib
import io
import pickle
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import served
from PIL import Image

from stresstest.core.errors import UserError
from stresstest.data import ood_downloads
from stresstest.data.ood_sets import FAR, NEAR

COLOURS = [(10 * i, 100 + 20 * i, 200 - 30 * i) for i in range(6)]  # one flat colour per image: resizing keeps it


def flat(colour, height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def add_bytes(archive, name: str, data: bytes) -> None:
    if isinstance(archive, zipfile.ZipFile):
        archive.writestr(name, data)
    else:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def official_archive(name: str, folder: Path) -> tuple[str, np.ndarray]:
    """An archive in the official layout of set `name` holding the flat images of COLOURS; its file name and the
    expected images, (N, 3, 32, 32) uint8."""
    expected = np.stack([flat(colour, 32, 32).transpose(2, 0, 1) for colour in COLOURS])
    if name == "cifar100":
        with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tar:
            add_bytes(tar, "cifar-100-python/test", pickle.dumps({"data": expected.reshape(len(COLOURS), -1),
                                                                  "fine_labels": list(range(len(COLOURS)))}))
        return "cifar-100-python.tar.gz", expected
    if name == "mnist":
        digits = np.stack([np.full((28, 28), 40 * i, np.uint8) for i in range(len(COLOURS))])
        header = np.array([2051, len(digits), 28, 28], dtype=">i4").tobytes()
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + digits.tobytes()))
        return "t10k-images-idx3-ubyte.gz", np.repeat(digits[:, None, :4, :4].repeat(8, 2).repeat(8, 3), 3, 1)
    if name == "svhn":
        from scipy.io import savemat

        savemat(folder / "test_32x32.mat", {"X": expected.transpose(2, 3, 1, 0), "y": np.ones((len(COLOURS), 1))})
        return "test_32x32.mat", expected
    layouts = {"tin": ("tiny-imagenet-200.zip", "tiny-imagenet-200/val/images/val_{}.JPEG", (64, 64)),
               "dtd": ("dtd-r1.0.1.tar.gz", "dtd/images/banded/banded_{}.jpg", (300, 480)),
               "places365": ("val_256.tar", "val_256/Places365_val_{:08d}.jpg", (256, 256))}
    filename, member, (height, width) = layouts[name]
    opened = zipfile.ZipFile(folder / filename, "w") if filename.endswith(".zip") else \
        tarfile.open(folder / filename, "w:gz" if filename.endswith(".gz") else "w")
    with opened as archive:
        for i, colour in enumerate(COLOURS):
            add_bytes(archive, member.format(i), jpeg(flat(colour, height, width)))
    return filename, expected


@pytest.fixture
def local_sources(tmp_path, monkeypatch):
    """Every benchmark set's archive served on loopback, the download table pointing at it."""
    folder = tmp_path / "served"
    folder.mkdir()
    expected = {}
    with served(folder) as url:
        downloads = []
        for download in ood_downloads.DOWNLOADS:
            filename, expected[download.name] = official_archive(download.name, folder)
            md5 = hashlib.md5((folder / filename).read_bytes()).hexdigest()
            downloads.append(replace(download, url=f"{url}/{filename}", md5=md5))
        monkeypatch.setattr(ood_downloads, "DOWNLOADS", tuple(downloads))
        yield expected


@pytest.mark.parametrize("name", ood_downloads.NAMES)
def test_each_benchmark_set_downloads_verified_and_reads_as_cifar_images(name, local_sources, tmp_path, monkeypatch):
    root = tmp_path / "data" / "ood"
    ood = ood_downloads.online_set(name, root, limit=0, seed=0)
    assert ood.kind == (NEAR if name in ("cifar100", "tin") else FAR) and ood.source
    assert ood.images.dtype == np.uint8 and ood.images.shape == local_sources[name].shape
    # JPEG moves a flat colour by a few levels; the lossless formats keep every pixel
    tolerance = 4 if ood.files else 0
    assert np.abs(ood.images.astype(int) - local_sources[name]).max() <= tolerance
    assert not [p for p in root.iterdir() if p.name.startswith(".download-")]
    # present now: read again without the network, and a sample reads only its files
    download = ood_downloads.by_name(name)
    monkeypatch.setattr(ood_downloads, "DOWNLOADS", (replace(download, url="http://127.0.0.1:9/gone"),))
    sampled = ood_downloads.online_set(name, root, limit=3, seed=1)
    assert len(sampled.images) == 3 and (len(sampled.files) == 3) == bool(ood.files)


def test_a_wrong_checksum_or_no_network_leaves_nothing_that_passes_for_the_set(local_sources, tmp_path, monkeypatch):
    root = tmp_path / "ood"
    download = ood_downloads.by_name("cifar100")
    monkeypatch.setattr(ood_downloads, "DOWNLOADS", (replace(download, md5="0" * 32),))
    with pytest.raises(UserError, match="could not be downloaded") as error:
        ood_downloads.online_set("cifar100", root, limit=0, seed=0)
    assert "md5" in str(error.value) and "\n" not in str(error.value)
    assert list(root.iterdir()) == []
    monkeypatch.setattr(ood_downloads, "DOWNLOADS", (replace(download, url="http://127.0.0.1:9/cifar.tar.gz"),))
    with pytest.raises(UserError, match=f"unpack it into {root}"):
        ood_downloads.online_set("cifar100", root, limit=0, seed=0)
