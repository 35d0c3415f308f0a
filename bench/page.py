"""The measured figures as documentation, read from bench/results.json when the docs site is built.

Prose never copies a measured number: a page writes `{bench: <entry>.<figure>}` and the docs build
(`docs/hooks.py`) puts the figure from results.json in its place, or fails naming a figure that does not exist.
`markdown()` is the whole results page: per benchmark, the command, the date, the hardware and every figure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results.json"
REFERENCE = re.compile(r"\{bench:\s*([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\}")


def load(path: Path = RESULTS) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def format_figure(value) -> str:
    """A figure as a reader wants it: whole numbers with thousands separators, three significant digits below 1."""
    if isinstance(value, list):
        return ", ".join(format_figure(item) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.3f}"


def figure(results: dict, entry: str, name: str) -> str:
    """One formatted figure; a missing entry or figure raises KeyError naming it."""
    if entry not in results:
        raise KeyError(f"bench/results.json has no entry '{entry}' (entries: {', '.join(sorted(results))})")
    figures = results[entry]["figures"]
    if name not in figures:
        raise KeyError(f"bench/results.json entry '{entry}' has no figure '{name}'")
    return format_figure(figures[name])


def substitute(text: str, results: dict) -> str:
    """Every `{bench: entry.figure}` in `text` replaced by its figure."""
    return REFERENCE.sub(lambda match: figure(results, match.group(1), match.group(2)), text)


def _hardware(entry: dict) -> str:
    hardware = entry.get("hardware")
    if not hardware:
        return "hardware not recorded"
    sets = ", ".join(hardware.get("instruction_sets", ())) or "none recorded"
    return f"{hardware.get('cpu', '?')} ({hardware.get('machine', '?')}), {hardware.get('cores', '?')} cores; " \
           f"instruction sets: {sets}"


def markdown(results: dict | None = None) -> str:
    """Every benchmark entry as a section: how it was run, on what, and a table of its figures."""
    results = load() if results is None else results
    lines = []
    for name, entry in sorted(results.items()):
        lines += [f"### `{name}`", "", f"`{entry.get('command', '?')}` on {entry.get('date', '?')}; "
                  f"{_hardware(entry)}.", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| `{key}` | {format_figure(value)} |" for key, value in sorted(entry["figures"].items())]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
