"""Where pretrained weights have to be on disk for a machine that downloads nothing, computed without TensorFlow
(so that a config can be checked at load, before any stage or TensorFlow runs).

- keras.applications with `weights="imagenet"` reads `<cache>/models/<file>`, downloading it only when absent;
  `<cache>` is `$KERAS_HOME`, else `~/.keras` (`/tmp/.keras` when that is not writable), as `get_file` decides.
  `<file>` is the name each architecture's builder gives its include_top=False weights (tf_keras 2.x sources,
  checked against the builders themselves in tests/test_training.py).
- a TF-Hub URL is read from `<TFHUB_CACHE_DIR or tmp>/tfhub_modules/<sha1 of the handle>` when that folder holds
  the unpacked model; otherwise tensorflow_hub downloads it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_MOBILENET_SIDES = (128, 160, 192, 224)
_MOBILENET_V2_SIDES = (96, 128, 160, 192, 224)


def _fixed(name: str, suffix: str = "_weights_tf_dim_ordering_tf_kernels_notop.h5"):
    return lambda side: name + suffix


# application -> the file name of its ImageNet weights without the top, given the input's side in pixels
# (alpha 1.0, the builders' default; MobileNet and MobileNetV2 have weights per input side and fall back to 224)
_FILES = {
    "MobileNet": lambda side: f"mobilenet_1_0_{side if side in _MOBILENET_SIDES else 224}_tf_no_top.h5",
    "MobileNetV2": lambda side: ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_"
                                 f"{side if side in _MOBILENET_V2_SIDES else 224}_no_top.h5"),
    "MobileNetV3Small": _fixed("weights_mobilenet_v3_small_224_1.0_float", "_no_top_v2.h5"),
    "MobileNetV3Large": _fixed("weights_mobilenet_v3_large_224_1.0_float", "_no_top_v2.h5"),
    **{name: _fixed(name.lower()) for name in ("ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2",
                                               "ResNet152V2", "VGG16", "VGG19", "DenseNet121", "DenseNet169",
                                               "DenseNet201", "Xception")},
    "InceptionV3": _fixed("inception_v3"),
    "InceptionResNetV2": _fixed("inception_resnet_v2"),
    "NASNetMobile": _fixed("nasnet_mobile", "_no_top.h5"),
    "NASNetLarge": _fixed("nasnet_large", "_no_top.h5"),
    **{f"EfficientNetB{index}": _fixed(f"efficientnetb{index}", "_notop.h5") for index in range(8)},
    **{f"EfficientNetV2{size.upper()}": _fixed(f"efficientnetv2-{size.lower()}", "_notop.h5")
       for size in ("b0", "b1", "b2", "b3", "s", "m", "l")},
    **{f"ConvNeXt{size}": _fixed(f"convnext_{size.lower()}", "_notop.h5")
       for size in ("Tiny", "Small", "Base", "Large", "XLarge")},
    **{f"RegNet{kind.upper()}{flops}": _fixed(f"regnet{kind}{flops}", "_notop.h5") for kind in ("x", "y")
       for flops in ("002", "004", "006", "008", "016", "032", "040", "064", "080", "120", "160", "320")},
}

APPLICATIONS = tuple(_FILES)


def keras_cache_dir() -> Path:
    """The folder keras.applications reads cached weights from: `<KERAS_HOME or ~/.keras>/models`, or
    `/tmp/.keras/models` when the first is not writable (as `keras.utils.get_file` decides)."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    if not os.access(base, os.W_OK) and os.path.exists(base):
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "models"


def imagenet_weights_file(application: str, side: int) -> Path:
    """Where keras.applications looks for `application`'s ImageNet weights (include_top=False) for square inputs
    of `side` pixels.

    Raises:
        KeyError: an application this table does not know.
    """
    return keras_cache_dir() / _FILES[application](side)


def is_url(handle: str) -> bool:
    return handle.startswith(("http://", "https://", "gs://"))


def hub_cache_folder(handle: str) -> Path:
    """The folder tensorflow_hub reads a URL handle from (and downloads into when it is empty or absent)."""
    base = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
    return Path(base) / hashlib.sha1(handle.encode("utf8")).hexdigest()
