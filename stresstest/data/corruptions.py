"""The 15 CIFAR-10-C corruptions at severities 1-5, batched in torch on the device.

Parameters are those of CIFAR-10-C's own generator (make_cifar_c.py, hendrycks/robustness), not the far
harsher ImageNet-C ones. Images go in and out as uint8 (N, 3, 32, 32); like the original, results are
truncated to uint8 (np.uint8 semantics). Randomness comes from one torch.Generator on the device, so a
seed gives the same corrupted set on a machine. Where the original calls ImageMagick (motion blur, the
snow layer) the same one-sided Gaussian motion kernel is applied here; JPEG goes through PIL on the CPU.
Frost overlays the original's frost pictures, shipped in frost/ (see FROST_PICTURES).
"""
import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.errors import UserError

SEVERITIES = [1, 2, 3, 4, 5]
SIZE = 32

PARAMETERS = {  # make_cifar_c.py, severity 1..5
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],             # disk radius, alias blur
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],      # sigma, delta, iterations
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],                             # radius, sigma
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],                             # strength, decay
    "brightness": [.05, .1, .15, .2, .3],
    "contrast": [.75, .5, .4, .3, 0.15],
    "elastic_transform": [(SIZE * 0, SIZE * 0, SIZE * 0.08), (SIZE * 0.05, SIZE * 0.2, SIZE * 0.07),
                          (SIZE * 0.08, SIZE * 0.06, SIZE * 0.06), (SIZE * 0.1, SIZE * 0.04, SIZE * 0.05),
                          (SIZE * 0.1, SIZE * 0.03, SIZE * 0.03)],                          # alpha, sigma, affine
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}


# -- helpers -----------------------------------------------------------------------------------------------

def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), normalized."""
    radius = int(truncate * sigma + 0.5)
    if radius == 0 or sigma == 0:
        return np.ones(1)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * offsets ** 2 / sigma ** 2)
    return weights / weights.sum()


def pad(x: torch.Tensor, radius: int, mode: str) -> torch.Tensor:
    """Pad the last two dims: 'nearest' (edge), 'mirror' (d c b | a b c d) or 'reflect' (c b a | a b c)."""
    if radius == 0:
        return x
    if mode == "nearest":
        return F.pad(x, (radius,) * 4, mode="replicate")
    if mode == "mirror":
        return F.pad(x, (radius,) * 4, mode="reflect")
    rows = torch.cat([x[..., :radius, :].flip(-2), x, x[..., -radius:, :].flip(-2)], dim=-2)
    return torch.cat([rows[..., :radius].flip(-1), rows, rows[..., -radius:].flip(-1)], dim=-1)


def separable_filter(x: torch.Tensor, weights: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) with `weights` along rows and columns."""
    radius = len(weights) // 2
    if radius == 0:
        return x * float(weights[0])
    kernel = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    channels = x.shape[1]
    padded = pad(x, radius, mode)
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def gaussian_blur(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian per channel (scipy's kernel and border modes)."""
    return separable_filter(x, gaussian_weights(sigma, truncate), mode)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 by truncation, as np.uint8(np.clip(x, 0, 1) * 255). The 1e-3 grey level keeps
    float32's rounding error (about 2e-5 levels) from truncating an exact integer, such as an unchanged
    pixel, one level down."""
    return (x.clamp(0, 1) * 255 + 1e-3).clamp(max=255).to(torch.uint8)


def linear_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """(SIZE, ch) matrix of clipped_zoom along one axis: the centre crop of ch = ceil(size / zoom) pixels,
    scipy.ndimage.zoom(order=1) to round(ch * zoom) pixels, the centre `size` of those."""
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    out = int(round(crop * zoom))
    coords = np.arange(out) * (crop - 1) / (out - 1) if out > 1 else np.zeros(1)
    low = np.floor(coords).astype(int).clip(0, crop - 1)
    high = np.minimum(low + 1, crop - 1)
    frac = coords - low
    matrix = np.zeros((out, size))
    matrix[np.arange(out), top + low] += 1 - frac
    matrix[np.arange(out), top + high] += frac
    trim = (out - size) // 2
    return matrix[trim:trim + size]


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    matrix = torch.as_tensor(linear_zoom_matrix(x.shape[-1], zoom), dtype=x.dtype, device=x.device)
    return matrix @ x @ matrix.T


def motion_blur_kernel(radius: int, sigma: float) -> np.ndarray:
    """ImageMagick's one-sided motion kernel: width 2 * radius + 1, weights exp(-i^2 / 2 sigma^2), i = 0.."""
    weights = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma ** 2))
    return weights / weights.sum()


def motion_blur_batch(x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """Blur each image along its own angle (degrees): sample i of the kernel reads the pixel
    (ceil(i sin - 1/2), ceil(i cos - 1/2)) away, edges replicated, as MagickMotionBlurImage does."""
    count, _, height, width = x.shape
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    radians = torch.deg2rad(angles.double())
    out = torch.zeros_like(x)
    batch = torch.arange(count, device=x.device)[:, None, None]
    for i, weight in enumerate(motion_blur_kernel(radius, sigma)):
        dy = torch.ceil(i * torch.sin(radians) - 0.5).long()
        dx = torch.ceil(i * torch.cos(radians) - 0.5).long()
        r = (rows[None, :] + dy[:, None]).clamp(0, height - 1)
        c = (cols[None, :] + dx[:, None]).clamp(0, width - 1)
        out += float(weight) * x[batch, :, r[:, :, None], c[:, None, :]].permute(0, 3, 1, 2)
    return out


def uniform(shape, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


def pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of Pillow's BOX resampling along one axis (its precompute_coeffs)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        positions = np.arange(xmin, xmax)
        offsets = (positions - center + 0.5) / filterscale
        weights = ((offsets > -0.5) & (offsets <= 0.5)).astype(float)
        matrix[xx, positions] = weights / weights.sum()
    return matrix


def pil_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow's BOX resize of uint8-valued floats: a horizontal pass, then a vertical one, each rounded."""
    columns = torch.as_tensor(pil_box_matrix(x.shape[-1], size), dtype=x.dtype, device=x.device)
    rows = torch.as_tensor(pil_box_matrix(x.shape[-2], size), dtype=x.dtype, device=x.device)
    horizontal = torch.floor(x @ columns.T + 0.5).clamp(0, 255)
    return torch.floor(rows @ horizontal + 0.5).clamp(0, 255)


def plasma_fractal(count: int, decay: float, generator: torch.Generator, device, size: int = SIZE) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], (count, size, size), with the original's wibble of
    wibble * uniform(-wibble, wibble)."""
    maps = torch.zeros(count, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def wibbled_mean(array):
        return array / 4 + wibble * uniform(array.shape, -wibble, wibble, generator, device)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled_mean(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / flat.max(1, keepdim=True).values).view(count, size, size)


FROST_FOLDER = Path(__file__).parent / "frost"
# The five pictures make_cifar_c.py draws from (frost1-frost5), as the imagecorruptions 1.1.2 wheel ships them
# (Apache-2.0, originally hendrycks/robustness), with the sha256 its RECORD lists: shipped here rather than
# installed with that package, whose opencv-python requirement would put a GUI build of cv2 over grad-cam's
# headless one (and fail to import where libGL is missing).
FROST_PICTURES = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}


def frost_picture(name: str) -> Path:
    """The path of one frost picture, checked against its published hash."""
    path = FROST_FOLDER / name
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != FROST_PICTURES[name]:
        raise UserError(f"{path} is missing or altered; reinstall this package (pip install -e .) or restore it "
                        "with git checkout")
    return path


_FROST_CACHE: dict = {}


def shrunk_frost_picture(name: str) -> np.ndarray:
    """One frost picture as the original uses it: read by cv2, shrunk to 0.2 by cv2.resize, RGB uint8 (H, W, 3)."""
    import cv2

    path = frost_picture(name)
    picture = cv2.imread(str(path))
    if picture is None:
        raise UserError(f"{path} is not a readable image; reinstall this package (pip install -e .)")
    return cv2.resize(picture, (0, 0), fx=0.2, fy=0.2)[..., ::-1].copy()


def frost_textures(device) -> list[torch.Tensor]:
    """frost1..frost5 (the original draws from the first five) on `device`, (3, H, W) uint8."""
    if device not in _FROST_CACHE:
        _FROST_CACHE[device] = [torch.from_numpy(shrunk_frost_picture(name)).permute(2, 0, 1).to(device)
                                for name in FROST_PICTURES]
    return _FROST_CACHE[device]


# -- the corruptions: float images in [0, 1] (N, 3, 32, 32) in, uint8 out ------------------------------------

def gaussian_noise(x, c, g):
    return to_uint8(x + c * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype))


def shot_noise(x, c, g):
    return to_uint8(torch.poisson(x * c, generator=g) / c)


def impulse_noise(x, c, g):
    """Salt and pepper per value, as skimage.util.random_noise(mode='s&p', amount=c)."""
    flipped = torch.rand(x.shape, generator=g, device=x.device) < c
    salted = torch.rand(x.shape, generator=g, device=x.device) < 0.5
    return to_uint8(torch.where(flipped, salted.to(x.dtype), x))


def defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The original's disk(): an aliased disk on a 17x17 grid, smoothed by a 3x3 Gaussian (cv2.GaussianBlur,
    reflect-101 borders)."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    weights = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    smoothed = separable_filter(torch.from_numpy(disk)[None, None], weights / weights.sum(), "mirror")
    return smoothed[0, 0].numpy()


def defocus_blur(x, c, g):
    kernel = torch.as_tensor(defocus_kernel(*c), dtype=x.dtype, device=x.device)
    padded = pad(x, kernel.shape[-1] // 2, "mirror")  # cv2.filter2D's default border: reflect-101
    return to_uint8(F.conv2d(padded, kernel.expand(3, 1, *kernel.shape), groups=3))


def glass_blur(x, c, g):
    sigma, delta, iterations = c
    x = to_uint8(gaussian_blur(x, sigma)).to(x.dtype)
    count = x.shape[0]
    batch = torch.arange(count, device=x.device)
    # the original's local shuffle: each pixel, bottom-right to top-left, swaps with a neighbour drawn
    # from randint(-delta, delta); the swaps are sequential per image, vectorised across the batch
    for _ in range(iterations):
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                dy, dx = torch.randint(-delta, delta, (2, count), generator=g, device=x.device)
                here = x[batch, :, h, w].clone()
                there = x[batch, :, h + dy, w + dx].clone()
                x[batch, :, h, w] = there
                x[batch, :, h + dy, w + dx] = here
    return to_uint8(gaussian_blur(x / 255, sigma))


def motion_blur(x, c, g):
    angles = uniform((x.shape[0],), -45, 45, g, x.device)
    blurred = motion_blur_batch(x * 255, c[0], c[1], angles)
    return torch.floor(blurred + 0.5).clamp(0, 255).to(torch.uint8)  # ImageMagick rounds to uint8


def zoom_blur(x, c, g):
    out = x.clone()
    for zoom in c:
        out += clipped_zoom(x, float(zoom))
    return to_uint8(out / (len(c) + 1))


def snow(x, c, g):
    count = x.shape[0]
    layer = c[0] + c[1] * torch.randn((count, 1, SIZE, SIZE), generator=g, device=x.device, dtype=x.dtype)
    layer = clipped_zoom(layer, c[2])
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer)
    layer = to_uint8(layer).to(x.dtype)
    angles = uniform((count,), -135, -45, g, x.device)
    layer = torch.floor(motion_blur_batch(layer, c[4], c[5], angles) + 0.5).clamp(0, 255) / 255
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, grey * 1.5 + 0.5)
    return to_uint8(x + layer + layer.flip(-1, -2))


def frost(x, c, g):
    textures = frost_textures(x.device)
    count = x.shape[0]
    which = torch.randint(0, len(textures), (count,), generator=g, device=x.device)
    overlay = torch.empty_like(x)
    steps = torch.arange(SIZE, device=x.device)
    for k, texture in enumerate(textures):
        chosen = torch.nonzero(which == k).flatten()
        if len(chosen) == 0:
            continue
        top = torch.randint(0, texture.shape[1] - SIZE, (len(chosen),), generator=g, device=x.device)
        left = torch.randint(0, texture.shape[2] - SIZE, (len(chosen),), generator=g, device=x.device)
        rows = (top[:, None] + steps)[:, :, None]
        cols = (left[:, None] + steps)[:, None, :]
        overlay[chosen] = texture[:, rows, cols].permute(1, 0, 2, 3).to(x.dtype)
    return (c[0] * x * 255 + c[1] * overlay).clamp(0, 255).to(torch.uint8)


def fog(x, c, g):
    peak = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    x = x + c[0] * plasma_fractal(x.shape[0], c[1], g, x.device).to(x.dtype)[:, None]
    return to_uint8(x * peak / (peak + c[0]))


def brightness(x, c, g):
    """V of HSV raised by c (clipped at 1) with hue and saturation kept: every channel scales by V'/V."""
    value = x.max(1, keepdim=True).values
    raised = (value + c).clamp(max=1)
    return to_uint8(torch.where(value > 0, x * raised / value.clamp(min=1e-12), raised))


def contrast(x, c, g):
    means = x.mean((2, 3), keepdim=True)
    return to_uint8((x - means) * c + means)


def solve_affine(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) affine maps that take the three (x, y) points `source` to `target` (cv2.getAffineTransform)."""
    ones = torch.ones(*source.shape[:2], 1, dtype=source.dtype, device=source.device)
    return torch.linalg.solve(torch.cat([source, ones], 2), target).transpose(1, 2)


def sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, border: str) -> torch.Tensor:
    """Bilinear samples of x at pixel coordinates (N, H, W); border 'mirror' (reflect-101, as cv2) or
    'reflect' (half-sample symmetric, as scipy)."""
    height, width = x.shape[-2:]
    if border == "mirror":  # align_corners=True reflects about the border pixel centres
        grid = torch.stack([2 * cols / (width - 1) - 1, 2 * rows / (height - 1) - 1], -1)
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=True)
    grid = torch.stack([(2 * cols + 1) / width - 1, (2 * rows + 1) / height - 1], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)


def elastic_transform(x, c, g):
    alpha, sigma, shift = c
    count = x.shape[0]
    centre, square = SIZE // 2, SIZE // 3
    corners = torch.tensor([[centre + square, centre + square], [centre + square, centre - square],
                            [centre - square, centre - square]], dtype=torch.float64, device=x.device)
    moved = corners + uniform((count, 3, 2), -shift, shift, g, x.device)
    # cv2.warpAffine maps each output pixel back through the inverse: solve moved -> corners directly
    inverse = solve_affine(moved, corners.expand(count, 3, 2))
    rows, cols = torch.meshgrid(torch.arange(SIZE, device=x.device, dtype=torch.float64),
                                torch.arange(SIZE, device=x.device, dtype=torch.float64), indexing="ij")
    points = torch.stack([cols, rows, torch.ones_like(rows)], -1).view(1, -1, 3)
    source = points @ inverse.transpose(1, 2)  # (N, H*W, 2) as (x, y)
    x = sample(x, source[..., 1].view(count, SIZE, SIZE), source[..., 0].view(count, SIZE, SIZE), "mirror")
    fields = uniform((count, 2, SIZE, SIZE), -1, 1, g, x.device)
    dy, dx = (gaussian_blur(fields, sigma, mode="reflect", truncate=3) * alpha).unbind(1)
    return to_uint8(sample(x, rows + dy, cols + dx, "reflect"))


def pixelate(x, c, g):
    small = pil_resize(x * 255, int(SIZE * c))
    return pil_resize(small, SIZE).to(torch.uint8)


def jpeg_compression(x, c, g):
    images = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=c)
        out.append(np.asarray(Image.open(buffer)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device)


# The registry, in CIFAR-10-C's order.
CORRUPTIONS = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
               "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur,
               "zoom_blur": zoom_blur, "snow": snow, "frost": frost, "fog": fog, "brightness": brightness,
               "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
               "jpeg_compression": jpeg_compression}
NAMES = list(CORRUPTIONS)  # CIFAR-10-C's order, which the per-set seeds and the exported files follow


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) images -> the same images under corruption `name` at `severity` (1-5), uint8."""
    if name not in CORRUPTIONS:
        raise UserError(f"unknown corruption {name!r}; choose from {', '.join(NAMES)}")
    if severity not in SEVERITIES:
        raise UserError(f"severity {severity} is not one of 1-5")
    if tuple(images.shape[1:]) != (3, SIZE, SIZE):
        raise UserError(f"corruptions take 32x32 RGB images, got shape {tuple(images.shape)}")
    x = images.float() / 255
    return CORRUPTIONS[name](x, PARAMETERS[name][severity - 1], generator).contiguous()


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """A generator seed per (seed, corruption, severity): every set is reproducible on its own."""
    return seed * 1_000_003 + NAMES.index(name) * 10 + severity


def severity_generator(seed: int, name: str, severity: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(corruption_seed(seed, name, severity))

