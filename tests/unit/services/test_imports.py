"""Services are instrumented only through `instrumentation`'s public API and the OTel API."""

import ast
from pathlib import Path

import services

FORBIDDEN = ("sentry_sdk", "posthog", "instrumentation._internal")
SERVICES_DIR = Path(services.__file__).parent


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names += [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
    return names


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_services_import_no_vendor_sdk_and_no_instrumentation_internals() -> None:
    sources = sorted(SERVICES_DIR.rglob("*.py"))
    assert len(sources) > 20
    offenders = [
        f"{path.relative_to(SERVICES_DIR)}: {name}"
        for path in sources
        for name in _imported_modules(ast.parse(path.read_text(), filename=str(path)))
        if _forbidden(name)
    ]
    assert offenders == []


def test_the_scan_catches_each_forbidden_form() -> None:
    source = (
        "import sentry_sdk\nfrom posthog import Posthog\nfrom instrumentation import _internal\n"
        "import instrumentation._internal.setup\nimportlib.import_module('sentry_sdk.integrations')\n"
    )
    found = [name for name in _imported_modules(ast.parse(source)) if _forbidden(name)]
    assert found == [
        "sentry_sdk",
        "posthog",
        "posthog.Posthog",
        "instrumentation._internal",
        "instrumentation._internal.setup",
        "sentry_sdk.integrations",
    ]
