"""Benchmark `boards`: a search under a board's limits (`search.targets`), on digits and on the sensor preset
`configs/motions.yaml`: the Cortex-M4 preset (256 KB RAM, 1 MB flash, CMSIS-NN at 120 MHz) with a 5 ms deadline,
over the model's widths and depths, the CNN's dense layer and downsampling (max pooling or strided convolutions) on
digits, the kernel sizes on motions, and the learning rate: 8 random trials each, then the grid (3 values per
numeric parameter) around the 2 best and around the board's 2 best feasible ones (pipelines/training/tuning.py).

`target_search_fits` and `target_search_meets_deadline` (1 or 0) are the verdicts of the board's champion (TFLM
arena and flash measured, latency estimated by deploy/latency.py), `target_search_accuracy_gap` the unconstrained
champion's validation accuracy minus the board's (both the best trial trained in full), `target_search_baseline_gap`
the train stage's model (the preset's own architecture, unsearched) minus the board's, `target_search_latency_ms`
the board champion's estimate, `target_search_fastest_latency_ms` the fastest trial's (whether or not any meets the
deadline); `motions_target_search_*` the same on motions. `make bench ARGS=search` runs these
too.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.stages import clean, split, train, tune

WORK = Path(__file__).parent / ".work" / "boards"
BOARD = {"preset": "cortex_m4", "deadline_ms": 5.0}
SEARCHES = {  # prefix: (config, space): width, depth, kernel size and how blocks downsample, and the learning rate
    "": ("configs/digits.yaml",
         {"model.filters": {"kind": "choice", "values": [[4, 8], [8, 16], [16, 32], [32, 64], [8, 16, 32]]},
          "model.dense_units": {"kind": "choice", "values": [32, 128]},
          "model.downsample": {"kind": "choice", "values": ["pool", "stride"]},
          "train.learning_rate": {"kind": "log_uniform", "low": 3e-4, "high": 3e-3}}),
    "motions_": ("configs/motions.yaml",
                 {"model.filters": {"kind": "choice", "values": [[8], [16], [8, 16], [16, 32], [16, 32, 64]]},
                  "model.kernel_sizes": {"kind": "choice", "values": [[8, 5, 3], [5, 3], [3]]},
                  "train.learning_rate": {"kind": "log_uniform", "low": 3e-4, "high": 3e-3}}),
}


def run() -> dict:
    figures = {}
    for prefix, (config_file, space) in SEARCHES.items():
        figures.update({prefix + key: value for key, value in board_search(config_file, space).items()})
    return figures


def board_search(config_file: str, space: dict) -> dict:
    """One preset's search under the Cortex-M4's limits at a 5 ms deadline, from a fresh store."""
    stem = Path(config_file).stem
    for earlier in WORK.glob(f"{stem}-*"):
        shutil.rmtree(earlier, ignore_errors=True)
    # a new folder each call: MLflow keeps its store per tracking URI for the whole process, so a store deleted
    # and made again at the same path (boards, then search's own boards run, in one `make bench`) is read-only
    WORK.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=WORK))
    tree = config_module.to_dict(config_module.load(config_file, [f"runtime.root={root}"]))
    tree["runtime"]["verbose"] = 0
    tree["search"].update({"space": space, "n_trials": 8, "grid_points": 3, "top_k": 2, "max_trials": 0, "epochs": 30,
                           "prune_warmup": 0, "seed": 0, "targets": [BOARD]})
    config = config_module.from_dict(tree)
    for stage in (clean, split, train):
        stage.run(config)
    metrics = tune.run(config).metrics
    rows = [row for row in workspace.read_json(workspace.stage_dir(root, config.experiment, "tune") / "pareto.json")
            ["rows"] if row["board"] == "cortex_m4"]
    chosen = [row for row in rows if row["trial"] == metrics.get("tune/cortex_m4/trial")]
    figures = {"target_search_trials": len(rows), "target_search_feasible_trials": sum(row["feasible"] for row in rows),
               "target_search_fits": int(bool(chosen) and chosen[0]["fits"]),
               "target_search_meets_deadline": int(bool(chosen) and chosen[0]["meets_deadline"])}
    timed = [row["latency_ms"] for row in rows if row.get("latency_ms") is not None]
    if timed:  # how near the deadline the space comes, champion or not
        figures["target_search_fastest_latency_ms"] = round(min(timed), 2)
    if chosen:
        figures.update({"target_search_accuracy_gap": round(metrics["tune/final_val_accuracy"]
                                                            - metrics["tune/cortex_m4/val/accuracy"], 4),
                        "target_search_latency_ms": round(chosen[0]["latency_ms"], 2),
                        "target_search_board_val_accuracy": round(metrics["tune/cortex_m4/val/accuracy"], 4),
                        "target_search_unconstrained_val_accuracy": round(metrics["tune/final_val_accuracy"], 4),
                        "target_search_baseline_gap": round(metrics["tune/baseline_val_accuracy"]
                                                            - metrics["tune/cortex_m4/val/accuracy"], 4)})
    return figures
