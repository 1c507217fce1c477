"""The 15 CIFAR-10-C corruptions the straightforward way: one image at a time in numpy, with the libraries
make_cifar_c.py calls (scipy, skimage, OpenCV, PIL), transcribed from its formulas.

Not used by any stage. It is the independent reference the tests hold corruptions.py against (equal output
for the deterministic types, the same strength for the random ones) and the per-image peer that bench.py
times corruptions.py against. ImageMagick's motion blur (the original's Wand call) is its one-sided kernel
applied by shifting and adding. Each function: uint8 (32, 32, 3) image, the severity's parameters and a numpy
Generator -> uint8 (32, 32, 3), truncated as np.uint8 does."""
import functools
import io

import cv2
import numpy as np
import scipy.ndimage
import skimage.color
import skimage.filters
import skimage.util
from PIL import Image

from .corruptions import FROST_PICTURES, shrunk_frost_picture

SIZE = 32


def truncate(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def zoom_centre(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of an (H, W, C) array by `factor` (bilinear), cropped back to H x W."""
    crop = int(np.ceil(SIZE / factor))
    top = (SIZE - crop) // 2
    zoomed = np.asarray(scipy.ndimage.zoom(x[top:top + crop, top:top + crop], (factor, factor, 1), order=1))
    trim = (zoomed.shape[0] - SIZE) // 2
    return zoomed[trim:trim + SIZE, trim:trim + SIZE]


def motion_blur_one(image: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur of a float (H, W, C) image: tap i (weight exp(-i^2 / 2 sigma^2)) reads the
    pixel round(i sin, i cos) away along `angle` degrees, edges replicated; rounded to integers."""
    taps = np.arange(2 * radius + 1)
    weights = np.exp(-taps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    out = np.zeros_like(image, dtype=np.float64)
    steps = np.arange(SIZE)
    for i, weight in zip(taps, weights):
        dy = int(np.ceil(i * np.sin(np.deg2rad(angle)) - 0.5))
        dx = int(np.ceil(i * np.cos(np.deg2rad(angle)) - 0.5))
        out += weight * image[np.clip(steps + dy, 0, SIZE - 1)][:, np.clip(steps + dx, 0, SIZE - 1)]
    return np.clip(np.floor(out + 0.5), 0, 255)


def gaussian_noise(image, c, rng):
    return truncate(image / 255. + rng.normal(scale=c, size=image.shape))


def shot_noise(image, c, rng):
    return truncate(rng.poisson(image / 255. * c) / c)


def impulse_noise(image, c, rng):
    return truncate(skimage.util.random_noise(image / 255., mode="s&p", amount=c,
                                              rng=int(rng.integers(2 ** 31))))


def defocus_blur(image, c, rng):
    radius, alias_blur = c
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)
    x = image / 255.
    return truncate(np.stack([cv2.filter2D(x[:, :, channel], -1, kernel) for channel in range(3)], axis=2))


def glass_blur(image, c, rng):
    sigma, delta, iterations = c
    x = (skimage.filters.gaussian(image / 255., sigma=sigma, channel_axis=-1) * 255).astype(np.uint8)
    for _ in range(iterations):
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=2)
                x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx].copy(), x[h, w].copy()
    return truncate(skimage.filters.gaussian(x / 255., sigma=sigma, channel_axis=-1))


def motion_blur(image, c, rng):
    return motion_blur_one(image.astype(np.float64), c[0], c[1], rng.uniform(-45, 45)).astype(np.uint8)


def zoom_blur(image, c, rng):
    x = (image / 255.).astype(np.float32)
    total = np.zeros_like(x)
    for factor in c:
        total += zoom_centre(x, factor)
    return truncate((x + total) / (len(c) + 1))


def snow(image, c, rng):
    x = image.astype(np.float32) / 255.
    layer = zoom_centre(rng.normal(loc=c[0], scale=c[1], size=(SIZE, SIZE, 1)), c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64)
    layer = motion_blur_one(layer, c[4], c[5], rng.uniform(-135, -45)) / 255.
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return truncate(x + layer + np.rot90(layer, k=2))


@functools.cache
def frost_pictures() -> list[np.ndarray]:
    """The five frost pictures, shrunk to 0.2 and turned RGB (read once: file reading is not what is timed)."""
    return [shrunk_frost_picture(name) for name in FROST_PICTURES]


def frost(image, c, rng):
    picture = frost_pictures()[rng.integers(5)]
    top, left = rng.integers(0, picture.shape[0] - SIZE), rng.integers(0, picture.shape[1] - SIZE)
    return np.clip(c[0] * image + c[1] * picture[top:top + SIZE, left:left + SIZE], 0, 255).astype(np.uint8)


def plasma_fractal(decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map in [0, 1] with the original's wibble * uniform(-wibble, wibble) noise."""
    height = np.zeros((SIZE, SIZE))
    step, wibble = SIZE, 100.0
    while step >= 2:
        half = step // 2
        corners = height[::step, ::step]
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        height[half::step, half::step] = around / 4 + wibble * rng.uniform(-wibble, wibble, around.shape)
        centres, corners = height[half::step, half::step], height[::step, ::step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        height[::step, half::step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        height[half::step, ::step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step //= 2
        wibble /= decay
    height -= height.min()
    return height / height.max()


def fog(image, c, rng):
    x = image / 255.
    peak = x.max()
    x = x + c[0] * plasma_fractal(c[1], rng)[..., None]
    return truncate(x * peak / (peak + c[0]))


def brightness(image, c, rng):
    hsv = skimage.color.rgb2hsv(image / 255.)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return truncate(skimage.color.hsv2rgb(hsv))


def contrast(image, c, rng):
    x = image / 255.
    means = x.mean(axis=(0, 1), keepdims=True)
    return truncate((x - means) * c + means)


def elastic_transform(image, c, rng):
    alpha, sigma, shift = c
    x = image.astype(np.float32) / 255.
    centre, square = SIZE // 2, SIZE // 3
    corners = np.array([[centre + square] * 2, [centre + square, centre - square], [centre - square] * 2],
                       dtype=np.float32)
    moved = corners + rng.uniform(-shift, shift, size=corners.shape).astype(np.float32)
    x = cv2.warpAffine(x, cv2.getAffineTransform(corners, moved), (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101)
    dx, dy = (skimage.filters.gaussian(rng.uniform(-1, 1, size=(SIZE, SIZE)), sigma, mode="reflect", truncate=3)
              * alpha for _ in range(2))
    cols, rows = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    out = np.stack([scipy.ndimage.map_coordinates(x[:, :, channel], [rows + dy, cols + dx], order=1,
                                                  mode="reflect") for channel in range(3)], axis=2)
    return truncate(out)


def pixelate(image, c, rng):
    small = Image.fromarray(image).resize((int(SIZE * c), int(SIZE * c)), Image.Resampling.BOX)
    return np.asarray(small.resize((SIZE, SIZE), Image.Resampling.BOX))


def jpeg_compression(image, c, rng):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=c)
    return np.asarray(Image.open(buffer))


REFERENCES = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
              "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur,
              "zoom_blur": zoom_blur, "snow": snow, "frost": frost, "fog": fog, "brightness": brightness,
              "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
              "jpeg_compression": jpeg_compression}


def corrupt_one_by_one(images: np.ndarray, name: str, c, seed: int = 0) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images through the reference, one at a time."""
    rng = np.random.default_rng(seed)
    return np.stack([REFERENCES[name](image, c, rng) for image in images])
