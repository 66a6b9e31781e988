"""An app with every kind of route FastAPI and Starlette serve: include prefixes at several depths, the
same router included twice, mounted FastAPI sub-apps (nested), static files, a WSGI app, docs,
websockets and a streaming response (test_fastapi_routes.py)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from fastapi.staticfiles import StaticFiles

with warnings.catch_warnings():  # deprecated in favour of a2wsgi, still what many apps mount
    warnings.simplefilter("ignore")
    from starlette.middleware.wsgi import WSGIMiddleware

STATIC_DIR = Path(__file__).parent / "routes_static"
STREAM_CHUNKS = 5
STREAM_DONE_NS: list[int] = []


class Failure(Exception):
    pass


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]


def make_app() -> FastAPI:
    users = APIRouter(prefix="/users")

    @users.post("/")
    async def create_user() -> dict[str, str]:
        return {"created": "yes"}

    @users.get("/{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    @users.get("/{user_id}/fail")
    async def fail_user(user_id: str) -> None:
        raise Failure(user_id)

    @users.websocket("/{user_id}/live")
    async def user_live(websocket: WebSocket, user_id: str) -> None:
        await websocket.accept()
        await websocket.send_text(user_id)
        await websocket.close()

    api = APIRouter()
    api.include_router(users)
    app = FastAPI()
    app.include_router(api, prefix="/api")

    admin = APIRouter()

    @admin.post("/")
    async def admin_root() -> dict[str, str]:
        return {"admin": "yes"}

    app.include_router(admin, prefix="/admin")

    versioned = APIRouter()

    @versioned.get("/things/{thing_id}")
    async def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app.include_router(versioned, prefix="/v1")
    app.include_router(versioned, prefix="/v2")

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            for index in range(STREAM_CHUNKS):
                time.sleep(0.01)
                yield f"chunk {index}\n".encode()
            STREAM_DONE_NS.append(time.time_ns())

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.websocket("/ws/{room}")
    async def room(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        while True:
            text = await websocket.receive_text()  # raises WebSocketDisconnect when the client leaves
            if text == "fail":
                raise Failure(room)
            if text == "bye":
                await websocket.close(code=1000)
                return
            await websocket.send_text(f"{room}: {text}")

    @app.websocket("/ws-quiet/{room}")
    async def quiet_room(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            pass

    sub = FastAPI()

    @sub.get("/items/{item_id}")
    async def sub_item(item_id: str) -> dict[str, str]:
        return {"sub": item_id}

    @sub.get("/fail")
    async def sub_fail() -> None:
        raise Failure("sub")

    deeper = FastAPI()

    @deeper.get("/leaf/{leaf_id}")
    async def leaf(leaf_id: str) -> dict[str, str]:
        return {"leaf": leaf_id}

    sub_router = APIRouter(prefix="/routed")

    @sub_router.get("/{name}")
    async def routed(name: str) -> dict[str, str]:
        return {"routed": name}

    sub.include_router(sub_router)
    sub.mount("/deeper", deeper)
    app.mount("/sub", sub)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/legacy", WSGIMiddleware(_wsgi_app))
    return app
