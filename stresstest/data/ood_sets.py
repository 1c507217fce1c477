"""Images of no CIFAR-10 class, in CIFAR-10's form ((N, 3, 32, 32) uint8): real images that ship with packages the
toolkit installs (scikit-learn's handwritten digits, scikit-image's textures, faces and photographs), noise as
sanity sets, and any folder of images a user gives. Each set is named as what it is: none of them is one of
OpenOOD's benchmark sets (those download through stresstest.data.ood_downloads)."""
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserError

NEAR, FAR, SANITY, GIVEN = "near", "far", "sanity", "given"
SIZE = 32
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TEXTURES = ("brick", "grass", "gravel")
# scikit-image's photographs of things no CIFAR-10 class shows (its cat, horse and rocket are left out)
PHOTOGRAPHS = ("coffee", "hubble_deep_field", "immunohistochemistry", "moon", "page", "text", "clock", "coins",
               "colorwheel", "retina", "cell", "camera", "astronaut", "logo")


@dataclass(frozen=True)
class OodSet:
    name: str
    kind: str             # NEAR, FAR, SANITY or GIVEN
    source: str           # what the images are, written beside every number
    images: np.ndarray    # (N, 3, 32, 32) uint8
    files: tuple = ()     # a folder set's image files, in the order of `images`


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image (H, W), (H, W, 3) or (H, W, 4) of any numeric type as (3, height, width) uint8: grey stacked to RGB,
    alpha dropped, a range other than 0..255 stretched to it (uint8 is taken as it is), resized with antialiasing."""
    array = np.asarray(image)
    stored_as_bytes = array.dtype == np.uint8
    array = array.astype(np.float32) * (255.0 if array.dtype == bool else 1.0)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    array = array[..., :3]
    # floats in 0..1 (faces) or wider ranges
    if not stored_as_bytes and (array.max() <= 1.0 or array.max() > 255 or array.min() < 0):
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-12) * 255
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    if tensor.shape[-2:] != (height, width):
        tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return tensor[0].round().clamp(0, 255).to(torch.uint8).numpy()


def centre_cropped(image: np.ndarray) -> np.ndarray:
    """OpenOOD's test transform for an image of any size: the shorter side scaled to 32 (bilinear), the centre
    32x32 cut out; as (3, 32, 32) uint8."""
    height, width = image.shape[:2]
    scale = SIZE / min(height, width)
    scaled = resized(image, max(SIZE, round(height * scale)), max(SIZE, round(width * scale)))
    top, left = (scaled.shape[1] - SIZE) // 2, (scaled.shape[2] - SIZE) // 2
    return scaled[:, top:top + SIZE, left:left + SIZE]


def sample(count: int, limit: int, seed: int) -> np.ndarray:
    """Indices of a seeded sample of `limit` of `count` items (all of them, in order, when limit is 0 or more)."""
    if not limit or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def limited(ood: OodSet, limit: int, seed: int) -> OodSet:
    """A seeded sample of `limit` of the set's images (all when limit is 0 or more)."""
    keep = sample(len(ood.images), limit, seed)
    return replace(ood, images=ood.images[keep], files=tuple(np.array(ood.files)[keep]) if ood.files else ())


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


def listed_path(image_list: Path, line: str) -> Path:
    """A path from an image list: relative to the list's folder, or, in OpenOOD's layout
    (data/benchmark_imglist/cifar10/test_tin.txt naming data/images_classic/tin/...), to an images_classic/
    folder beside one of the list's ancestors."""
    beside = image_list.parent / line
    if beside.is_file():
        return beside
    for ancestor in image_list.parents:
        candidate = ancestor / "images_classic" / line
        if candidate.is_file():
            return candidate
    return beside


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder` (class folders or flat), in a stable order; or under the paths listed in an
    OpenOOD image list (`folder` a .txt file of `relative/path label` lines, relative to the list's folder)."""
    if folder.is_file() and folder.suffix == ".txt":
        lines = [line.split()[0] for line in folder.read_text().splitlines() if line.strip()]
        return [listed_path(folder, line) for line in lines]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decoded(name: str, files: list[Path]) -> np.ndarray:
    """Image files (any size and mode) in CIFAR-10's form through OpenOOD's test transform; one clear line for a
    file that cannot be read."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(centre_cropped(np.asarray(image.convert("RGB"))))
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"{name}: cannot read {path} ({error}); remove it or convert it") from None
    return np.stack(images)


def from_files(name: str, kind: str, source: str, files: list[Path], limit: int, seed: int) -> OodSet:
    """A set of image files, of which only the seeded sample of `limit` is read (0: all)."""
    chosen = [files[i] for i in sample(len(files), limit, seed)]
    return OodSet(name, kind, source, decoded(name, chosen), tuple(map(str, chosen)))


def from_folder(name: str, folder: Path, limit: int = 0, seed: int = 0) -> OodSet:
    """A user's images (a folder or an image list; any size and mode), in CIFAR-10's form; one clear line for a
    folder without images or an unreadable file."""
    if not folder.exists():
        raise UserError(f"--ood {name}={folder}: no such folder or image list")
    files = image_files(folder)
    if not files:
        raise UserError(f"--ood {name}={folder}: no image files there ({', '.join(sorted(IMAGE_SUFFIXES))})")
    missing = [path for path in files if not path.is_file()]
    if missing:
        raise UserError(f"--ood {name}={folder}: {len(missing)} listed images are missing, {missing[0]} first; "
                        "check the list's paths (relative to its folder, or to OpenOOD's images_classic/)")
    return from_files(name, GIVEN, f"{len(files)} images from {folder}", files, limit, seed)
