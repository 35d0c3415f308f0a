"""Config sections of export and evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.core.config.schema import at_least, below, greater_than, one_of, option
from pipelines.core.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.core.config import Config

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
    optimize_batch_size: int = option(32, "fine-tuning batch size of pruning, clustering and QAT", at_least(1))
    representative_samples: int = option(200, "training images used to calibrate int8", at_least(1))
    max_accuracy_drop: float = option(0.01, "largest val accuracy drop allowed for the bundled variant (of "
                                      "train.objective when named and higher is better)", at_least(0))
    max_mae_increase: float = option(0.05, "regression: largest relative val MAE increase allowed for the bundle "
                                     "(of train.objective when named and lower is better)",
                                     at_least(0))
    latency_runs: int = option(50, "batch-1 invocations timed per variant", at_least(1))
    targets: tuple[Any, ...] = option(
        ("cortex_m4", "raspberry_pi"), "device targets, each a preset (cortex_m4, cortex_m7, esp32_s3, "
        "raspberry_pi), a preset with fields changed ({preset: cortex_m4, deadline_ms: 5}) or {name, ram_bytes, "
        "flash_bytes, runtime: tflm or litert, cores, core (cortex-m4f, cortex-m7, xtensa-lx7, ...), mhz, kernels "
        "(tflm-reference, cmsis-nn, esp-nn, xnnpack), deadline_ms, inferences_per_hour, battery_mah, "
        "battery_volts, sleep_uw, active_mw}; each gets the fastest variant that fits and meets its deadline "
        "(estimated latency, deploy/latency.py); see deploy/micro.py")
    micro_samples: int = option(100, "validation items run on TFLite Micro and compared with LiteRT", at_least(1))
    gate_majority_margin: float = option(0.0, "gate: the model's val accuracy (or MAE) must beat always answering "
                                         "the training split's majority class (or mean) by more than this")
    gate_baseline_margin: float = option(-0.05, "gate: the model's val accuracy (or MAE) may trail a classical "
                                         "model fitted on the same training split by at most minus this "
                                         "(0: it must match it; positive: beat it by that much; regression: "
                                         "a fraction of the baseline's MAE)")
    gate_max_drop: float | None = option(None, "gate: the model's val accuracy (regression: MAE, as a fraction) may "
                                         "fall below the version bundled before it, scored on this validation "
                                         "split, by at most this (unset: no such check)")
    gate_min: dict[str, float] = option({}, "gate: floors on validation metrics, e.g. {accuracy: 0.9, "
                                        "macro_recall: 0.8, recall@malignant: 0.95} (names of the evaluate "
                                        "report; <metric>@<class> for one class)")

    def check(self, config: Config) -> None:
        from deploy import micro

        try:
            micro.resolve_all(self.targets, "export.targets")
        except ValueError as error:
            raise ConfigError(str(error)) from None


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

