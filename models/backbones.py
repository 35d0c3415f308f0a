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
    """Makes the top `top_layers` layers that have weights trainable (0: all of them), batch normalization
    excepted: its layers stay frozen and, since the backbone is called with training=False, in inference mode
    (keras-io's transfer-learning guide). A hub.KerasLayer (a TF-Hub model, or the project's own backbone saved
    as one) is one Keras layer, so its layers are its variables grouped by name scope (`conv1/kernel` is layer
    `conv1`), in the SavedModel's order. Returns how many variables train now."""
    layer.trainable = True
    if isinstance(layer, hub.KerasLayer):
        return _unfreeze_hub(layer, top_layers)
    leaves = [item for item in _leaves(layer) if item.weights]
    learnable = [item for item in leaves if not isinstance(item, keras.layers.BatchNormalization)]
    chosen = learnable[-top_layers:] if top_layers else learnable
    for item in leaves:
        item.trainable = any(item is other for other in chosen)
    return len(layer.trainable_weights)


def settle(layer: keras.layers.Layer) -> None:
    """After fine-tuning: a hub.KerasLayer's variables back in the order a freshly loaded one lists them (the
    SavedModel's trainable variables, then the rest), so that a saved model's weights load back into the right
    variables; `unfreeze` had moved the frozen ones (batch norm's among them) to the non-trainable list. Other
    layers keep their order whatever is frozen, so they are left as they are."""
    if not isinstance(layer, hub.KerasLayer):
        return
    trainable = list(layer._func.trainable_variables)
    kept = {id(variable) for variable in trainable}
    layer._trainable_weights[:] = trainable
    layer._non_trainable_weights[:] = [variable for variable in layer._func.variables if id(variable) not in kept]


BATCH_NORM_VARIABLES = {"gamma", "beta", "moving_mean", "moving_variance"}


def variable_layers(variables) -> dict[str, list]:
    """Variables grouped by layer: the name scope before the last '/' (`block2/conv/kernel:0` -> `block2/conv`)."""
    groups: dict[str, list] = {}
    for variable in variables:
        name = variable.name.split(":")[0]
        groups.setdefault(name.rsplit("/", 1)[0] if "/" in name else name, []).append(variable)
    return groups


def _unfreeze_hub(layer: hub.KerasLayer, top_layers: int) -> int:
    """The top `top_layers` variable groups of a hub layer train (0: all), batch normalization's never.

    hub.KerasLayer registers the SavedModel's trainable variables as its trainable weights, all or nothing;
    the ones left frozen move to its non-trainable weights, where the optimizer does not see them."""
    trainable = list(layer._func.trainable_variables)  # what the SavedModel reports as trainable, in its order
    groups = variable_layers(trainable)
    learnable = [name for name, items in groups.items()
                 if not {item.name.split(":")[0].rsplit("/", 1)[-1] for item in items} <= BATCH_NORM_VARIABLES]
    chosen = set(learnable[-top_layers:] if top_layers else learnable)
    train = [variable for name in groups if name in chosen for variable in groups[name]]
    kept = {id(variable) for variable in train}
    others = [weight for weight in layer._non_trainable_weights if all(weight is not item for item in trainable)]
    # in place: assigning a list of trainable variables to a Keras layer's attribute would track them as trainable
    layer._trainable_weights[:] = train
    layer._non_trainable_weights[:] = [variable for variable in trainable if id(variable) not in kept] + others
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
