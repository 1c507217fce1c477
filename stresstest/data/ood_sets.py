"""Images of no CIFAR-10 class, in CIFAR-10's form ((N, 3, 32, 32) uint8): real images that ship with packages the
toolkit installs (scikit-learn's handwritten digits, scikit-image's textures, faces and photographs), noise as
sanity sets, and any folder of images a user gives. Each set is named as what it is: none of them is one of
OpenOOD's benchmark sets."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserError

FAR, SANITY, GIVEN = "far", "sanity", "given"
SIZE = 32
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TEXTURES = ("brick", "grass", "gravel")
# scikit-image's photographs of things no CIFAR-10 class shows (its cat, horse and rocket are left out)
PHOTOGRAPHS = ("coffee", "hubble_deep_field", "immunohistochemistry", "moon", "page", "text", "clock", "coins",
               "colorwheel", "retina", "cell", "camera", "astronaut", "logo")


@dataclass(frozen=True)
class OodSet:
    name: str
    kind: str             # FAR, SANITY or GIVEN
    source: str           # what the images are, written beside every number
    images: np.ndarray    # (N, 3, 32, 32) uint8
    files: tuple = ()     # a folder set's image files, in the order of `images`


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image (H, W), (H, W, 3) or (H, W, 4) of any numeric type as (3, height, width) uint8: grey stacked to RGB,
    alpha dropped, a range other than 0..255 stretched to it, resized with antialiasing."""
    array = np.asarray(image)
    array = array.astype(np.float32) * (255.0 if array.dtype == bool else 1.0)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    array = array[..., :3]
    if array.max() <= 1.0 or array.max() > 255 or array.min() < 0:  # floats in 0..1 (faces) or wider ranges
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-12) * 255
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    if tensor.shape[-2:] != (height, width):
        tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return tensor[0].round().clamp(0, 255).to(torch.uint8).numpy()


def tiles(image: np.ndarray, shorter_side: int) -> list[np.ndarray]:
    """Non-overlapping 32x32 tiles of the image scaled so that its shorter side is `shorter_side`."""
    height, width = image.shape[:2]
    scale = shorter_side / min(height, width)
    scaled = resized(image, round(height * scale), round(width * scale))
    return [scaled[:, top:top + SIZE, left:left + SIZE] for top in range(0, scaled.shape[1] - SIZE + 1, SIZE)
            for left in range(0, scaled.shape[2] - SIZE + 1, SIZE)]


def digits() -> OodSet:
    from sklearn.datasets import load_digits

    images = np.asarray(load_digits(return_X_y=True)[0]).reshape(-1, 8, 8)  # 1,797 digits, values 0..16
    return OodSet("digits", FAR, "scikit-learn's 1,797 handwritten digits (8x8, upscaled)",
                  np.stack([resized(image / 16.0, SIZE, SIZE) for image in images]))


def textures() -> OodSet:
    import skimage.data

    patches = [patch for name in TEXTURES for patch in tiles(getattr(skimage.data, name)(), 256)]
    return OodSet("textures", FAR, f"scikit-image's {', '.join(TEXTURES)} photographs, 32x32 tiles at half size",
                  np.stack(patches))


def faces() -> OodSet:
    import skimage.data

    return OodSet("faces", FAR, "scikit-image's lfw_subset: 200 face photographs (25x25, upscaled)",
                  np.stack([resized(face, SIZE, SIZE) for face in skimage.data.lfw_subset()]))


def photographs() -> OodSet:
    import skimage.data

    patches = [patch for name in PHOTOGRAPHS for patch in tiles(getattr(skimage.data, name)(), 96)]
    return OodSet("photographs", FAR, f"32x32 tiles of {len(PHOTOGRAPHS)} scikit-image photographs of things no "
                                      "CIFAR-10 class shows (coffee, galaxies, text, coins, ...), shorter side 96",
                  np.stack(patches))


def noise(kind: str, count: int, seed: int) -> OodSet:
    rng = np.random.default_rng(seed)
    shape = (count, 3, SIZE, SIZE)
    if kind == "gaussian":
        values = np.clip(rng.normal(127.5, 64.0, shape), 0, 255)
        source = "Gaussian noise, mean 127.5, sd 64 (clipped to 0..255)"
    else:
        values = rng.uniform(0, 256, shape)
        source = "uniform noise on 0..255"
    return OodSet(f"{kind}_noise", SANITY, source, values.astype(np.uint8))


BUILT_IN = ("digits", "textures", "faces", "photographs", "gaussian_noise", "uniform_noise")


def built_in(name: str, noise_images: int, seed: int) -> OodSet:
    makers = {"digits": digits, "textures": textures, "faces": faces, "photographs": photographs,
              "gaussian_noise": lambda: noise("gaussian", noise_images, seed),
              "uniform_noise": lambda: noise("uniform", noise_images, seed + 1)}
    return makers[name]()


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder` (class folders or flat), in a stable order; or under the paths listed in an
    OpenOOD image list (`folder` a .txt file of `relative/path label` lines, relative to the list's folder)."""
    if folder.is_file() and folder.suffix == ".txt":
        lines = [line.split()[0] for line in folder.read_text().splitlines() if line.strip()]
        return [folder.parent / line for line in lines]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def from_folder(name: str, folder: Path) -> OodSet:
    """A user's images (any size and mode), in CIFAR-10's form; one clear line for a folder without images or an
    unreadable file."""
    from PIL import Image, UnidentifiedImageError

    if not folder.exists():
        raise UserError(f"--ood {name}={folder}: no such folder or image list")
    files = image_files(folder)
    if not files:
        raise UserError(f"--ood {name}={folder}: no image files there ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(resized(np.asarray(image.convert("RGB")), SIZE, SIZE))
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"--ood {name}: cannot read {path} ({error}); remove it or convert it") from None
    return OodSet(name, GIVEN, f"{len(files)} images from {folder}", np.stack(images), tuple(map(str, files)))
