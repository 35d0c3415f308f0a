"""MkDocs hook: the pages generated from the code, so they cannot drift.

- `<!-- generated: config-reference -->` becomes the configuration reference
  (`pipelines.core.config.reference.markdown()`, read from the typed config);
- `<!-- generated: bench-results -->` becomes every entry of bench/results.json (`bench.page.markdown()`);
- `{bench: <entry>.<figure>}` anywhere becomes that measured figure; a missing one fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import page as bench_page  # noqa: E402
from pipelines.core.config import reference  # noqa: E402

CONFIG_MARKER = "<!-- generated: config-reference -->"
BENCH_MARKER = "<!-- generated: bench-results -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    results = bench_page.load()
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, reference.markdown())
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, bench_page.markdown(results))
    try:
        return bench_page.substitute(markdown, results)
    except KeyError as error:
        raise PluginError(f"{page.file.src_path}: {error.args[0]}") from None
