"""Typed, frozen, nested experiment configuration.

A YAML file (loaded with `yaml.safe_load`) is a small diff of the defaults below. Every field has a default
and a one-line doc; unknown keys and bad values raise `ConfigError` naming the key path and the rule before
any work starts, e.g. `train.learning_rate: must be > 0, got -1`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key or value that breaks a rule; the message names the key path."""


Rule = Callable[[Any], "str | None"]


def greater_than(bound: float) -> Rule:
    return lambda value: None if value > bound else f"must be > {bound:g}, got {value!r}"


def at_least(bound: float) -> Rule:
    return lambda value: None if value >= bound else f"must be >= {bound:g}, got {value!r}"


def below(bound: float) -> Rule:
    return lambda value: None if value < bound else f"must be < {bound:g}, got {value!r}"


def one_of(*choices: str) -> Rule:
    def check(value: Any) -> str | None:
        values = value if isinstance(value, tuple) else (value,)
        bad = [item for item in values if item not in choices]
        return None if not bad else f"must be one of {list(choices)}, got {bad[0]!r}"

    return check


def non_empty(value: Any) -> str | None:
    return None if len(value) else "must not be empty"


def option(default: Any, doc: str, *rules: Rule) -> Any:
    """A config field with its one-line doc and the rules its value must pass."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, "rules": rules})
    return field(default=default, metadata={"doc": doc, "rules": rules})


SEARCHABLE_KINDS = ("log_uniform", "uniform", "int", "choice")


IMAGE_SOURCES = ("digits", "image_folder")
TABLE_SOURCES = ("breast_cancer", "wine", "diabetes", "csv")


@dataclass(frozen=True)
class ColumnRule:
    min: float | None = option(None, "declared minimum; values below it break the rule")
    max: float | None = option(None, "declared maximum; values above it break the rule")
    out_of_range: str = option("missing", "what clean does with a value outside [min, max]",
                               one_of("missing", "clip", "drop"))
    impute: str = option("none", "how a missing value is filled (fitted on the training split)",
                         one_of("none", "median", "most_frequent", "derive"))
    derive_from: str = option("", "column this one follows: value = derive_offset + derive_scale * other")
    derive_scale: float = option(1.0, "scale of the relation with derive_from")
    derive_offset: float = option(0.0, "offset of the relation with derive_from")
    derive_tolerance: float = option(1.0, "largest gap from the relation before a row counts as inconsistent",
                                     at_least(0))
    bins: int = option(0, "discretize into this many quantile bins (0 keeps the value)", at_least(0))


@dataclass(frozen=True)
class DataConfig:
    source: str = option("digits", "embedded dataset, or image_folder / csv under data.path",
                         one_of(*IMAGE_SOURCES, *TABLE_SOURCES))
    path: str = option("", "image folder (one sub-folder per class) or CSV file, relative to runtime.root")
    target: str = option("", "CSV target column")
    task: str = option("auto", "classification or regression (auto: embedded sources know, CSV guesses)",
                       one_of("auto", "classification", "regression"))
    group_column: str = option("", "CSV column whose groups never cross splits")
    time_column: str = option("", "CSV column that orders rows in time (split.strategy: temporal)")
    image_size: int = option(16, "side in pixels of the canonical square image", at_least(8))
    channels: int = option(1, "channels of the canonical image (1 grey, 3 RGB)", one_of(1, 3))
    classes: tuple[str, ...] = option((), "keep only these classes, by name (empty: all); labels are renumbered")
    near_duplicate_distance: int = option(
        10, "largest perceptual-hash Hamming distance (of 64 bits) between near-duplicate images (both sides "
        ">= 32 px; smaller images are compared by content hash only); 0 turns it off",
        at_least(0))
    high_cardinality: int = option(50, "a categorical column with more distinct values is reported", at_least(2))
    columns: dict[str, ColumnRule] = option({}, "declared rules per table column")


@dataclass(frozen=True)
class CleanConfig:
    drop_exact_duplicates: bool = option(True, "keep the first of identical images or rows, log the others")
    drop_label_conflicts: bool = option(True, "drop every copy of an item that carries two labels")
    drop_constant_columns: bool = option(True, "drop table columns with a single value")


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = option(0.15, "fraction of the data held out for validation", greater_than(0), below(1))
    test_fraction: float = option(0.15, "fraction of the data held out for the final test", greater_than(0), below(1))
    seed: int = option(0, "seed of the shuffle")
    strategy: str = option("stratified", "stratified (classification), random, or temporal (data.time_column)",
                           one_of("stratified", "random", "temporal"))
    group: str = option("none", "also keep each data.group_column group in one split (duplicate and "
                        "near-duplicate images are always kept together)", one_of("none", "column"))
    folds: int = option(0, "k folds over train+val for the search stage (0: none)", at_least(0))


@dataclass(frozen=True)
class NormalizeConfig:
    method: str = option("zscore", "zscore or minmax, fitted on the training split", one_of("zscore", "minmax"))
    scope: str = option("global", "images: one statistic for all pixels (global) or one per channel",
                        one_of("global", "per_channel"))


PROJECT_BACKBONES = ("project_autoencoder", "project_source_task")


@dataclass(frozen=True)
class BackboneConfig:
    kind: str = option("project_autoencoder", "where the pretrained backbone comes from",
                       one_of(*PROJECT_BACKBONES, "hub", "applications"))
    handle: str = option("", "hub: a TF-Hub handle or URL (online), or a local SavedModel path")
    application: str = option("MobileNetV2", "applications: a keras.applications architecture name")
    weights: str = option("", "applications: a weights file (include_top=False), or 'imagenet' when online")
    source_classes: tuple[int, ...] = option((0, 1, 2, 3, 4), "project_source_task: classes of the source task")
    pretrain_epochs: int = option(30, "epochs of the project's own pretraining", at_least(1))
    noise_std: float = option(40.0, "project_autoencoder: std of the Gaussian noise on 0-255 inputs", at_least(0))
    filters: tuple[int, ...] = option((32, 64), "project backbones: convolution filters per block", non_empty)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = option("small_cnn", "name in models.architectures(): small_cnn, resnet, mlp (tables), "
                               "transfer (a pretrained backbone and a head)",
                               one_of("small_cnn", "resnet", "mlp", "transfer"))
    filters: tuple[int, ...] = option((32, 64), "convolution filters per block (resnet: per stage)", non_empty)
    dense_units: int = option(128, "units of each hidden dense layer", at_least(1))
    hidden_layers: int = option(2, "hidden dense layers of the mlp", at_least(1))
    bottleneck: int = option(0, "filters of a 1x1 convolution before the head (0: none)", at_least(0))
    batch_norm: bool = option(False, "batch normalization after each convolution")
    initializer: str = option("he_normal", "kernel initializer",
                              one_of("he_normal", "he_uniform", "glorot_uniform", "glorot_normal"))
    dropout_rate: float = option(0.25, "dropout before the dense layers", at_least(0), below(1))
    l1: float = option(0.0, "L1 penalty on kernel weights", at_least(0))
    l2: float = option(1e-4, "L2 penalty on kernel weights", at_least(0))
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(60, "maximum number of epochs", at_least(1))
    batch_size: int = option(32, "examples per gradient step", at_least(1))
    learning_rate: float = option(1e-3, "initial learning rate", greater_than(0))
    optimizer: str = option("adam", "adam, sgd (momentum 0.9, Nesterov), rmsprop or adagrad",
                            one_of("adam", "sgd", "rmsprop", "adagrad"))
    patience: int = option(12, "epochs without val_loss improvement before early stopping", at_least(1))
    loss: str = option("auto", "auto (sparse categorical cross-entropy or MSE by task) or a loss name",
                       one_of("auto", "sparse_categorical_crossentropy", "categorical_crossentropy",
                              "binary_crossentropy", "mae", "mse", "mape"))
    reduce_lr_patience: int = option(0, "ReduceLROnPlateau patience in epochs (0: off)", at_least(0))
    checkpoint: bool = option(True, "ModelCheckpoint of the best val_loss weights in the stage folder")
    class_weights: str = option("none", "balanced: weight classes inversely to their training frequency",
                                one_of("none", "balanced"))
    seed: int = option(0, "seed of weight initialization and shuffling")


@dataclass(frozen=True)
class TransferConfig:
    method: str = option("frozen", "feature_cache (head on cached features), frozen (backbone inside the model), "
                         "fine_tune (frozen, then a second phase with the top layers unfrozen)",
                         one_of("feature_cache", "frozen", "fine_tune"))
    fine_tune_layers: int = option(0, "layers unfrozen from the top (0: every layer; a TF-Hub layer is one)",
                                   at_least(0))
    fine_tune_lr_factor: float = option(0.1, "phase-2 learning rate = train.learning_rate * this factor (10 to "
                                        "100 times smaller)", at_least(0.01), below(0.1 + 1e-12))
    fine_tune_epochs: int = option(20, "maximum epochs of the fine-tuning phase", at_least(1))


@dataclass(frozen=True)
class AugmentConfig:
    transforms: tuple[dict, ...] = option((), "albumentations transforms, each {name: ..., other arguments}, "
                                          "applied to the training split only")
    strength: float = option(1.0, "multiplies every transform's probability p (default 0.5), capped at 1: "
                             "one searchable knob for how much augmentation", at_least(0))
    seed: int = option(0, "seed of the augmentation pipeline")


@dataclass(frozen=True)
class ParamSpace:
    kind: str = option("uniform", "distribution", one_of(*SEARCHABLE_KINDS))
    low: float = option(0.0, "lower bound (log_uniform, uniform, int)")
    high: float = option(1.0, "upper bound (log_uniform, uniform, int)")
    values: tuple = option((), "candidates (choice)")


@dataclass(frozen=True)
class SearchConfig:
    n_trials: int = option(4, "phase 1: random-search trials", at_least(0))
    grid_points: int = option(0, "phase 2: grid values per numeric parameter around the top trials (0: no grid)",
                              at_least(0))
    top_k: int = option(3, "phase 2: the best random trials whose region the grid spans", at_least(1))
    max_trials: int = option(0, "budget: most trials in all (0: no cap)", at_least(0))
    max_seconds: float = option(0.0, "budget: no new trial starts after this many seconds (0: no limit)", at_least(0))
    objective: str = option("val", "val (the validation split) or cv (k folds of train+val, split.folds)",
                            one_of("val", "cv"))
    prune_warmup: int = option(0, "median stopping rule after this many epochs (0: no pruning)", at_least(0))
    n_jobs: int = option(1, "trials run in parallel processes", at_least(1))
    epochs: int = option(40, "maximum epochs per trial", at_least(1))
    seed: int = option(0, "seed of the parameter sampler")
    space: dict[str, ParamSpace] = option(
        {
            "train.learning_rate": ParamSpace(kind="log_uniform", low=3e-4, high=3e-3),
            "model.dropout_rate": ParamSpace(kind="uniform", low=0.1, high=0.4),
        },
        "distribution per config field, keyed by its dotted path",
    )


EXPORT_VARIANTS = ("float32", "dynamic_range", "float16", "int8", "qat_int8", "pruned_int8", "pqat_int8",
                   "clustered_int8")


@dataclass(frozen=True)
class ExportConfig:
    variants: tuple[str, ...] = option(("float32", "int8"), "TF-Lite variants to build",
                                       one_of(*EXPORT_VARIANTS))
    prune_sparsity: float = option(0.8, "pruned_int8 and pqat_int8: target fraction of zero weights",
                                   greater_than(0), below(1))
    clusters: int = option(16, "clustered_int8: weight clusters per layer", at_least(2))
    triage_drop: float = option(0.01, "int8 triage when full int8 loses more val accuracy than this",
                                at_least(-1))
    triage_layers: int = option(3, "layers the selective-quantization variant keeps in float", at_least(1))
    optimize_epochs: int = option(6, "fine-tuning epochs of pruning, clustering and QAT", at_least(1))
    representative_samples: int = option(200, "training images used to calibrate int8", at_least(1))
    max_accuracy_drop: float = option(0.01, "largest val accuracy drop allowed for the bundled variant", at_least(0))
    max_mae_increase: float = option(0.05, "regression: largest relative val MAE increase allowed for the bundle",
                                     at_least(0))
    latency_runs: int = option(50, "batch-1 invocations timed per variant", at_least(1))


@dataclass(frozen=True)
class EvaluateConfig:
    tflite_variant: str = option("bundle", "TF-Lite variant evaluated beside the Keras model (bundle: the one "
                                 "export chose for the device)", one_of("bundle", *EXPORT_VARIANTS))
    metrics: tuple[str, ...] = option((), "headline metrics, fixed before the first evaluation (empty: every "
                                      "metric of the task)", one_of("accuracy", "precision", "recall", "specificity",
                                                                    "npv", "f1", "roc_auc", "mae", "mse", "rmse",
                                                                    "mape", "r2"))
    bootstrap_resamples: int = option(1000, "bootstrap resamples of the test items for the intervals", at_least(0))
    confidence: float = option(0.95, "confidence of the bootstrap intervals", greater_than(0), below(1))
    seed: int = option(0, "seed of the bootstrap")


@dataclass(frozen=True)
class GanConfig:
    epochs: int = option(50, "DCGAN training epochs", at_least(1))
    batch_size: int = option(64, "real images per step (global batch)", at_least(2))
    latent_dim: int = option(32, "size of the generator's noise input", at_least(1))
    base_filters: int = option(32, "filters of the first discriminator block (doubled in the second)", at_least(1))
    learning_rate: float = option(2e-4, "Adam learning rate of both networks", greater_than(0))
    beta_1: float = option(0.5, "Adam beta_1 of both networks (0.5 as in DCGAN)", at_least(0), below(1))
    label_smoothing: float = option(0.0, "real labels become 1 - label_smoothing for the discriminator",
                                    at_least(0), below(0.5))
    instance_noise: float = option(0.0, "std of Gaussian noise added to both inputs of the discriminator",
                                   at_least(0))
    ema_decay: float = option(0.999, "decay of the moving average of the generator's weights that is sampled, "
                              "scored and exported (0: the raw generator)", at_least(0), below(1))
    jit_compile: bool = option(True, "XLA-compile the training step (with one replica; a multi-replica "
                               "strategy gets tf.function alone)")
    sample_every: int = option(5, "epochs between sample grids and checkpoints", at_least(1))
    conditional: bool = option(False, "class-conditional GAN: the label is a second input to both networks")
    seed: int = option(0, "seed of weights, noise and shuffling")


@dataclass(frozen=True)
class DenoiseConfig:
    filters: tuple[int, ...] = option((32, 64), "encoder convolution filters per block (decoder mirrors them)",
                                      non_empty)
    noise_std: float = option(40.0, "std of the Gaussian noise on 0-255 inputs (training and validation)",
                              greater_than(0))
    epochs: int = option(30, "training epochs of the denoising autoencoder", at_least(1))
    latent_dim: int = option(2, "width of the bottleneck of the latent variant (2 gives the scatter plot)",
                             at_least(1))
    latent_epochs: int = option(30, "training epochs of the latent variant", at_least(1))
    batch_size: int = option(64, "images per step", at_least(1))
    learning_rate: float = option(1e-3, "Adam learning rate", greater_than(0))
    seed: int = option(0, "seed of weights, shuffling and the validation noise")


@dataclass(frozen=True)
class SegmentConfig:
    source: str = option("generated", "generated: digits placed on cluttered canvases; folders: a user's images "
                         "and masks", one_of("generated", "folders"))
    images_dir: str = option("", "folders: images (PNG/JPEG/BMP); relative paths are under the project root")
    masks_dir: str = option("", "folders: one mask per image, same file stem, PNG of class indices")
    num_classes: int = option(11, "classes including background (generated: background + digits 0-9)",
                              at_least(2))
    canvas_size: int = option(48, "side of the canvases (folders: images and masks are resized to it)",
                              at_least(8))
    train_canvases: int = option(1500, "generated: training canvases", at_least(1))
    val_canvases: int = option(300, "generated: validation canvases (from digits no training canvas uses)",
                               at_least(1))
    val_fraction: float = option(0.2, "folders: share of the image/mask pairs held out for validation",
                                 greater_than(0), below(1))
    digits_per_canvas: tuple[int, ...] = option((1, 3), "generated: [min, max] digits on a canvas")
    digit_size: tuple[int, ...] = option((14, 26), "generated: [min, max] side of a placed digit in pixels")
    clutter: int = option(3, "generated: random lines and blobs drawn on each canvas", at_least(0))
    noise_std: float = option(12.0, "generated: std of the Gaussian pixel noise (0-255)", at_least(0))
    filters: tuple[int, ...] = option((8, 16, 32, 64), "filters per level; the last is the bottleneck (at 1/8 size)",
                                      non_empty)
    loss: str = option("cross_entropy", "per-pixel loss", one_of("cross_entropy", "dice"))
    epochs: int = option(25, "training epochs of each model (same budget for U-Net and the plain one)",
                         at_least(1))
    batch_size: int = option(32, "canvases per step", at_least(1))
    learning_rate: float = option(3e-3, "Adam learning rate", greater_than(0))
    representative_samples: int = option(100, "training canvases that calibrate int8", at_least(1))
    seed: int = option(0, "seed of the generator, the folder split, weights and shuffling")


# skimage.data's lossless photographs (PNG; its JPEGs, rocket, retina and hubble_deep_field, are left out:
# a network learns their block artifacts). `cat` is the same photograph as `chelsea`, and stereo_motorcycle is
# both views of one scene, so each twin set is one source that may sit on one side of the split only.
SR_PHOTOS = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "coffee", "coins", "colorwheel", "grass",
             "gravel", "immunohistochemistry", "moon", "page", "stereo_motorcycle", "text")
SR_TWINS = {"cat": "chelsea"}


@dataclass(frozen=True)
class SrConfig:
    train_images: tuple[str, ...] = option(
        ("astronaut", "immunohistochemistry", "moon", "page", "brick", "cell", "coins", "text", "grass", "gravel",
         "stereo_motorcycle"), "skimage.data photographs cut into training patches", non_empty, one_of(*SR_PHOTOS))
    eval_images: tuple[str, ...] = option(("chelsea", "camera", "coffee"),
                                          "held-out skimage.data photographs, evaluated whole", non_empty,
                                          one_of(*SR_PHOTOS))
    patch_size: int = option(48, "high-resolution training patch side (the low-res patch is half)", at_least(8))
    patches: int = option(8000, "training patches sampled (seeded) from the training photographs", at_least(1))
    batch_size: int = option(16, "patches per step (global batch)", at_least(1))
    filters: int = option(32, "generator feature maps", at_least(1))
    blocks: int = option(4, "generator residual blocks", at_least(1))
    pixel_steps: int = option(1500, "steps of the pixel-loss (MSE) phase", at_least(1))
    learning_rate: float = option(5e-4, "Adam learning rate of the pixel phase (cosine decay to 0)",
                                  greater_than(0))
    adversarial_steps: int = option(300, "steps of adversarial fine-tuning after the pixel phase", at_least(0))
    adversarial_learning_rate: float = option(1e-4, "Adam learning rate of both networks in fine-tuning",
                                              greater_than(0))
    discriminator_filters: int = option(16, "filters of the first discriminator block", at_least(1))
    content_network: str = option("project", "perceptual-loss features: the project's own autoencoder trained "
                                  "on the training patches, or VGG19", one_of("project", "vgg19"))
    vgg_weights: str = option("imagenet", "VGG19 weights: 'imagenet' (downloads once) or a weights file")
    feature_filters: int = option(32, "filters of the project's content network", at_least(1))
    feature_steps: int = option(300, "training steps of the project's content network", at_least(1))
    content_weight: float = option(1.0, "weight of the content (feature MSE) loss in fine-tuning", at_least(0))
    adversarial_weight: float = option(1e-3, "weight of the adversarial loss in fine-tuning (SRGAN: 1e-3)",
                                       at_least(0))
    log_every: int = option(100, "steps between logged losses and checkpoints", at_least(1))
    shave: int = option(2, "border pixels left out of PSNR and SSIM", at_least(0))
    seed: int = option(0, "seed of patches, weights and shuffling")


@dataclass(frozen=True)
class RuntimeConfig:
    root: str = option(".", "project root under which data/, mlruns/ and deploy/bundles/ are written")
    strategy: str = option("default", "tf.distribute strategy", one_of("default", "mirrored"))
    verbose: int = option(2, "Keras fit verbosity (0 silent, 1 progress bar, 2 one line per epoch)", one_of(0, 1, 2))


@dataclass(frozen=True)
class Config:
    experiment: str = option("digits", "MLflow experiment and registered model name", non_empty)
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    sr: SrConfig = field(default_factory=SrConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def root(self) -> Path:
        return Path(self.runtime.root).resolve()


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """Checks `value` against the annotation `kind` and returns it in that type."""
    origin = typing.get_origin(kind)
    if origin is types.UnionType:  # `float | None`
        if value is None:
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        return _build(kind, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        _, item_kind = typing.get_args(kind)
        return {str(key): _coerce(item, item_kind, f"{path}.{key}") for key, item in value.items()}
    if origin is tuple or kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: must be a list, got {value!r}")
        args = typing.get_args(kind)
        item_kind = args[0] if args else Any
        return tuple(_coerce(item, item_kind, f"{path}[{index}]") for index, item in enumerate(value))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer, got {value!r}")
        return value
    if kind is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept any text float() understands.
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: must be a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    """Builds dataclass `cls` from a mapping, checking keys, types and rules."""
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{path}: unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], path)
    instance = cls(**kwargs)
    for name, item in fields.items():
        for rule in item.metadata.get("rules", ()):
            problem = rule(getattr(instance, name))
            if problem:
                raise ConfigError(f"{prefix + '.' if prefix else ''}{name}: {problem}")
    return instance


def to_dict(config: Any) -> Any:
    """The resolved config as plain YAML-friendly data."""
    if dataclasses.is_dataclass(config):
        return {item.name: to_dict(getattr(config, item.name)) for item in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {key: to_dict(value) for key, value in config.items()}
    if isinstance(config, tuple):
        return [to_dict(value) for value in config]
    return config


def _check_cross_fields(config: Config) -> None:
    if config.data.image_size % 4:
        raise ConfigError(f"data.image_size: must be a multiple of 4 (two 2x pooling or upsampling steps), "
                          f"got {config.data.image_size}")
    if config.split.val_fraction + config.split.test_fraction >= 0.9:
        raise ConfigError(
            "split: val_fraction + test_fraction must be < 0.9, got "
            f"{config.split.val_fraction + config.split.test_fraction:g}"
        )
    _check_data(config)
    _check_sr(config.sr)
    _check_segment(config.segment)
    for path, space in config.search.space.items():
        try:
            current = get_path(config, path)
        except ConfigError:
            raise ConfigError(f"search.space.{path}: unknown key (not a config field)") from None
        if space.kind == "choice":
            if not space.values:
                raise ConfigError(f"search.space.{path}.values: must not be empty for kind 'choice'")
        elif not space.low < space.high:
            raise ConfigError(f"search.space.{path}: low must be < high, got {space.low:g} >= {space.high:g}")
        elif space.kind == "log_uniform" and space.low <= 0:
            raise ConfigError(f"search.space.{path}.low: must be > 0 for kind 'log_uniform', got {space.low:g}")
        elif isinstance(current, (str, bool, tuple)) and space.kind != "choice":
            raise ConfigError(f"search.space.{path}.kind: field is not numeric, use 'choice'")


def _check_sr(config: SrConfig) -> None:
    """No photograph, nor its twin, on both sides of the super-resolution split."""
    source = lambda name: SR_TWINS.get(name, name)  # noqa: E731
    shared = sorted({source(name) for name in config.train_images} & {source(name) for name in config.eval_images})
    if shared:
        raise ConfigError(f"sr.eval_images: {shared} also in sr.train_images (a photograph and its twin, "
                          f"{SR_TWINS}, count as one); held-out photographs must not be trained on")
    if config.patch_size % 2:
        raise ConfigError(f"sr.patch_size: must be even (x2 super-resolution), got {config.patch_size}")


def _check_segment(config: SegmentConfig) -> None:
    for name in ("digits_per_canvas", "digit_size"):
        low_high = getattr(config, name)
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
            raise ConfigError(f"segment.{name}: must be [min, max] with 0 < min <= max, got {list(low_high)}")
    if config.source == "generated" and config.digit_size[1] > config.canvas_size:
        raise ConfigError(f"segment.digit_size: max {config.digit_size[1]} exceeds canvas_size {config.canvas_size}")
    if config.source == "folders" and not (config.images_dir and config.masks_dir):
        raise ConfigError("segment.images_dir and segment.masks_dir: both are required when source is 'folders'")
    levels = 2 ** (len(config.filters) - 1)
    if config.canvas_size % levels:
        raise ConfigError(f"segment.canvas_size: must be divisible by {levels} for {len(config.filters)} "
                          f"levels of segment.filters, got {config.canvas_size}")


def _check_data(config: Config) -> None:
    data, is_table = config.data, config.data.source in TABLE_SOURCES
    if data.source in ("image_folder", "csv") and not data.path:
        raise ConfigError(f"data.path: must name the {data.source.replace('_', ' ')} for source '{data.source}'")
    if data.source == "csv" and not data.target:
        raise ConfigError("data.target: must name the target column for source 'csv'")
    if config.search.objective == "cv" and not config.split.folds:
        raise ConfigError("search.objective: 'cv' needs split.folds > 1")
    if config.split.strategy == "temporal" and not data.time_column:
        raise ConfigError("split.strategy: 'temporal' needs data.time_column")
    if config.split.group == "column" and not data.group_column:
        raise ConfigError("split.group: 'column' needs data.group_column")
    if is_table and config.model.architecture != "mlp":
        raise ConfigError(f"model.architecture: table source '{data.source}' needs 'mlp', "
                          f"got '{config.model.architecture}'")
    if not is_table and config.model.architecture == "mlp":
        raise ConfigError(f"model.architecture: image source '{data.source}' needs a convolutional model, got 'mlp'")
    if config.model.architecture == "transfer":
        backbone = config.model.backbone
        if is_table:
            raise ConfigError("model.architecture: 'transfer' needs an image source")
        if backbone.kind == "project_source_task":
            overlap = {str(item) for item in backbone.source_classes} & set(data.classes)
            if not data.classes or overlap:
                raise ConfigError("data.classes: a source-task backbone needs target classes disjoint from "
                                  f"model.backbone.source_classes (overlap: {sorted(overlap) or 'all classes'}); "
                                  "otherwise target test images would be seen in pretraining")
        if backbone.kind == "hub" and not backbone.handle:
            raise ConfigError("model.backbone.handle: must name a TF-Hub handle, URL or SavedModel path")
        if backbone.kind == "applications" and not backbone.weights:
            raise ConfigError("model.backbone.weights: must be a weights file or 'imagenet' (a randomly "
                              "initialized network is not a pretrained backbone)")
    for index, transform in enumerate(config.augment.transforms):
        if not isinstance(transform, dict) or not isinstance(transform.get("name"), str):
            raise ConfigError(f"augment.transforms[{index}]: must be a mapping with a 'name', got {transform!r}")
    for name, rule in data.columns.items():
        if rule.min is not None and rule.max is not None and rule.min > rule.max:
            raise ConfigError(f"data.columns.{name}: min must be <= max, got {rule.min:g} > {rule.max:g}")
        if rule.impute == "derive" and not rule.derive_from:
            raise ConfigError(f"data.columns.{name}.derive_from: must name a column for impute 'derive'")


def get_path(config: Any, path: str) -> Any:
    """Returns the value at a dotted path such as `train.learning_rate`."""
    value = config
    for part in path.split("."):
        if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
            raise ConfigError(f"{path}: unknown key")
        value = getattr(value, part)
    return value


def _set_path(tree: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """Parses `key.path=value` strings; values are read as YAML scalars (3, 1e-3, true, [16, 32])."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        parsed.append((key.strip(), yaml.safe_load(text)))
    return parsed


def from_dict(values: dict | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Builds and validates a Config from a mapping plus `key.path=value` overrides."""
    tree = dict(values or {})
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    for key, value in parse_overrides(overrides):
        _set_path(tree, key, value)
    config = _build(Config, tree)
    _check_cross_fields(config)
    return config


def replace_path(config: Config, path: str, value: Any) -> Config:
    """A copy of `config` with one dotted field changed, validated like a loaded file."""
    tree = to_dict(config)
    _set_path(tree, path, value)
    return from_dict(tree)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML experiment file (or only the defaults when `path` is None).

    Raises:
        ConfigError: the file is missing or not a mapping, or a key or value breaks a rule.
    """
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return from_dict(values, overrides)
    except ConfigError as error:
        raise ConfigError(f"{path or 'defaults'}: {error}") from None


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: dotted path, default and doc (for `--help`)."""
    lines = []
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        kind = typing.get_type_hints(cls)[item.name]
        if dataclasses.is_dataclass(kind):
            lines.extend(describe(kind, f"{path}."))
            continue
        default = item.default if item.default is not dataclasses.MISSING else "(see configs)"
        lines.append(f"  {path} = {default!r}: {item.metadata.get('doc', '')}")
    return lines
