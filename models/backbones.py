"""Pretrained backbones from one registry: TF-Hub, keras.applications, and the project's own.

- `hub`: a TF-Hub handle or URL (needs a machine that is online), or a local SavedModel path, through
  `hub.KerasLayer`.
- `applications`: a keras.applications architecture with a local weights file (include_top=False), or
  'imagenet' when online; the architecture's own `preprocess_input` is inside the backbone.
- `project_autoencoder`, `project_source_task`: backbones the project pretrains itself (pretrain stage) and
  saves in TF-Hub's SavedModel format; they load back through the same `hub.KerasLayer` path as any hub model.
A randomly initialized network is never returned as pretrained.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras as keras

from models.settings import BackboneSettings

CUSTOM_OBJECTS = {"KerasLayer": hub.KerasLayer}  # what a saved model with a hub layer needs to load back


def save_for_hub(encoder: keras.Model, path: Path) -> None:
    """Saves a Keras encoder as a TF2 SavedModel that `hub.KerasLayer` loads (TF-Hub's reusable format)."""
    tf.saved_model.save(encoder, str(path))


def resolve_handle(backbone: BackboneSettings, root: Path, pretrained: Path | None) -> str:
    """The handle hub.KerasLayer gets: the project's SavedModel, a local path under root, or the text as given."""
    if pretrained is not None:
        if not Path(pretrained).is_dir():
            raise FileNotFoundError(f"model.backbone.kind '{backbone.kind}': no SavedModel at {pretrained}")
        return str(pretrained)
    if backbone.kind != "hub":
        raise ValueError(f"model.backbone.kind '{backbone.kind}': a project backbone needs its pretrained "
                         "SavedModel; run 'pretrain' first")
    local = Path(root) / backbone.handle
    return str(local) if local.exists() else backbone.handle


def _application(backbone: BackboneSettings, input_shape: tuple[int, ...], root: Path) -> keras.Model:
    builder = getattr(keras.applications, backbone.application, None)
    if builder is None:
        raise ValueError(f"model.backbone.application: keras.applications has no '{backbone.application}'")
    weights = backbone.weights
    if weights != "imagenet":
        weights = str(Path(root) / weights)
        if not Path(weights).is_file():
            raise FileNotFoundError(f"model.backbone.weights: {weights} not found")
    module = importlib.import_module(builder.__module__)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Lambda(module.preprocess_input, name="preprocess_input")(inputs)
    base = builder(include_top=False, weights=weights, input_shape=input_shape, pooling="avg")
    base.trainable = False
    return keras.Model(inputs, base(x, training=False), name="backbone")


def load(backbone: BackboneSettings, input_shape: tuple[int, ...], root: Path,
         pretrained: Path | None = None) -> keras.layers.Layer:
    """The frozen backbone as a Keras layer (or model) mapping images in [0, 255] to a feature vector."""
    if backbone.kind == "applications":
        return _application(backbone, input_shape, root)
    return hub.KerasLayer(resolve_handle(backbone, root, pretrained), trainable=False, name="backbone")


def unfreeze(layer: keras.layers.Layer, top_layers: int) -> int:
    """Makes the top `top_layers` layers trainable (0: all), batch norm excepted; returns how many variables
    train now. A hub.KerasLayer is one opaque layer: all of its variables train."""
    if isinstance(layer, hub.KerasLayer):
        layer.trainable = True
        return len(layer.trainable_weights)
    layer.trainable = True
    leaves = [item for item in _leaves(layer) if item.weights]
    chosen = leaves if not top_layers else leaves[-top_layers:]
    for item in leaves:
        item.trainable = item in chosen and not isinstance(item, keras.layers.BatchNormalization)
    return len(layer.trainable_weights)


def _leaves(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a model with nested models flattened, in order."""
    found = []
    for item in model.layers:
        if isinstance(item, keras.Model):
            item.trainable = True
            found.extend(_leaves(item))
        else:
            found.append(item)
    return found
