"""Config sections of export and evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.core.config.schema import at_least, below, greater_than, one_of, option

if TYPE_CHECKING:
    pass

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

