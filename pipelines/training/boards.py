"""Search under a board's limits (`search.targets`): every trial's model converted to int8 and measured for the
boards named there, the constraints Optuna records, the Pareto front of accuracy against latency and RAM, and
each board's own champion.

Per trial (`measure`): the int8 flatbuffer's size (flash), the arena TensorFlow Lite Micro needed for it on a
few validation items (RAM, measured), and per board the latency estimated by the board's cost model
(deploy/latency.py) against its `deadline_ms`; a trial is feasible on a board when it fits its RAM and flash and
meets its deadline. Optuna records each board's excesses (RAM, flash, deadline; <= 0 when met) as the trial's
constraints (`Trial.set_constraint`, feasible in Optuna's sense when it is on every board). The search stays one
objective (validation accuracy): the trade-off is read from the front (`front`, `plot`), and each board's
champion is its most accurate feasible trial there (`champion_trial`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np

from deploy import latency, measure, micro, tflite
from pipelines.core import config as config_module
from pipelines.core import figures, tracking, workspace
from pipelines.data import splits
from pipelines.training import champion, fitting, recipes

ITEMS = 8  # validation items run on TFLM to read the arena back


def targets(config: config_module.Config) -> list[micro.Target]:
    return [micro.resolve(item) for item in config.search.targets]


def measure_model(model, data: splits.SplitData, config: config_module.Config) -> dict:
    """A trained trial's int8 costs and, per board, fit, estimated latency and verdict (flat, for user attrs)."""
    representative = fitting.training_view(data).x["train"].head(config.export.representative_samples)
    flatbuffer = tflite.convert(model, "int8", representative)
    row, cost = measure.on_device(flatbuffer, np.asarray(data.x["val"].head(ITEMS)))
    found = {"int8_bytes": len(flatbuffer), "macs": int(cost["macs"]), "params": int(cost["params"])}
    if "tflm_error" in row:
        found["tflm_error"] = row["tflm_error"]
    arena = row.get("tflm_arena_bytes")
    for target in targets(config):
        prefix = f"board/{target.name}/"
        ram_needed = arena if target.runtime == "tflm" else row["litert_activation_bytes"]
        if ram_needed is None:  # TFLM cannot run it: it fits no microcontroller
            found.update({prefix + "feasible": False, prefix + "why": "TFLM cannot run it"})
            continue
        verdict = micro.fit(target, len(flatbuffer), ram_needed)
        estimate = latency.estimate(flatbuffer, target)
        meets = target.deadline_ms is None or (estimate is not None and estimate["ms"] <= target.deadline_ms)
        found.update({prefix + "ram_bytes": verdict["ram_bytes"], prefix + "flash_bytes": verdict["flash_bytes"],
                      prefix + "fits": verdict["fits"], prefix + "meets_deadline": meets,
                      prefix + "feasible": verdict["fits"] and meets,
                      prefix + "ram_excess": -verdict["ram_margin_bytes"],
                      prefix + "flash_excess": -verdict["flash_margin_bytes"]})
        if estimate is not None:
            found[prefix + "latency_ms"] = float(estimate["ms"])
            if target.deadline_ms is not None:
                found[prefix + "deadline_excess"] = float(estimate["ms"]) - target.deadline_ms
    return found


def feasible(trial: dict, name: str) -> bool:
    return bool(trial.get("boards", {}).get(f"board/{name}/feasible"))


def champion_trial(trials: list[dict], name: str, key: str, higher: bool) -> dict | None:
    """The board's champion trial: the most accurate complete trial that fits the board and meets its deadline."""
    chosen = [trial for trial in trials if trial["state"] == "complete" and feasible(trial, name)]
    return max(chosen, key=lambda trial: trial[key] if higher else -trial[key]) if chosen else None


def front(trials: list[dict], name: str, key: str, higher: bool) -> list[int]:
    """The trial numbers on the Pareto front of (the objective, the board's estimated latency, its RAM): no other
    complete trial is at least as good on all three and better on one."""
    points = {}
    for trial in trials:
        boards = trial.get("boards", {})
        ms, ram = boards.get(f"board/{name}/latency_ms"), boards.get(f"board/{name}/ram_bytes")
        if trial["state"] == "complete" and ms is not None and ram is not None:
            points[trial["number"]] = (-trial[key] if higher else trial[key], ms, ram)
    return sorted(number for number, point in points.items()
                  if not any(all(o <= p for o, p in zip(other, point)) and other != point
                             for other in points.values()))


def table(trials: list[dict], names: list[str], key: str, higher: bool) -> list[dict]:
    """One row per measured trial and board: the figures, the verdicts and whether it is on the front."""
    rows = []
    for name in names:
        on_front = set(front(trials, name, key, higher))
        for trial in trials:
            boards = trial.get("boards", {})
            if f"board/{name}/feasible" not in boards:
                continue
            rows.append({"board": name, "trial": trial["number"], key: trial.get(key),
                         "latency_ms": boards.get(f"board/{name}/latency_ms"),
                         "ram_bytes": boards.get(f"board/{name}/ram_bytes"),
                         "flash_bytes": boards.get(f"board/{name}/flash_bytes"),
                         "fits": boards.get(f"board/{name}/fits", False),
                         "meets_deadline": boards.get(f"board/{name}/meets_deadline", False),
                         "feasible": boards[f"board/{name}/feasible"], "pareto": trial["number"] in on_front,
                         "params": trial["params"]})
    return rows


def plot(rows: list[dict], boards: list[micro.Target], key: str, path) -> None:
    """Per board: the objective against estimated latency and against RAM, feasible trials filled, infeasible
    hollow, the front joined, the deadline and the RAM budget drawn."""
    figure, axes = plt.subplots(max(len(boards), 1), 2, figsize=(9, 3.4 * max(len(boards), 1)), squeeze=False)
    for (left, right), board in zip(axes, boards):
        mine = [row for row in rows if row["board"] == board.name and row["latency_ms"] is not None]
        for axis, column, limit, label in ((left, "latency_ms", board.deadline_ms, "estimated latency (ms)"),
                                           (right, "ram_bytes", board.ram_bytes, "RAM (bytes, TFLM arena measured)")):
            for is_feasible, style in ((True, {"c": "tab:green"}), (False, {"facecolors": "none",
                                                                             "edgecolors": "tab:red"})):
                chosen = [row for row in mine if row["feasible"] == is_feasible]
                if chosen:
                    axis.scatter([row[column] for row in chosen], [row[key] for row in chosen],
                                 label="feasible" if is_feasible else "infeasible", **style)
            edge = sorted((row for row in mine if row["pareto"]), key=lambda row: row[column])
            if edge:
                axis.plot([row[column] for row in edge], [row[key] for row in edge], color="grey", linewidth=1,
                          label="Pareto front")
            if limit is not None:
                axis.axvline(limit, color="black", linestyle="--", linewidth=1, label="limit")
            axis.set(xlabel=label, ylabel=key, title=board.name)
            axis.legend(fontsize=7)
    figures.save(figure, path)


def crown(config: config_module.Config, trials: list[dict], data: splits.SplitData, split_id: str, key: str,
          higher: bool, folder: Path, best: tuple[dict, str, dict] | None) -> dict:
    """The front of every board (pareto.json, pareto.png, logged to MLflow) and each board's champion: its most
    accurate feasible trial trained in full (or the search's best model when that is the same trial, `best`
    being (its params, its registered version, its scores)) under the alias `champion-<board>`. Returns metrics."""
    boards = targets(config)
    rows = table(trials, [board.name for board in boards], key, higher)
    workspace.write_json(folder / "pareto.json", {"objective": key, "rows": rows})
    plot(rows, boards, key, folder / "pareto.png")
    for name in ("pareto.json", "pareto.png"):
        mlflow.log_artifact(str(folder / name))
    metrics = {}
    for board in boards:
        alias, chosen = f"champion-{board.name}", champion_trial(trials, board.name, key, higher)
        metrics[f"tune/{board.name}/feasible_trials"] = sum(row["feasible"] for row in rows
                                                            if row["board"] == board.name)
        if chosen is None:
            print(f"[tune] no trial fits {board.name} and meets its deadline: no {alias}")
            continue
        if best is not None and best[0] == chosen["params"]:  # the search's best already: the same version
            version, scores = best[1], best[2]
            champion.promote(config, version, scores, split_id, data.task, alias, describe=False)
        else:
            chosen_config = config
            for path, value in chosen["params"].items():
                chosen_config = config_module.replace_path(chosen_config, path, value)
            with tracking.run(chosen_config, f"best-{board.name}", tags={"phase": "final", "board": board.name}):
                model, history, scores = recipes.fit_model(chosen_config, data, split_id)
                tracking.log_metrics({key: scores[key], "val/loss": scores["val/loss"]}, step=len(history["loss"]))
                version, _ = champion.register(chosen_config, model, scores, split_id, data.task,
                                               data.x["val"].head(2), alias=alias)
        found = chosen["boards"]
        metrics.update({f"tune/{board.name}/trial": chosen["number"], f"tune/{board.name}/{key}": scores[key],
                        f"tune/{board.name}/ram_bytes": found[f"board/{board.name}/ram_bytes"],
                        f"tune/{board.name}/flash_bytes": found[f"board/{board.name}/flash_bytes"]})
        if f"board/{board.name}/latency_ms" in found:
            metrics[f"tune/{board.name}/latency_ms"] = found[f"board/{board.name}/latency_ms"]
        print(f"[tune] {alias}: trial {chosen['number']} ({key} {scores[key]:.4f}), version {version}")
    return metrics
