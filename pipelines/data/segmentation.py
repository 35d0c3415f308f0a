"""Segmentation data: digits on cluttered canvases (generated, seeded), or a user's images and masks.

Generated: scikit-learn's 8x8 digits are split into training and validation pools first (stratified), then
placed at random positions and sizes on canvases with lines, blobs and pixel noise; each pixel's class is
0 for background (clutter included) and 1 + the digit for digit strokes. No digit image appears on canvases
of both sides. Folders: `images_dir/<stem>.<ext>` pairs with `masks_dir/<stem>.png` holding class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from pipelines.core import config as config_module
from pipelines.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
STROKE_THRESHOLD = 0.35  # a placed digit's pixel belongs to the digit above this share of full intensity


@dataclass(frozen=True)
class SegmentationData:
    """uint8 images (N, H, W, 1) in [0, 255], uint8 masks (N, H, W) of class indices, and class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: tuple[str, ...]


def _clutter(draw: ImageDraw.ImageDraw, size: int, count: int, rng: np.random.Generator) -> None:
    for _ in range(count):
        shade = int(rng.integers(60, 200))
        if rng.random() < 0.5:
            ends = [int(value) for value in rng.integers(0, size, 4)]
            draw.line(ends, fill=shade, width=int(rng.integers(1, 3)))
        else:
            left, top = (int(value) for value in rng.integers(0, size - 4, 2))
            right, bottom = left + int(rng.integers(2, 7)), top + int(rng.integers(2, 7))
            draw.ellipse([left, top, right, bottom], fill=shade)


def _canvas(digits: np.ndarray, labels: np.ndarray, settings: config_module.SegmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = settings.canvas_size
    background = Image.new("L", (size, size), 0)
    _clutter(ImageDraw.Draw(background), size, settings.clutter, rng)
    image = np.asarray(background, dtype=np.float32)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(settings.digits_per_canvas[0], settings.digits_per_canvas[1] + 1))):
        which = int(rng.integers(len(digits)))
        side = int(rng.integers(settings.digit_size[0], settings.digit_size[1] + 1))
        glyph = Image.fromarray((digits[which] * (255.0 / 16.0)).astype(np.uint8)).resize(
            (side, side), Image.Resampling.BILINEAR)
        glyph = np.asarray(glyph, dtype=np.float32) * rng.uniform(0.7, 1.0)
        top, left = (int(value) for value in rng.integers(0, size - side + 1, 2))
        window = (slice(top, top + side), slice(left, left + side))
        image[window] = np.maximum(image[window], glyph)
        mask[window][glyph > STROKE_THRESHOLD * 255.0] = labels[which] + 1
    image += rng.normal(0.0, settings.noise_std, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)[..., None], mask


def generate(settings: config_module.SegmentConfig) -> SegmentationData:
    """Seeded canvases from scikit-learn's digits, training and validation pools disjoint."""
    digits = load_digits()
    total = settings.train_canvases + settings.val_canvases
    pools = train_test_split(digits.images, digits.target, test_size=settings.val_canvases / total,
                             stratify=digits.target, random_state=settings.seed)
    rng = np.random.default_rng(settings.seed)
    sides = []
    for images, labels, count in ((pools[0], pools[2], settings.train_canvases),
                                  (pools[1], pools[3], settings.val_canvases)):
        pairs = [_canvas(images, labels, settings, rng) for _ in range(count)]
        sides.append((np.stack([pair[0] for pair in pairs]), np.stack([pair[1] for pair in pairs])))
    names = ("background", *(str(digit) for digit in range(10)))
    return SegmentationData(*sides[0], *sides[1], names)


def load_folders(settings: config_module.SegmentConfig, root: Path) -> SegmentationData:
    """A user's image/mask pairs, resized to the canvas (images bilinear, masks nearest), split seeded.

    Raises:
        DataError: a folder, or an image's mask, is missing (named); an unreadable file, or a mask value outside
            [0, num_classes), naming the file.
    """
    images_dir, masks_dir = Path(root) / settings.images_dir, Path(root) / settings.masks_dir  # absolute stays
    for name, folder in (("images_dir", images_dir), ("masks_dir", masks_dir)):
        if not folder.is_dir():
            raise DataError(f"segment.{name}: no folder {folder}")
    paths = sorted(path for path in images_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise DataError(f"segment.images_dir: {images_dir} holds {len(paths)} images; at least 2 are needed")
    size = (settings.canvas_size, settings.canvas_size)
    images, masks = [], []
    for path in paths:
        mask_path = masks_dir / f"{path.stem}.png"
        if not mask_path.is_file():
            raise DataError(f"segment: image {path} has no mask {mask_path}")
        try:
            image = Image.open(path).convert("L").resize(size, Image.Resampling.BILINEAR)
            mask = np.asarray(Image.open(mask_path).resize(size, Image.Resampling.NEAREST))
        except OSError as error:
            raise DataError(f"segment: cannot read {path} or {mask_path}: {error}") from None
        if mask.ndim != 2:
            raise DataError(f"segment: mask {mask_path} must be single-channel class indices, got shape "
                             f"{mask.shape}")
        if mask.max() >= settings.num_classes:
            raise DataError(f"segment: mask {mask_path} holds class {int(mask.max())}, but "
                             f"segment.num_classes is {settings.num_classes}")
        images.append(np.asarray(image, np.uint8)[..., None])
        masks.append(mask.astype(np.uint8))
    x_train, x_val, y_train, y_val = train_test_split(np.stack(images), np.stack(masks),
                                                      test_size=settings.val_fraction, random_state=settings.seed)
    names = tuple(f"class_{index}" for index in range(settings.num_classes))
    return SegmentationData(x_train, y_train, x_val, y_val, names)


def load(settings: config_module.SegmentConfig, root: Path) -> SegmentationData:
    return generate(settings) if settings.source == "generated" else load_folders(settings, root)
