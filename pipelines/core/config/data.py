"""Config sections of the data stages: source, cleaning rules, split, normalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.core.config.schema import at_least, below, greater_than, one_of, option
from pipelines.core.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.core.config import Config

IMAGE_SOURCES = ("digits", "image_folder")
TABLE_SOURCES = ("breast_cancer", "wine", "diabetes", "csv")
SIGNAL_SOURCES = ("basic_motions", "internal_bleeding", "sensor_csv")
PREDEFINED_SOURCES = ("sensor_csv", "csv", "image_folder", "basic_motions")  # sources that can name a split


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
    outliers: str = option("none", "what split does with a value outside the fences learned on the training rows: "
                           "clip to the fences, winsorize (clip to the quantiles), set missing (then imputed), "
                           "or drop the training row (validation and test rows are kept as they are)",
                           one_of("none", "clip", "winsorize", "missing", "drop"))
    fences: str = option("iqr", "outlier fences: iqr (quartiles -/+ fence_factor * IQR) or quantile "
                         "(the outlier_quantiles)", one_of("iqr", "quantile"))
    fence_factor: float = option(1.5, "IQR multiple of the iqr fences", greater_than(0))
    outlier_quantiles: tuple[float, ...] = option((0.01, 0.99), "low and high quantile of the quantile fences "
                                                  "and of winsorize")


@dataclass(frozen=True)
class DataConfig:
    source: str = option("digits", "embedded dataset, or image_folder / csv / sensor_csv under data.path",
                         one_of(*IMAGE_SOURCES, *TABLE_SOURCES, *SIGNAL_SOURCES))
    path: str = option("", "image folder (one sub-folder per class), CSV file, or sensor CSV file or folder of "
                       "CSV files (one recording each), relative to runtime.root")
    target: str = option("", "CSV target column (sensor_csv: the label column)")
    task: str = option("auto", "classification or regression (auto: embedded sources know, CSV guesses)",
                       one_of("auto", "classification", "regression"))
    group_column: str = option("", "CSV column whose groups never cross splits")
    time_column: str = option("", "CSV column that orders rows in time (split.strategy: temporal)")
    slice_column: str = option("", "CSV column whose values are slices: export.gate_min floors as "
                               "<metric>@<column>=<value>, and evaluate reports each slice with intervals")
    image_size: int = option(16, "side in pixels of the canonical square image", at_least(8))
    channels: int = option(1, "channels of the canonical image (1 grey, 3 RGB)", one_of(1, 3))
    shard_records: int = option(0, "images per shard file written by clean (0: about 32 MB a file); more files "
                                "than workers let each multi-worker replica read its own", at_least(0))
    classes: tuple[str, ...] = option((), "keep only these classes, by name (empty: all); labels are renumbered")
    signal_channels: tuple[str, ...] = option((), "sensor_csv: the channel columns, in order")
    recording_column: str = option("", "sensor_csv: the column naming each recording in one long file (empty: "
                                   "one recording per file of a folder)")
    sampling_rate: float = option(0.0, "sensor_csv: samples per second (0: from the time column)", at_least(0))
    window: int = option(64, "signals: samples per window", at_least(4))
    stride: int = option(32, "signals: samples between the starts of consecutive windows", at_least(1))
    short_recordings: str = option("error", "signals: a recording shorter than one window: stop naming it (error), "
                                   "pad it to one window (pad, with data.pad_mode), or leave it out with a count "
                                   "in the cleaning log (skip)", one_of("error", "pad", "skip"))
    pad_mode: str = option("edge", "signals, short_recordings: pad: repeat the last sample (edge) or append "
                           "zeros (zeros)", one_of("edge", "zeros"))
    recording_vote: str = option("mean", "signals: a recording's class from its windows: the class of the mean of "
                                 "their probabilities (mean), or the most frequent window class (majority; ties go "
                                 "to the higher mean probability)", one_of("mean", "majority"))
    anomaly_share: float = option(0.5, "anomaly detection: a window is anomalous when at least this share of its "
                                  "samples is (at most 1)", greater_than(0))
    near_duplicates: bool = option(True, "find near-duplicate images (sides >= 16 px; smaller ones by content hash "
                                   "only) and keep each cluster in one split")
    near_duplicate_candidates: int = option(8, "nearest images by each descriptor (8x8 thumbnail, low-frequency "
                                            "magnitudes) that each image is verified against, among those within "
                                            "near_duplicate_radius", at_least(1))
    near_duplicate_radius: int = option(8, "most bits in which the 64-bit hashes of a descriptor of two images may "
                                        "differ for them to be candidates (less where that already holds "
                                        "near_duplicate_candidates images); larger finds more, searches longer "
                                        "(copies of a 32 px digit shifted 2 px measured up to 8)",
                                        at_least(0), below(16))
    near_duplicate_tolerance: float = option(0.28, "largest verification residual of a near-duplicate pair (copies "
                                             "measured <= 0.18, distinct drawings >= 0.38)", greater_than(0))
    near_duplicate_flips: bool = option(False, "a mirrored copy counts as a near-duplicate")
    missing_values: tuple[str, ...] = option(("", "NA", "N/A", "n/a", "null", "Null", "NULL", "None", "NaN", "nan",
                                               "-"), "CSV cells read as missing (analyze counts them per column)")
    high_cardinality: int = option(50, "a categorical column with more distinct values is reported", at_least(2))
    columns: dict[str, ColumnRule] = option({}, "declared rules per table column")
    bad_lines: str = option("stop", "a CSV line whose field count differs from the header's: stop naming it, or "
                            "skip it into clean's quarantine.csv with its line number", one_of("stop", "skip"))
    drop_near_constant: float = option(0.0, "split drops a table column whose most common value covers at least "
                                       "this share of the training rows (0: off; 1: constant on train)",
                                       at_least(0))
    drop_duplicate_columns: bool = option(False, "split drops a table column equal to an earlier one on the "
                                          "training rows")
    drop_correlated: float = option(0.0, "split drops the later of two numeric table columns whose absolute "
                                    "Pearson correlation on the training rows is at least this (0: off)",
                                    at_least(0))
    relabel: str = option("", "a reviewer's CSV (columns id, label) of items whose label clean replaces, "
                          "relative to runtime.root (empty: none)")
    exclude: str = option("", "a reviewer's CSV (columns id, reason) of items clean leaves out, relative to "
                          "runtime.root (empty: none)")

    def check(self, config: Config) -> None:
        if self.image_size % 4:
            raise ConfigError(f"data.image_size: must be a multiple of 4 (two 2x pooling or upsampling steps), "
                              f"got {self.image_size}")
        if self.source in ("image_folder", "csv", "sensor_csv") and not self.path:
            raise ConfigError(f"data.path: must name the {self.source.replace('_', ' ')} for source '{self.source}'")
        if self.source == "csv" and not self.target:
            raise ConfigError("data.target: must name the target column for source 'csv'")
        if self.source == "sensor_csv" and not (self.target and self.signal_channels):
            raise ConfigError("data.target and data.signal_channels: must name the label column and the channel "
                              "columns for source 'sensor_csv'")
        for name, rule in self.columns.items():
            if rule.min is not None and rule.max is not None and rule.min > rule.max:
                raise ConfigError(f"data.columns.{name}: min must be <= max, got {rule.min:g} > {rule.max:g}")
            if rule.outliers != "none" and (rule.min is not None or rule.max is not None):
                raise ConfigError(f"data.columns.{name}.outliers: a column has a declared range (min/max) or "
                                  f"learned fences, not both")
            low, high = (tuple(rule.outlier_quantiles) + (None, None))[:2]
            if len(rule.outlier_quantiles) != 2 or not 0 <= low < high <= 1:
                raise ConfigError(f"data.columns.{name}.outlier_quantiles: must be two quantiles 0 <= low < high "
                                  f"<= 1, got {list(rule.outlier_quantiles)}")
            if rule.impute == "derive" and not rule.derive_from:
                raise ConfigError(f"data.columns.{name}.derive_from: must name a column for impute 'derive'")

    @property
    def is_table(self) -> bool:
        return self.source in TABLE_SOURCES

    @property
    def is_signal(self) -> bool:
        return self.source in SIGNAL_SOURCES


@dataclass(frozen=True)
class CleanConfig:
    drop_exact_duplicates: bool = option(True, "keep the first of identical images or rows, log the others")
    drop_label_conflicts: bool = option(True, "drop every copy of an item that carries two labels")
    drop_constant_columns: bool = option(True, "drop table columns with a single value")
    missing_rows: str = option("impute", "table rows with a missing value: impute them (fitted on train, by "
                               "split) or drop them here", one_of("impute", "drop"))


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = option(0.15, "fraction of the data held out for validation", greater_than(0), below(1))
    test_fraction: float = option(0.15, "fraction of the data held out for the final test", greater_than(0), below(1))
    seed: int = option(0, "seed of the shuffle")
    strategy: str = option("stratified", "stratified (classification), random, temporal (data.time_column), or "
                           "predefined (the dataset's own split: split.column or split.file for sensor_csv, "
                           "split.column for csv, train/ val/ test/ sub-folders for image_folder, TRAIN and TEST "
                           "for basic_motions; test kept as given, val carved from the given train part, "
                           "grouped and stratified, when none is given)",
                           one_of("stratified", "random", "temporal", "predefined"))
    column: str = option("split", "predefined: the column naming each row's split (train, val or test; one value "
                         "per recording for sensor_csv)")
    file: str = option("", "predefined, sensor_csv: a CSV file with columns recording,split (the recording is the "
                       "file's stem, or the data.recording_column value), relative to runtime.root; it replaces "
                       "split.column")
    group: str = option("none", "also keep each data.group_column group in one split (duplicate and "
                        "near-duplicate images are always kept together)", one_of("none", "column"))
    folds: int = option(0, "k folds over train+val for search.objective: cv (0: none, else >= 2)", at_least(0))
    exclude_used_from_test: bool = option(False, "keep every item of an earlier evaluated test split (the "
                                          "tracking store's test ledger) out of the test split; they may train")

    def check(self, config: Config) -> None:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(f"split: val_fraction + test_fraction must be < 0.9, got "
                              f"{self.val_fraction + self.test_fraction:g}")
        if self.strategy == "temporal" and not config.data.time_column and not config.data.is_signal:
            raise ConfigError("split.strategy: 'temporal' needs data.time_column")
        if self.strategy == "predefined" and config.data.source not in PREDEFINED_SOURCES:
            raise ConfigError(f"split.strategy: 'predefined' needs a source that names each item's split "
                              f"({', '.join(PREDEFINED_SOURCES)}), not '{config.data.source}'")
        if self.file and config.data.source != "sensor_csv":
            raise ConfigError("split.file: a file of recordings and their splits is for source 'sensor_csv'")
        if self.group == "column" and not config.data.group_column:
            raise ConfigError("split.group: 'column' needs data.group_column")
        if self.folds == 1:
            raise ConfigError(f"split.folds: must be 0 (no folds) or >= 2 (k-fold cross-validation, what "
                              f"search.objective: cv uses), got 1; search.objective is '{config.search.objective}'")


@dataclass(frozen=True)
class NormalizeConfig:
    method: str = option("zscore", "zscore or minmax, fitted on the training split", one_of("zscore", "minmax"))
    scope: str = option("global", "images: one statistic for all pixels (global) or one per channel",
                        one_of("global", "per_channel"))




@dataclass(frozen=True)
class HealthConfig:
    action: str = option("none", "label issues from out-of-fold predictions over train+val, found by split with "
                         "cleanlab: none, report (label_issues.csv, per-class health, a gallery; Datalab's outliers "
                         "and near-duplicates in data_issues.csv), or exclude (also "
                         "leaves the suspects at or above min_confidence out of train and val; test is never "
                         "touched)", one_of("none", "report", "exclude"))
    model: str = option("knn", "the quick model of the out-of-fold predictions, on the kind's cheap features "
                        "(thumbnails, encoded rows, window statistics): knn (on 30 principal components), "
                        "logistic, or svm (RBF; slow beyond a few thousand items)", one_of("knn", "logistic", "svm"))
    folds: int = option(5, "cross-validation folds over train+val (groups whole, as the split keeps them)",
                        at_least(2))
    min_confidence: float = option(0.5, "exclude: a suspect goes when the model gives its suspected label at "
                                   "least this probability", at_least(0))
    gallery: int = option(16, "worst suspects drawn in health_suspects.png (images)", at_least(0))
