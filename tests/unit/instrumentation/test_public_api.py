"""instrumentation/__init__.py: the whole public API, imported lazily."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import instrumentation


def test_all_lists_exactly_the_public_names() -> None:
    assert instrumentation.__all__ == [
        "Identity",
        "OperationAbandoned",
        "ScrubbingConfig",
        "configure",
        "identify",
        "instrument_fastapi",
        "operation",
        "shutdown",
        "track",
    ]
    for name in instrumentation.__all__:
        assert getattr(instrumentation, name) is not None
    public = {
        name
        for name in dir(instrumentation)
        if not name.startswith("_")
        and not isinstance(getattr(instrumentation, name), types.ModuleType)
        and name not in ("annotations", "importlib", "TYPE_CHECKING", "Any")
    }
    assert public == set(instrumentation.__all__)


def test_scrubbing_config_is_one_class_under_both_names() -> None:
    from instrumentation import ScrubbingConfig
    from instrumentation.scrubbing import ScrubbingConfig as PolicyConfig

    assert ScrubbingConfig is PolicyConfig


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        instrumentation.no_such_name  # noqa: B018


@pytest.mark.parametrize("module", ["instrumentation", "instrumentation.semconv", "instrumentation.scrubbing"])
def test_importing_the_package_or_its_pure_modules_loads_no_opentelemetry_sdk(module: str) -> None:
    code = f"import sys, {module}; print('opentelemetry.sdk' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_the_names_load_on_first_use() -> None:
    code = "import sys, instrumentation; instrumentation.configure; print('opentelemetry.sdk' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "True"
