"""The distro's hook on every FastAPI app (instrument_every_fastapi_app), in process."""

from __future__ import annotations

import warnings

import httpx
import pytest
from fastapi import FastAPI

from instrumentation._internal.fastapi import instrument_every_fastapi_app
from instrumentation.testing import Captured


@pytest.fixture
def every_app_instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FastAPI, "setup", FastAPI.setup)  # restored after the test
    instrument_every_fastapi_app(excluded_urls="/healthz")
    instrument_every_fastapi_app(excluded_urls="/healthz")  # idempotent


def test_fastapis_own_warnings_point_at_the_line_that_created_the_app(every_app_instrumented: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = FastAPI(root_path="/api")  # deprecated: FastAPI warns with stacklevel=2
    assert hasattr(app, "__phonoglyph_server_spans__")
    if not any("root_path" in str(w.message) for w in caught):
        pytest.skip("this FastAPI does not deprecate root_path")
    assert [(w.filename, w.lineno) for w in caught if "root_path" in str(w.message)] == [
        (__file__, test_fastapis_own_warnings_point_at_the_line_that_created_the_app.__code__.co_firstlineno + 3)
    ]


async def test_every_app_and_subclass_is_instrumented_once(every_app_instrumented: None, captured: Captured) -> None:
    class MyApp(FastAPI):
        pass

    app = MyApp()
    sub = FastAPI()

    @sub.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    app.mount("/sub", sub)
    assert isinstance(app, MyApp) and type(app).__name__ == "MyApp"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/sub/items/1")).status_code == 200
        assert (await client.get("/healthz")).status_code == 404
    assert [span["name"] for span in captured.spans()] == ["GET /sub/items/{item_id}"]
