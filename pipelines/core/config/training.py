"""Config sections of training: model, backbone, train, transfer, augment, search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.config.schema import at_least, below, get_path, greater_than, non_empty, one_of, option
from pipelines.core.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.core.config import Config

SEARCHABLE_KINDS = ("log_uniform", "uniform", "int", "choice")

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
    pretrain_batch_size: int = option(64, "project backbones: images per pretraining step", at_least(1))
    pretrain_learning_rate: float = option(1e-3, "project backbones: Adam learning rate of pretraining",
                                           greater_than(0))
    pretrain_patience: int = option(5, "project backbones: epochs without a better val_loss before pretraining "
                                    "stops (best weights kept)", at_least(0))
    source_val_fraction: float = option(0.15, "project_source_task: share of the source images held out to "
                                        "early-stop and score the source classifier", greater_than(0), below(1))
    noise_std: float = option(40.0, "project_autoencoder: std of the Gaussian noise on 0-255 inputs", at_least(0))
    pretrain_min_gain: float = option(1.0, "project backbones: how much pretraining must beat doing nothing on its "
                                      "own validation data, else the stage warns and its report says so "
                                      "(autoencoder: dB of denoised PSNR over the noisy input; source task: "
                                      "accuracy points x 100 over the majority class)", at_least(0))
    filters: tuple[int, ...] = option((32, 64), "project backbones: convolution filters per block", non_empty)


def each_positive(values: tuple) -> str | None:
    """each >= 1"""
    return None if min(values, default=1) >= 1 else f"must be >= 1 each, got {list(values)}"


# Defaults that differ by architecture, per config section, for the keys a config leaves out. cnn1d is a fully
# convolutional network (Wang et al. 2017's FCN baseline for time series: three Conv1D-BatchNorm-ReLU blocks of
# 128, 256 and 128 filters with kernels 8, 5 and 3, global average pooling), trained on the published recipe's
# schedule scaled down (Fawaz et al. 2019 train it 2,000 epochs and halve the learning rate after 50 epochs
# without progress, down to 1e-4, and keep the model of least training loss): 300 epochs, early stopping after 60,
# the rate halved after 20, floor 1e-4, all following the training loss (`monitor: train`; validation of a
# dataset's own small training part held 12 series for ItalyPowerDemand). The archive's series are few and short,
# so an epoch is a step or a few. docs/kinds/sensors.md has the measurements.
ARCHITECTURE_DEFAULTS = {"cnn1d": {
    "model": {"filters": [128, 256, 128], "batch_norm": True},
    "train": {"epochs": 300, "patience": 60, "reduce_lr_patience": 20, "min_learning_rate": 1e-4,
              "monitor": "train"},
    "search": {"epochs": 300}}}


def architecture_defaults(tree: dict) -> dict:
    """The config mapping `tree` with its architecture's own defaults under the keys its sections leave out."""
    model = tree.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("architecture"), str):
        return tree
    tree = dict(tree)
    for section, defaults in ARCHITECTURE_DEFAULTS.get(model["architecture"], {}).items():
        current = tree.get(section) if tree.get(section) is not None else {}
        if isinstance(current, dict):  # anything else is the schema's to refuse
            tree[section] = {**defaults, **current}
    return tree


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = option("small_cnn", "name in models.architectures(): small_cnn, resnet, mlp (tables), "
                               "transfer (a pretrained backbone and a head), cnn1d or recurrent (signals), "
                               "autoencoder1d (signal anomaly detection: reconstruction error of normal windows)",
                               one_of("small_cnn", "resnet", "mlp", "transfer", "cnn1d", "recurrent",
                                      "autoencoder1d"))
    cell: str = option("lstm", "recurrent: the recurrent layer", one_of("lstm", "gru"))
    filters: tuple[int, ...] = option((32, 64), "convolution filters per block (resnet: per stage)", non_empty)
    kernel_sizes: tuple[int, ...] = option((8, 5, 3), "cnn1d: kernel size of each convolution block, in order "
                                           "(the last repeats for further blocks; extra ones are unused)",
                                           non_empty, each_positive)
    pool_size: int = option(1, "cnn1d: max pooling of this size between blocks (1: none, as in the FCN; 2 halves "
                            "each later block's arena)", at_least(1))
    units: int = option(32, "recurrent: units of the LSTM or GRU layer", at_least(1))
    dense_units: int = option(128, "units of each hidden dense layer (small_cnn, resnet, mlp; cnn1d and recurrent "
                              "have none)", at_least(1))
    hidden_layers: int = option(2, "hidden dense layers of the mlp", at_least(1))
    bottleneck: int = option(0, "filters of a 1x1 convolution before the head (0: none)", at_least(0))
    downsample: str = option("pool", "small_cnn: how each block halves the image: 'pool' (a convolution, then 2x2 "
                             "max pooling, rounding down) or 'stride' (a stride-2 convolution, rounding up: a quarter "
                             "of the MACs and no pooling operator, the faster block on a microcontroller)",
                             one_of("pool", "stride"))
    separable_from: int = option(64, "small_cnn: from this input side on, blocks after the first are depthwise-"
                                 "separable and the head pools globally instead of flattening (0: never)",
                                 at_least(0))
    batch_norm: bool = option(False, "batch normalization after each convolution, and after each hidden dense "
                              "layer of the mlp (cnn1d's default: true)")
    initializer: str = option("he_normal", "kernel initializer",
                              one_of("he_normal", "he_uniform", "glorot_uniform", "glorot_normal"))
    dropout_rate: float = option(0.25, "dropout before the dense layers", at_least(0), below(1))
    l1: float = option(0.0, "L1 penalty on kernel weights", at_least(0))
    l2: float = option(1e-4, "L2 penalty on kernel weights", at_least(0))
    backbone: BackboneConfig = field(default_factory=BackboneConfig)

    def check(self, config: Config) -> None:
        data = config.data
        if data.is_table and self.architecture != "mlp":
            raise ConfigError(f"model.architecture: table source '{data.source}' needs 'mlp', "
                              f"got '{self.architecture}'")
        if self.architecture == "recurrent" and self.cell == "gru" and any(
                variant.endswith("int8") for variant in config.export.variants):
            raise ConfigError("model.cell: 'gru' becomes a WHILE loop whose int8 calibration crashes the TF 2.21 "
                              "converter (tensorflow/tensorflow#75140); use 'lstm' (one UNIDIRECTIONAL_SEQUENCE_LSTM "
                              "operator, int8 on LiteRT and TFLM) or export.variants without int8")
        if data.is_signal != (self.architecture in ("cnn1d", "recurrent", "autoencoder1d")):
            raise ConfigError(f"model.architecture: '{self.architecture}' does not read source '{data.source}' "
                              "(signals need cnn1d, recurrent or autoencoder1d, which read nothing else)")
        if self.downsample != "pool" and self.architecture != "small_cnn":
            raise ConfigError(f"model.downsample: 'stride' shapes small_cnn's blocks only; "
                              f"'{self.architecture}' would ignore it")
        if not data.is_table and self.architecture == "mlp":
            raise ConfigError(f"model.architecture: image source '{data.source}' needs a convolutional model, "
                              "got 'mlp'")
        if self.architecture != "transfer":
            return
        backbone = self.backbone
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
        _check_pretrained_files(backbone, config)

    @property
    def uses_project_backbone(self) -> bool:
        """Whether the pretrain stage has to make this model's backbone."""
        return self.architecture == "transfer" and self.backbone.kind in PROJECT_BACKBONES


def _check_pretrained_files(backbone: BackboneConfig, config: Config) -> None:
    """A pretrained backbone's file must be on this machine at load, before any stage runs: nothing is
    downloaded at run time (models/pretrained.py says where keras.applications and TF-Hub look)."""
    from models import pretrained

    how = "docs/stages/train.md#pretrained-weights-offline shows how to make it on a connected machine"
    if backbone.kind == "applications":
        if backbone.application not in pretrained.APPLICATIONS:
            raise ConfigError(f"model.backbone.application: '{backbone.application}' is not a keras.applications "
                              f"architecture this project loads (choose from {list(pretrained.APPLICATIONS)})")
        if backbone.weights != "imagenet":
            path = config.root / backbone.weights
            if not path.is_file():
                raise ConfigError(f"model.backbone.weights: {path} not found (model.backbone.application "
                                  f"'{backbone.application}'): place its include_top=False weights file there; {how}")
            return
        if config.data.channels != 3:
            raise ConfigError(f"model.backbone.weights: 'imagenet' weights take RGB images; set data.channels: 3, "
                              f"got {config.data.channels}")
        path = pretrained.imagenet_weights_file(backbone.application, config.data.image_size)
        if not path.is_file():
            raise ConfigError(f"model.backbone.weights: 'imagenet' with model.backbone.application "
                              f"'{backbone.application}' at {config.data.image_size} px needs the file {path}, which "
                              f"is missing and nothing is downloaded here: place it there, or set "
                              f"model.backbone.weights to a local weights file; {how}")
    elif backbone.kind == "hub" and not (config.root / backbone.handle).is_dir():
        cached = pretrained.hub_cache_folder(backbone.handle) if pretrained.is_url(backbone.handle) else None
        if cached is not None and cached.is_dir() and any(cached.iterdir()):
            return
        where = f" or unpack it into {cached}, where tensorflow_hub looks for this URL" if cached else ""
        raise ConfigError(f"model.backbone.handle: '{backbone.handle}' is not a SavedModel folder under "
                          f"{config.root} and nothing is downloaded here: place the unpacked model in a folder and "
                          f"set model.backbone.handle to its path{where}; {how}")


# the metrics `train.objective` may name (pipelines/training/objectives.py computes them), and those that depend
# on a decision (a binary classifier's threshold)
OBJECTIVES = ("accuracy", "balanced_accuracy", "f1", "recall", "specificity", "ppv", "npv", "roc_auc", "pr_auc",
              "mae", "rmse", "mape")
THRESHOLDED = ("accuracy", "balanced_accuracy", "f1", "recall", "specificity", "ppv", "npv")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(60, "maximum number of epochs", at_least(1))
    anomaly_percentile: float = option(99.0, "anomaly detection: the threshold is this percentile of the normal "
                                       "validation windows' scores when validation holds no anomaly",
                                       greater_than(0), below(100))
    steps_per_epoch: int = option(0, "batches per epoch, the training stream repeating as needed (0: one pass "
                                  "over the training split)", at_least(0))
    batch_size: int = option(32, "examples per gradient step", at_least(1))
    learning_rate: float = option(1e-3, "initial learning rate", greater_than(0))
    optimizer: str = option("adam", "adam, sgd (momentum 0.9, Nesterov), rmsprop or adagrad",
                            one_of("adam", "sgd", "rmsprop", "adagrad"))
    patience: int = option(12, "epochs without improvement (val_loss, a named train.objective, or the training "
                           "loss with monitor: train) before early stopping", at_least(1))
    loss: str = option("auto", "auto (sparse categorical cross-entropy or MSE by task) or a loss name",
                       one_of("auto", "sparse_categorical_crossentropy", "categorical_crossentropy",
                              "binary_crossentropy", "mae", "mse", "mape"))
    monitor: str = option("val", "what early stopping, ReduceLROnPlateau and the restored best weights follow: val "
                          "(the validation loss, or a named train.objective) or train (the training loss, as the "
                          "published FCN recipe selects; validation still scores trials, gates and the report)",
                          one_of("val", "train"))
    reduce_lr_patience: int = option(0, "ReduceLROnPlateau patience in epochs (0: off); it watches what early "
                                     "stopping watches", at_least(0))
    reduce_lr_factor: float = option(0.5, "ReduceLROnPlateau: the learning rate is multiplied by this on a plateau",
                                     greater_than(0), below(1))
    min_learning_rate: float = option(0.0, "ReduceLROnPlateau: the floor the learning rate never goes below",
                                      at_least(0))
    overfit_gap: float = option(0.03, "bias-variance line: over-fitting when the validation score is worse than "
                                "the training score by more than this (accuracy-like metrics: in their units; "
                                "errors: as a share of a constant predictor's error)", greater_than(0))
    underfit_shortfall: float = option(0.05, "bias-variance line: under-fitting when the training score falls short "
                                       "of perfect by more than this (1 - accuracy-like metric; errors: the "
                                       "training error as a share of a constant predictor's)", greater_than(0))
    checkpoint: bool = option(True, "ModelCheckpoint of the best weights (by what train.monitor names) in the "
                              "stage folder")
    class_weights: str = option("none", "balanced: weight classes inversely to their training frequency",
                                one_of("none", "balanced"))
    seed: int = option(0, "seed of weight initialization and shuffling")
    objective: str = option("auto", "the project's validation metric: tune ranks by it, the champion rule compares "
                            "it and, when named, early stopping and the best checkpoint watch it (auto: accuracy, "
                            "or MAE for regression, with early stopping on val_loss)",
                            one_of("auto", *OBJECTIVES))
    threshold: str = option("argmax", "binary classification: argmax, or tuned (the decision threshold chosen on "
                            "validation: the best objective among thresholds that meet train.floors; it travels "
                            "in the bundle)", one_of("argmax", "tuned"))
    floors: dict[str, float] = option({}, "with train.threshold tuned: validation floors the decision threshold "
                                      "must meet, e.g. {recall: 0.95}")
    positive_class: str = option("", "binary classification: the class counted as positive for recall, PPV, "
                                 "NPV, F1 and the threshold (empty: the second class)")

    def check(self, config: Config) -> None:
        if self.reduce_lr_patience and self.min_learning_rate >= self.learning_rate:
            own = ARCHITECTURE_DEFAULTS.get(config.model.architecture, {}).get("train", {})
            origin = (f" ({config.model.architecture}'s default floor: set train.min_learning_rate lower)"
                      if own.get("min_learning_rate") == self.min_learning_rate else "")
            raise ConfigError(f"train.min_learning_rate: must be below train.learning_rate "
                              f"({self.learning_rate:g}) for ReduceLROnPlateau to act, got {self.min_learning_rate:g}"
                              f"{origin}")
        unknown = sorted(set(self.floors) - set(THRESHOLDED))
        if unknown:
            raise ConfigError(f"train.floors: {unknown} are not decision metrics (choose from {list(THRESHOLDED)})")
        if self.floors and self.threshold != "tuned":
            raise ConfigError("train.floors: a floor is met by choosing the decision threshold; set "
                              "train.threshold: tuned")


@dataclass(frozen=True)
class TransferConfig:
    method: str = option("frozen", "feature_cache (head on cached features), frozen (backbone inside the model), "
                         "fine_tune (frozen, then a second phase with the top layers unfrozen)",
                         one_of("feature_cache", "frozen", "fine_tune"))
    fine_tune_layers: int = option(0, "layers with weights unfrozen from the top, batch norm excepted (0: every "
                                   "layer); a TF-Hub or project backbone's layers are its variables' name scopes",
                                   at_least(0))
    fine_tune_lr_factor: float = option(0.1, "phase-2 learning rate = train.learning_rate * this factor (10 to "
                                        "100 times smaller)", at_least(0.01), below(0.1 + 1e-12))
    fine_tune_epochs: int = option(20, "maximum epochs of the fine-tuning phase", at_least(1))


# 1-D augmentation of sensor windows (pipelines/data/augment.py), each name with its arguments' defaults: jitter
# (Gaussian noise, sigma x the window's per-channel std), scaling (each channel times N(1, sigma)), magnitude
# warping (times a smooth random curve through `knots` knots around 1, spread sigma), time warping (the time axis
# bent by such a curve and resampled), window slicing (a random `ratio` of the window stretched back to its length).
SIGNAL_TRANSFORMS = {"jitter": {"sigma": 0.05}, "scaling": {"sigma": 0.1},
                     "magnitude_warp": {"sigma": 0.2, "knots": 4}, "time_warp": {"sigma": 0.2, "knots": 4},
                     "window_slice": {"ratio": 0.9}}


def _check_signal_transform(index: int, transform: dict) -> None:
    name = transform["name"]
    if name not in SIGNAL_TRANSFORMS:
        raise ConfigError(f"augment.transforms[{index}]: signals take the 1-D transforms "
                          f"{', '.join(SIGNAL_TRANSFORMS)}, got '{name}'")
    for key, value in transform.items():
        if key == "name":
            continue
        if key not in (*SIGNAL_TRANSFORMS[name], "p"):
            raise ConfigError(f"augment.transforms[{index}] ({name}): unknown argument '{key}' (known: "
                              f"{', '.join([*SIGNAL_TRANSFORMS[name], 'p'])})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or \
                (key == "ratio" and not 0 < value <= 1) or (key == "knots" and value < 1):
            raise ConfigError(f"augment.transforms[{index}] ({name}).{key}: must be a number "
                              f"{'in (0, 1]' if key == 'ratio' else '>= 1' if key == 'knots' else '>= 0'}, "
                              f"got {value!r}")


@dataclass(frozen=True)
class AugmentConfig:
    transforms: tuple[dict, ...] = option((), "transforms, each {name: ..., other arguments}, applied to the "
                                          "training split only: albumentations classes for images; for signals "
                                          "jitter, scaling, magnitude_warp, time_warp, window_slice")
    strength: float = option(1.0, "multiplies every transform's probability p (default 0.5), capped at 1: "
                             "one searchable knob for how much augmentation", at_least(0))
    seed: int = option(0, "seed of the augmentation pipeline")

    def check(self, config: Config) -> None:
        for index, transform in enumerate(self.transforms):
            if not isinstance(transform, dict) or not isinstance(transform.get("name"), str):
                raise ConfigError(f"augment.transforms[{index}]: must be a mapping with a 'name', got {transform!r}")
        if self.transforms and config.data.is_signal:
            if config.model.architecture == "autoencoder1d":
                raise ConfigError("augment.transforms: the autoencoder1d reconstructs its own input; 1-D "
                                  "augmentation is for classifiers (cnn1d, recurrent)")
            for index, transform in enumerate(self.transforms):
                _check_signal_transform(index, transform)
            return
        for index, transform in enumerate(self.transforms):
            if transform["name"] in SIGNAL_TRANSFORMS:
                raise ConfigError(f"augment.transforms[{index}]: '{transform['name']}' is a 1-D transform for "
                                  f"signals; data.source '{config.data.source}' takes albumentations transforms")
        if self.transforms:  # a misspelt transform is found at load, not when training starts
            import albumentations

            for index, transform in enumerate(self.transforms):
                if not isinstance(getattr(albumentations, transform["name"], None), type):
                    raise ConfigError(f"augment.transforms[{index}]: albumentations has no transform "
                                      f"'{transform['name']}'")


@dataclass(frozen=True)
class ParamSpace:
    kind: str = option("uniform", "distribution", one_of(*SEARCHABLE_KINDS))
    low: float = option(0.0, "lower bound (log_uniform, uniform, int)")
    high: float = option(1.0, "upper bound (log_uniform, uniform, int)")
    values: tuple = option((), "candidates (choice)")


def _check_choices(config: Config, path: str, values: tuple) -> None:
    """Each candidate must be a value the field accepts (its type and rules), found at load rather than when a
    trial runs it."""
    from pipelines.core.config import schema

    for index, value in enumerate(values):
        tree = schema.to_dict(config)
        tree["search"]["space"] = {}
        schema.set_path(tree, path, value)
        try:
            schema.build(type(config), tree)
        except ConfigError as error:
            raise ConfigError(f"search.space.{path}.values[{index}]: {error}") from None


@dataclass(frozen=True)
class SearchConfig:
    n_trials: int = option(5, "phase 1: random-search trials", at_least(0))
    sampler: str = option("qmc", "phase 1's sampler: random (Optuna's RandomSampler) or qmc (its QMCSampler, a "
                          "scrambled Sobol sequence: a few points spread evenly over the space)",
                          one_of("random", "qmc"))
    grid_points: int = option(3, "phase 2: grid values per numeric parameter around the top trials (0: no grid)",
                              at_least(0))
    top_k: int = option(2, "phase 2: the best random trials whose region the grid spans (with search.targets, "
                        "also each board's best feasible ones)", at_least(1))
    max_trials: int = option(9, "budget: most trials in all (0: no cap)", at_least(0))
    max_seconds: float = option(0.0, "budget: no new trial starts after this many seconds (0: no limit)", at_least(0))
    objective: str = option("val", "val (the validation split) or cv (k folds of train+val, split.folds)",
                            one_of("val", "cv"))
    prune_warmup: int = option(0, "median stopping rule after this many epochs (0: no pruning)", at_least(0))
    n_jobs: int = option(1, "local workers taking trials (this process and n_jobs - 1 more)", at_least(1))
    storage: str = option("", "Optuna storage URL shared by every worker, e.g. postgresql://user@host/db "
                          "(default: the SQLite file optuna.db beside the stage folders)")
    epochs: int = option(40, "maximum epochs per trial", at_least(1))
    seed: int = option(0, "seed of the parameter sampler")
    space: dict[str, ParamSpace] = option(
        {
            "train.learning_rate": ParamSpace(kind="log_uniform", low=3e-4, high=3e-3),
            "model.dropout_rate": ParamSpace(kind="uniform", low=0.1, high=0.4),
        },
        "distribution per config field, keyed by its dotted path",
    )
    targets: tuple[Any, ...] = option(
        (), "boards to search under (as export.targets: presets or mappings): each trial's model is converted to "
        "int8, its TFLM arena and flash measured and its latency estimated per board; each board gets the most "
        "accurate trial that fits and meets its deadline_ms as champion-<board>, and the Pareto front is logged")

    def check(self, config: Config) -> None:
        from deploy import micro

        try:
            micro.resolve_all(self.targets, "search.targets")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.targets and self.objective == "cv":
            raise ConfigError("search.targets: measures each trial's model, which needs search.objective 'val' "
                              "(with 'cv' a trial is several models)")
        if self.storage and not self.storage.startswith(("sqlite:///", "postgresql://", "postgresql+", "mysql")):
            raise ConfigError(f"search.storage: an Optuna RDB URL (sqlite:///..., postgresql://...), got "
                              f"{self.storage!r}")
        if self.objective == "cv" and config.split.folds < 2:
            raise ConfigError(f"search.objective: 'cv' needs split.folds >= 2, got split.folds={config.split.folds}")
        for path, space in self.space.items():
            try:
                current = get_path(config, path)
            except ConfigError:
                raise ConfigError(f"search.space.{path}: unknown key (not a config field)") from None
            if space.kind == "choice":
                if not space.values:
                    raise ConfigError(f"search.space.{path}.values: must not be empty for kind 'choice'")
                _check_choices(config, path, space.values)
            elif not space.low < space.high:
                raise ConfigError(f"search.space.{path}: low must be < high, got {space.low:g} >= {space.high:g}")
            elif space.kind == "log_uniform" and space.low <= 0:
                raise ConfigError(f"search.space.{path}.low: must be > 0 for kind 'log_uniform', got {space.low:g}")
            elif isinstance(current, (str, bool, tuple)) and space.kind != "choice":
                raise ConfigError(f"search.space.{path}.kind: field is not numeric, use 'choice'")

