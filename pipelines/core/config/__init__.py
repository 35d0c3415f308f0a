"""Typed, frozen, nested experiment configuration: one section per concern, checked at load.

A YAML file (loaded safely, with duplicate keys and aliases refused) is a small diff of the defaults. Every
field has a default and a one-line doc; unknown keys and bad values raise `ConfigError` naming the key path
and the rule before any work starts, e.g. `train.learning_rate: must be > 0, got -1`. Sections live by
concern (`data.py`, `training.py`, `deploy.py`, `generative.py`); a rule that involves two sections is the
`check` method of the section it constrains, and runs at load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.config import schema
from pipelines.core.config.data import (
    IMAGE_SOURCES,
    SIGNAL_SOURCES,
    TABLE_SOURCES,
    CleanConfig,
    ColumnRule,
    DataConfig,
    HealthConfig,
    NormalizeConfig,
    SplitConfig,
)
from pipelines.core.config.deploy import EXPORT_VARIANTS, EvaluateConfig, ExportConfig
from pipelines.core.config.generative import SR_PHOTOS, SR_TWINS, DenoiseConfig, GanConfig, SegmentConfig, SrConfig
from pipelines.core.config.schema import at_least, get_path, one_of, option, parse_overrides, plain_name, to_dict
from pipelines.core.config.training import (
    OBJECTIVES,
    PROJECT_BACKBONES,
    SEARCHABLE_KINDS,
    SIGNAL_TRANSFORMS,
    THRESHOLDED,
    AugmentConfig,
    BackboneConfig,
    ModelConfig,
    ParamSpace,
    SearchConfig,
    TrainConfig,
    TransferConfig,
    architecture_defaults,
)
from pipelines.core.errors import ConfigError

__all__ = ["EXPORT_VARIANTS", "IMAGE_SOURCES", "OBJECTIVES", "PROJECT_BACKBONES", "THRESHOLDED", "SEARCHABLE_KINDS",
           "SIGNAL_SOURCES", "SIGNAL_TRANSFORMS",
           "SR_PHOTOS", "SR_TWINS", "TABLE_SOURCES", "AugmentConfig", "BackboneConfig", "CleanConfig", "ColumnRule",
           "Config", "ConfigError", "DataConfig", "DenoiseConfig", "EvaluateConfig", "ExportConfig", "GanConfig",
           "ModelConfig", "NormalizeConfig", "ParamSpace", "RuntimeConfig", "SearchConfig", "SegmentConfig",
           "SplitConfig", "SrConfig", "TrainConfig", "TransferConfig", "describe", "from_dict", "get_path", "load",
           "parse_overrides", "replace_path", "to_dict"]


@dataclass(frozen=True)
class RuntimeConfig:
    root: str = option(".", "project root under which data/, mlruns/ and deploy/bundles/ are written")
    strategy: str = option("default", "tf.distribute strategy: default (one device), mirrored (this machine's "
                           "devices), multi_worker (the cluster in TF_CONFIG)", one_of("default", "mirrored",
                                                                                       "multi_worker"))
    verbose: int = option(2, "Keras fit verbosity (0 silent, 1 progress bar, 2 one line per epoch)", one_of(0, 1, 2))
    in_memory_mb: float = option(64.0, "image splits up to this size are read from the shards into memory once "
                                 "for training (on small data an epoch is shorter than the stream's start); "
                                 "larger ones stream", at_least(0))

    def check(self, config: Config) -> None:
        from pipelines.core import cluster

        cluster.task(self.strategy)  # multi_worker: TF_CONFIG must name this task in a cluster


@dataclass(frozen=True)
class Config:
    experiment: str = option("digits", "MLflow experiment, registered model and workspace folder name (a config "
                             "file without it takes the file's name)", plain_name,
                             lambda value: "is reserved for the test ledger (pipelines/core/ledger.py)"
                             if value == "test-ledger" else None)
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
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


def from_dict(values: dict | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Builds and validates a Config from a mapping plus `key.path=value` overrides."""
    tree = dict(values or {})
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    for key, value in schema.parse_overrides(overrides):
        schema.set_path(tree, key, value)
    tree = architecture_defaults(tree)
    config = schema.build(Config, tree)
    schema.check_sections(config, config)
    return config


def replace_path(config: Config, path: str, value: Any) -> Config:
    """A copy of `config` with one dotted field changed, validated like a loaded file."""
    tree = schema.to_dict(config)
    schema.set_path(tree, path, value)
    return from_dict(tree)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML experiment file (or only the defaults when `path` is None). A file without `experiment` takes
    its own name (`configs/birds.yaml` is experiment `birds`).

    Raises:
        ConfigError: the file is missing or not a mapping, or a key or value breaks a rule.
    """
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = schema.read_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                              f"{error.start}); save it as UTF-8") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {schema.one_line(error)}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        if "experiment" not in values and not any(item.split("=", 1)[0].strip() == "experiment"
                                                  for item in overrides):
            # a config file names its own workspace: never the defaults' (digits), which another config owns
            values = {"experiment": path.stem, **values}
    try:
        return from_dict(values, overrides)
    except ConfigError as error:
        raise ConfigError(f"{path or 'defaults'}: {error}") from None



def describe() -> list[str]:
    """One line per config field: dotted path, default and doc (for `--help`)."""
    return schema.describe(Config)
