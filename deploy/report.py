"""Export's decisions and tables from measured variants: which variant is bundled (the smallest within the
allowed loss), which fits each device target and how fast it runs there (estimated), which one each target gets
(the fastest there that fits and meets its deadline), and the Markdown a person reads (export_table.md,
fit_table.md)."""

from __future__ import annotations

import dataclasses

from deploy import latency, micro


def losses(table: dict, column: str, reference: float, higher_is_better: bool) -> dict[str, float]:
    """Variant -> what it loses against the Keras model in `column`: a drop where higher is better, else a
    relative increase (MAE)."""
    if higher_is_better:
        return {name: reference - row[column] for name, row in table.items()}
    return {name: (row[column] - reference) / max(reference, 1e-12) for name, row in table.items()}


def smallest(table: dict, names) -> str | None:
    names = list(names)
    return min(names, key=lambda name: table[name]["size_bytes"]) if names else None


def _estimated(row: dict, target: micro.Target) -> dict:
    """The latency model's cells for one variant on one target: estimated ms and band, deadline, energy, battery
    (deploy/latency.py), or why there is no estimate."""
    estimate, basis = latency.explain(row, target)
    if estimate is None:
        return {"latency": basis}
    cell = {"latency": "estimated", "latency_basis": basis, "latency_ms": estimate["ms"],
            "latency_low_ms": estimate["low_ms"], "latency_high_ms": estimate["high_ms"]}
    cell.update({key: estimate[key] for key in ("meets_deadline", "deadline_margin_ms", "energy_uj",
                                                 "average_power_uw", "battery_hours") if key in estimate})
    return cell


def _verdict(cell: dict, target: micro.Target, allowed: bool) -> str:
    short = [f"{what} by {-cell[f'{what}_margin_bytes']:,} B" for what in ("flash", "ram")
             if cell[f"{what}_margin_bytes"] < 0]
    verdict = "fits" if cell["fits"] else "does not fit: " + ", ".join(short)
    if cell["fits"] and not allowed:
        verdict = "fits, but loses more accuracy than allowed"
    if target.deadline_ms is not None:
        if "meets_deadline" not in cell:
            verdict += f"; {target.deadline_ms:g} ms deadline not checked (no estimate)"
        elif cell["meets_deadline"]:
            verdict += f"; meets the {target.deadline_ms:g} ms deadline (estimated)"
        else:
            verdict += f"; misses the {target.deadline_ms:g} ms deadline by {-cell['deadline_margin_ms']:.3g} ms " \
                       "(estimated)"
    return verdict


def choose(rows: dict, table: dict, losses: dict, target: micro.Target) -> tuple[str | None, str]:
    """(the variant bundled for `target`, why): among the variants that fit, lose no more than allowed and meet
    the deadline (an unknown latency does not meet one), the fastest by the target's estimate; one without an
    estimate comes after those with one; ties go to the smaller loss, then the smaller file. None, with one line
    saying by how much the fastest misses, when the deadline is what rules every candidate out."""
    candidates = [name for name, cell in rows.items() if cell["fits"] and name in losses]
    meeting = [name for name in candidates if target.deadline_ms is None or rows[name].get("meets_deadline")]

    def rank(name):
        return rows[name].get("latency_ms", float("inf")), losses[name], table[name]["size_bytes"]

    if meeting:
        chosen = min(meeting, key=rank)
        within = "of the variants that fit" + \
            (f" and meet {target.deadline_ms:g} ms" if target.deadline_ms is not None else "")
        if "latency_ms" in rows[chosen]:
            return chosen, f"{chosen}: the fastest by estimate {within}"
        return chosen, f"{chosen}: the most accurate {within} (no latency estimate here; a tie goes to the " \
            "smaller file)"
    if not candidates:
        return None, "no variant fits within the allowed accuracy loss"
    fastest = min(candidates, key=rank)
    cell = rows[fastest]
    if "latency_ms" not in cell:
        return None, f"no variant has a latency estimate here, so none is known to meet {target.deadline_ms:g} ms"
    return None, (f"no variant meets the {target.deadline_ms:g} ms deadline: the fastest that fits, {fastest}, is "
                  f"estimated at {cell['latency_ms']:.3g} ms ({cell['latency_low_ms']:.3g}-"
                  f"{cell['latency_high_ms']:.3g}), {-cell['deadline_margin_ms']:.3g} ms over")


def fit_table(table: dict, targets: list[micro.Target], allowed) -> dict:
    """Per target and variant: flash and RAM needed against the budget (measured), latency, deadline, energy and
    battery life (estimated, deploy/latency.py), the verdict, and the bundled choice (`choose`).

    Args:
        allowed: the variants within the allowed accuracy loss; a mapping variant -> loss ranks ties by it.
    """
    losses = dict(allowed) if isinstance(allowed, dict) else dict.fromkeys(allowed, 0.0)
    result = {}
    for target in targets:
        rows = {}
        for name, row in table.items():
            if target.runtime == "tflm" and "tflm_arena_bytes" not in row:
                rows[name] = {"fits": False, "verdict": f"does not run: {row.get('tflm_error', 'not run on TFLM')}"}
                continue
            ram = row["tflm_arena_bytes"] if target.runtime == "tflm" else \
                row["litert_activation_bytes"] + row["size_bytes"]
            cell = {**micro.fit(target, row["size_bytes"], ram), **_estimated(row, target)}
            cell["verdict"] = _verdict(cell, target, name in losses)
            rows[name] = cell
        chosen, why = choose(rows, table, losses, target)
        result[target.name] = {"target": dataclasses.asdict(target), "variants": rows,
                               "runtime_flash_bytes": target.runtime_flash_bytes,
                               "runtime_ram_bytes": target.runtime_ram_bytes, "chosen": chosen, "why": why}
    return result


def latency_text(cell: dict) -> str:
    """`12.3 (9.6-16.7)`: the estimated ms and its band; else why there is none."""
    if "latency_ms" not in cell:
        return cell.get("latency", "-")
    return f"{cell['latency_ms']:.3g} ({cell['latency_low_ms']:.3g}-{cell['latency_high_ms']:.3g})"


def _number(cell: dict, key: str, form: str) -> str:
    return format(cell[key], form) if key in cell else "-"


def fit_text(fits: dict) -> str:
    lines = ["| target | core, MHz, kernels | variant | flash needed / budget | RAM needed / budget | "
             "latency ms (band) | µJ / inference | battery | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, entry in fits.items():
        target = entry["target"]
        device = f"{target.get('core') or '-'}, {target.get('mhz') or '-'}, {target.get('kernels') or '-'}"
        label = f"{name} ({entry['champion']})" if entry.get("champion") else name  # a board's own champion
        for variant, cell in entry["variants"].items():
            chosen = " **(bundled)**" if variant == entry["chosen"] else ""
            flash = f"{cell['flash_bytes']:,} / {target['flash_bytes']:,}" if "flash_bytes" in cell else "-"
            ram = f"{cell['ram_bytes']:,} / {target['ram_bytes']:,}" if "ram_bytes" in cell else "-"
            speed = latency_text(cell)
            hours = f"{cell['battery_hours'] / 24:,.0f} days" if "battery_hours" in cell else "-"
            lines.append(f"| {label} | {device} | {variant}{chosen} | {flash} | {ram} | {speed} | "
                         f"{_number(cell, 'energy_uj', ',.0f')} | {hours} | {cell['verdict']} |")
        if entry.get("why"):
            notes.append(f"- {name}: {entry['why']}")
    lines.append("")
    lines.extend(notes)
    lines.append("")
    lines.append("Measured here: flash (model bytes plus the runtime's allowance) and RAM (TFLM's measured arena "
                 "(tflm) or LiteRT's tensors and model (litert), plus the runtime's allowance; deploy/micro.py states "
                 "both: " + ", ".join(f"{runtime} {micro.RUNTIME_FLASH[runtime]:,} B flash, "
                                      f"{micro.RUNTIME_RAM[runtime]:,} B RAM" for runtime in micro.RUNTIME_FLASH) +
                 "). Estimated, not measured: latency, energy and battery life, from the int8 flatbuffer's operation "
                 "counts and a cost model fitted to published MLPerf Tiny latencies per core and kernel library "
                 "(deploy/latency.py); the band spans the 10th to 90th percentile of its leave-one-out errors. "
                 "Battery life: the target's duty cycle (inferences per hour) and battery, sleep power as given.")
    return "\n".join(lines)


def table_text(table: dict) -> str:
    """The variants' numeric columns as a Markdown table (integers as they are, the rest to four places)."""
    table = {name: {key: value for key, value in row.items() if not isinstance(value, (list, str, dict))}
             for name, row in table.items()}
    columns = ["size_bytes", "gzip_bytes"]
    for row in table.values():
        columns += [key for key in row if key not in columns]
    lines = ["| variant | " + " | ".join(column.replace("_", " ") for column in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, row in table.items():
        cells = ["" if column not in row else str(row[column]) if isinstance(row[column], int) else
                 f"{row[column]:.4f}" for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def largest_layers(cost: dict, count: int = 5) -> list[dict]:
    return sorted(cost["layers"], key=lambda layer: -layer["macs"])[:count]


def export_text(verdict: str, column: str, reference: float, chosen: str, table: dict, cost: dict,
                fits: dict) -> str:
    """export_table.md: the gates' verdict, the variants, the bundled variant's largest layers, the fit table."""
    layers = "\n".join(f"| {layer['index']} | {layer['op']} | {layer['output']} | {layer['macs']:,} | "
                       f"{layer['params']:,} |" for layer in largest_layers(cost))
    return (f"{verdict}\n\nKeras {column} {reference:.4f}; bundled variant: {chosen}\n\n{table_text(table)}\n\n"
            f"Largest layers of {chosen} ({cost['macs']:,} MACs, {cost['params']:,} parameters in all)\n\n"
            f"| op index | op | output | MACs | parameters |\n|---|---|---|---|---|\n{layers}\n\n"
            f"Will it fit? (export.targets)\n\n{fit_text(fits)}\n")
