"""The README is a front door that tells the truth, and the docs site builds from the code.

What the README shows must work as shown: every `make` target exists, every `python -m pipelines` stage
exists, every config loads. The configuration reference lists every field of the schema, and the site builds
with `mkdocs build --strict` (how CI builds it: `make test` runs this file).
"""

import dataclasses
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import page as bench_page
from pipelines import __main__ as cli
from pipelines.core import config as config_module
from pipelines.core.config import reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _code(text: str) -> str:
    """The README's code: fenced blocks and inline code spans, where commands are shown."""
    blocks = [body for _, body in FENCE.findall(text)]
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return "\n".join(blocks + spans)


def _yaml_blocks(path: Path) -> list[str]:
    return [body for language, body in FENCE.findall(path.read_text(encoding="utf-8")) if language == "yaml"]


def _make_targets() -> set[str]:
    """Every target in the Makefile's database, after its variables and the stage registry are expanded."""
    listing = subprocess.run(["make", "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True,
                             env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                                  "PYTHON": sys.executable}).stdout
    return {match.group(1) for match in re.finditer(r"^([a-zA-Z0-9][\w-]*):(?!=)", listing, re.MULTILINE)}


def test_the_readme_is_a_front_door_of_at_most_220_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert 100 <= len(lines) <= 220, len(lines)


def test_every_make_target_the_readme_shows_exists():
    shown = set(re.findall(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)", _code(README.read_text(encoding="utf-8")),
                           re.MULTILINE))
    targets = _make_targets()
    assert {"pipeline", "test", "help", "docs", "docs-serve", "clean-data"} <= targets  # the parse found them
    assert {"pipeline", "test", "ui"} <= shown
    assert sorted(shown - targets) == []


def test_every_cli_stage_the_readme_shows_exists():
    shown = set(re.findall(r"python -m pipelines\s+([a-z][\w-]*)", _code(README.read_text(encoding="utf-8"))))
    commands = next(action for action in cli._parser()._actions if action.dest == "stage").choices
    assert {"analyze", "all", "tune-worker", "server"} <= set(commands)  # the parser's own list
    assert shown and sorted(shown - set(commands)) == []


@pytest.mark.parametrize("path", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda path: path.name)
def test_every_config_shown_loads(path, tmp_path):
    for index, block in enumerate(_yaml_blocks(path)):
        file = tmp_path / f"block{index}.yaml"
        file.write_text(block, encoding="utf-8")
        config = config_module.load(file)  # raises ConfigError naming the key
        assert config.experiment


def test_the_readme_shows_a_config_for_each_kind_of_your_own_data():
    sources = {config_module.from_dict(config_module.schema.read_yaml(block)).data.source
               for block in _yaml_blocks(README)}
    assert {"image_folder", "csv", "sensor_csv"} <= sources


def _schema_paths(cls=config_module.Config, prefix="") -> list[str]:
    """Dotted field paths, walked here from the dataclasses; `*` where a mapping's key goes."""
    paths = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            paths += _schema_paths(kind, f"{prefix}{item.name}.")
            continue
        paths.append(prefix + item.name)
        if typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            paths += _schema_paths(typing.get_args(kind)[1], f"{prefix}{item.name}.*.")
    return paths


def test_the_configuration_reference_lists_every_field_of_the_schema():
    text = reference.markdown()
    listed = set(re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE))
    expected = _schema_paths()
    assert len(expected) > 150 and "data.columns.*.min" in expected and "search.space.*.kind" in expected
    patterns = [re.compile(re.escape(path).replace(r"\*", "<[a-z]+>") + "$") for path in expected]
    missing = [path for path, pattern in zip(expected, patterns) if not any(pattern.match(row) for row in listed)]
    assert missing == []
    assert len(listed) == len(expected)  # nothing listed that the schema lacks


def test_the_reference_reads_types_defaults_and_rules_from_the_fields():
    rows = {row.path: row for row in reference.fields()}
    assert rows["train.learning_rate"].kind == "number" and rows["train.learning_rate"].rules == ("> 0",)
    assert rows["train.learning_rate"].default == "0.001"
    assert rows["export.variants"].default == "[float32, int8]" and "`qat_int8`" in rows["export.variants"].rules[0]
    assert rows["export.gate_max_drop"].kind == "number or unset"
    assert rows["model.dropout_rate"].rules == (">= 0", "< 1")
    assert "100 characters" in rows["experiment"].rules[0] and "test-ledger" in rows["experiment"].rules[1]
    every_rule = [rule for row in rows.values() for rule in row.rules]
    assert every_rule and not [rule for rule in every_rule if rule.startswith("checked by")]
    assert "split.strategy: 'temporal' needs data.time_column" in reference.cross_field_rules(
        config_module.SplitConfig)


def test_every_measured_figure_the_docs_cite_exists_in_the_bench_results():
    results = bench_page.load()
    cited = 0
    for path in DOCS.rglob("*.md"):
        text = path.read_text(encoding="utf-8")
        cited += len(bench_page.REFERENCE.findall(text))
        bench_page.substitute(text, results)  # KeyError naming a figure that does not exist
    assert cited >= 10
    with pytest.raises(KeyError, match="no figure 'nope'"):
        bench_page.substitute("{bench: pipeline.nope}", results)
    assert bench_page.substitute("{bench: pipeline.first_run_s}", {"pipeline": {"figures": {"first_run_s": 202.3}}}) \
        == "202"
    assert "{bench:" not in README.read_text(encoding="utf-8")  # the README is not built: no citations there


def test_the_sensor_csv_example_reads_recordings_in_the_format_its_comment_shows(tmp_path):
    from pipelines.data import kinds

    folder = tmp_path / "data" / "raw" / "my_recordings"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(4):
        time = np.arange(120) / 50.0
        pd.DataFrame({"t": time, "ax": rng.normal(size=120), "ay": rng.normal(size=120), "az": rng.normal(size=120),
                      "activity": ("walking", "sitting")[index % 2]}).to_csv(folder / f"rec{index}.csv", index=False)
    config = config_module.load(ROOT / "configs" / "sensor_csv.example.yaml", [f"runtime.root={tmp_path}"])
    recordings = kinds.for_source(config.data.source).read(config)
    assert recordings.channels == ("ax", "ay", "az") and len(recordings.signals) == 4
    assert sorted(recordings.class_names) == ["sitting", "walking"]
    assert recordings.sampling_rate_hz == pytest.approx(50.0)


def _build_site(site: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is missing from the virtual environment: it is a dev dependency (make setup)"
    build = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                           capture_output=True, text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                                                                "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stdout + build.stderr


def test_the_docs_site_builds_strictly_with_the_generated_pages(tmp_path):
    _build_site(tmp_path / "site")
    configuration = (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "generated: config-reference" not in configuration
    assert [path for path in _schema_paths() if "*" not in path and f"<code>{path}</code>" not in configuration] == []
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "first_run_s" in benchmarks and "generated: bench-results" not in benchmarks
    assert not (tmp_path / "site" / "hooks.py").exists()  # the build's own code is no page
    pages = list((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= 20
    assert not [page for page in pages if bench_page.REFERENCE.search(page.read_text(encoding="utf-8"))]


def test_every_registered_stage_has_a_docs_page_in_the_site_navigation():
    import yaml

    from pipelines.stages import STAGES

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    pages = re.findall(r"stages/([\w-]+)\.md", yaml.safe_dump(nav))
    table = (DOCS / "stages" / "index.md").read_text(encoding="utf-8")
    for stage in STAGES:
        assert (DOCS / "stages" / f"{stage.name}.md").is_file(), stage.name
        assert stage.name in pages, f"mkdocs.yml's nav misses stages/{stage.name}.md"
        assert f"| [`{stage.make_target}`]({stage.name}.md)" in table, stage.name


def test_the_docs_site_renders_in_a_browser_with_its_navigation_and_the_configuration_table(tmp_path):
    """The built site served over HTTP and opened in headless Chromium, as the UI test opens `make ui`: the home
    page shows the navigation, the configuration page the generated table (a screenshot of each is left in
    test-artifacts/)."""
    from tests.conftest import artifacts_folder, free_port, stop, system_tool, wait_for_port

    chromium = system_tool("chromium", "chromium-browser", "/usr/bin/chromium")
    from playwright import sync_api

    _build_site(tmp_path / "site")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path / "site", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for_port(port, server)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            navigation = page.locator("nav.md-nav--primary")
            assert navigation.get_by_text("Configuration reference").count() >= 1
            page.screenshot(path=str(artifacts_folder() / "docs-home.png"))
            page.goto(f"http://127.0.0.1:{port}/configuration/", wait_until="load")
            cell = page.locator("table code", has_text=re.compile(r"^search\.targets$")).first
            cell.wait_for(timeout=30_000)
            assert cell.is_visible()
            page.screenshot(path=str(artifacts_folder() / "docs-configuration.png"))
            browser.close()
    finally:
        stop(server)
