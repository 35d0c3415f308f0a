"""Export's decisions and tables from measured variants: which variant is bundled (the smallest within the
allowed loss), which fits each device target, and the Markdown a person reads (export_table.md, fit_table.md)."""

from __future__ import annotations

import dataclasses

from deploy import micro


def losses(table: dict, column: str, reference: float, higher_is_better: bool) -> dict[str, float]:
    """Variant -> what it loses against the Keras model in `column`: a drop where higher is better, else a
    relative increase (MAE)."""
    if higher_is_better:
        return {name: reference - row[column] for name, row in table.items()}
    return {name: (row[column] - reference) / max(reference, 1e-12) for name, row in table.items()}


def smallest(table: dict, names) -> str | None:
    names = list(names)
    return min(names, key=lambda name: table[name]["size_bytes"]) if names else None


def fit_table(table: dict, targets: list[micro.Target], allowed: set[str]) -> dict:
    """Per target and variant: flash and RAM needed against the budget, the verdict, and the bundled choice
    (the smallest variant that runs there, fits and is within the allowed accuracy loss)."""
    result = {}
    for target in targets:
        rows = {}
        for name, row in table.items():
            if target.runtime == "tflm" and "tflm_arena_bytes" not in row:
                rows[name] = {"fits": False, "verdict": f"does not run: {row.get('tflm_error', 'not run on TFLM')}"}
                continue
            ram = row["tflm_arena_bytes"] if target.runtime == "tflm" else \
                row["litert_activation_bytes"] + row["size_bytes"]
            cell = micro.fit(target, row["size_bytes"], ram)
            short = [f"{what} by {-cell[f'{what}_margin_bytes']:,} B" for what in ("flash", "ram")
                     if cell[f"{what}_margin_bytes"] < 0]
            cell["verdict"] = "fits" if cell["fits"] else "does not fit: " + ", ".join(short)
            if cell["fits"] and name not in allowed:
                cell["verdict"] = "fits, but loses more accuracy than allowed"
            rows[name] = cell
        result[target.name] = {"target": dataclasses.asdict(target), "variants": rows,
                               "runtime_flash_bytes": target.runtime_flash_bytes,
                               "runtime_ram_bytes": target.runtime_ram_bytes,
                               "chosen": smallest(table, (name for name, cell in rows.items()
                                                          if cell["fits"] and name in allowed))}
    return result


def fit_text(fits: dict) -> str:
    lines = ["| target | runtime | variant | flash needed / budget | RAM needed / budget | verdict |",
             "|---|---|---|---|---|---|"]
    for name, entry in fits.items():
        target = entry["target"]
        for variant, cell in entry["variants"].items():
            chosen = " **(bundled)**" if variant == entry["chosen"] else ""
            flash = f"{cell['flash_bytes']:,} / {target['flash_bytes']:,}" if "flash_bytes" in cell else "-"
            ram = f"{cell['ram_bytes']:,} / {target['ram_bytes']:,}" if "ram_bytes" in cell else "-"
            lines.append(f"| {name} | {target['runtime']} | {variant}{chosen} | {flash} | {ram} | {cell['verdict']} |")
    lines.append("")
    lines.append("Flash: model bytes plus the runtime's allowance; RAM: TFLM's measured arena (tflm) or LiteRT's "
                 "tensors and model (litert), plus the runtime's allowance (deploy/micro.py states both: "
                 + ", ".join(f"{runtime} {micro.RUNTIME_FLASH[runtime]:,} B flash, {micro.RUNTIME_RAM[runtime]:,} B RAM"
                             for runtime in micro.RUNTIME_FLASH) + ").")
    return "\n".join(lines)


def table_text(table: dict) -> str:
    """The variants' numeric columns as a Markdown table (integers as they are, the rest to four places)."""
    table = {name: {key: value for key, value in row.items() if not isinstance(value, (list, str))}
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
