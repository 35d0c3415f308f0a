"""`init` on a folder of class sub-folders of images: the classes, the image size and the channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.core.errors import DataError
from pipelines.data.propose import Choice, Proposal, image_files, listed, subfolders, where

IMAGE_SIDES = (8, 16, 24, 32, 48, 64)  # canonical sides on offer: multiples of 4 that fit a microcontroller
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
SAMPLED_IMAGES = 64


def _look(path: Path) -> tuple[int, int, bool] | None:
    """(width, height, whether it is grey) from the header and a thumbnail; None when it cannot be read."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.mode in GREY_MODES:
                return width, height, True
            image.draft("RGB", (64, 64))  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
            small.thumbnail((32, 32))
            pixels = np.asarray(small, dtype=np.int16)
            return width, height, int(np.abs(pixels - pixels[..., :1]).max()) <= 8
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _sample(files: dict[str, list[Path]], count: int) -> list[Path]:
    """Up to `count` files, spread evenly over the classes and over each class's files."""
    share = max(1, count // max(len(files), 1))
    return [paths[int(index)] for paths in files.values() if paths
            for index in np.unique(np.linspace(0, len(paths) - 1, min(share, len(paths))).round())]


def propose(folder: Path, shown: str, **_) -> Proposal:
    """The image folder's classes (empty class folders left out), its images' usual side and whether any has
    colour, from a sample of up to SAMPLED_IMAGES spread over the classes."""
    files = {path.name: image_files(path) for path in subfolders(folder)}
    present = [name for name, paths in files.items() if paths]
    if len(present) < 2:
        raise DataError(f"{folder}: images in {len(present)} class folder ({', '.join(present)}); classification "
                        "needs at least two, one sub-folder per class")
    looks = [(path, _look(path)) for path in _sample({name: files[name] for name in present}, SAMPLED_IMAGES)]
    readable = [look for _, look in looks if look]
    if not readable:
        raise DataError(f"{looks[0][0]}: cannot be read as an image, nor can any of the {len(looks)} sampled files")
    widths, heights = int(np.median([look[0] for look in readable])), int(np.median([look[1] for look in readable]))
    short = int(np.median([min(look[:2]) for look in readable]))
    side = max([size for size in IMAGE_SIDES if size <= short] or [IMAGE_SIDES[0]])
    colour = sum(not look[2] for look in readable)
    channels = 3 if colour else 1
    counts = {name: len(files[name]) for name in present}
    choices = [
        Choice("data.source", "image_folder", "a folder of class sub-folders of images; the folder names are the "
               f"classes: {listed(counts)} files"),
        Choice("data.path", shown, where(shown)),
        Choice("data.image_size", side, f"the images are mostly {widths}x{heights} px (median of {len(readable)} "
               f"sampled; shorter side {short} px); {side} px is the largest side on offer "
               f"({', '.join(map(str, IMAGE_SIDES))}) that needs no upscaling; a larger side costs the device "
               "memory and time"),
        Choice("data.channels", channels, f"{colour} of {len(readable)} sampled images have colour: RGB" if colour
               else f"all {len(readable)} sampled images are grey: one channel (a third of the memory of RGB)"),
    ]
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        choices.append(Choice("data.classes", present, f"folder(s) {', '.join(empty)} hold no image: left out (a "
                              "class without items cannot be trained); name a class here to keep only some"))
    if channels == 3:
        choices.append(Choice("normalize.scope", "per_channel", "colour: one mean and spread per channel, fitted on "
                              "the training split"))
    choices.append(Choice("model.architecture", "small_cnn", "a small convolutional network sized for an edge "
                          "device; resnet or transfer (a pretrained backbone) may score higher at a larger cost"))
    unread = len(looks) - len(readable)
    found = (f"images, {len(present)} classes ({listed(counts)} files), mostly {widths}x{heights} px "
             f"{'RGB' if channels == 3 else 'grey'}" + (f"; {unread} sampled file(s) unreadable (analyze lists "
                                                          "them, clean drops them)" if unread else ""))
    return Proposal("images", found, tuple(choices))
