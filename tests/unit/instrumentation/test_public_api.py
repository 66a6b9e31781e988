from __future__ import annotations

import types

import instrumentation


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(instrumentation).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert set(instrumentation.__all__) == public
    assert instrumentation.__all__ == [
        "Identity",
        "ScrubbingConfig",
        "configure",
        "identify",
        "instrument_fastapi",
        "operation",
        "shutdown",
        "track",
    ]
