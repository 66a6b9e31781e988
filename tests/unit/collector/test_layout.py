"""The collector's layout is its data path (docs/architecture.md "Layout"): read every module's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COLLECTOR = ROOT / "collector"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; ``from x import y`` gives ``x`` and ``x.y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((COLLECTOR / folder).rglob("*.py"))


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in sorted(imported_modules(path))
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    ]


def test_the_scan_sees_imports():
    assert "collector.pipeline" in imported_modules(COLLECTOR / "receivers" / "otlp_http.py")
    assert modules_under("receivers") and modules_under("exporters")


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("receivers", ("collector.processors", "collector.delivery", "collector.exporters", "collector.app")),
        ("codecs", ("collector.processors", "collector.delivery", "collector.exporters", "collector.receivers")),
        ("processors", ("collector.receivers", "collector.delivery", "collector.exporters", "collector.config")),
        ("delivery", ("collector.receivers", "collector.processors", "collector.config")),
        ("exporters", ("collector.delivery", "collector.receivers", "collector.processors", "collector.config")),
        ("extensions", ("collector.processors", "collector.delivery", "collector.exporters", "collector.receivers")),
    ],
)
def test_each_stage_imports_only_what_it_may(folder, forbidden):
    assert offending(modules_under(folder), forbidden) == []


def test_the_pipeline_contract_imports_no_stage():
    stages = ("collector.receivers", "collector.processors", "collector.delivery", "collector.exporters")
    assert offending([COLLECTOR / "pipeline.py", COLLECTOR / "events.py"], stages) == []


def test_no_collector_module_imports_the_instrumentations_internals():
    assert offending(sorted(COLLECTOR.rglob("*.py")), ("instrumentation._internal",)) == []


def test_only_the_configuration_reads_the_environment():
    readers = [
        str(path.relative_to(ROOT))
        for path in sorted(COLLECTOR.rglob("*.py"))
        if path != COLLECTOR / "config.py" and ("os.environ" in path.read_text() or "getenv" in path.read_text())
    ]
    assert readers == []
