"""A FastAPI app with no instrumentation code: included routers, a mounted FastAPI sub-app, static files
and a websocket, run under opentelemetry-instrument by test_distro_routes.py."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.staticfiles import StaticFiles

users = APIRouter(prefix="/users")


@users.get("/{user_id}")
async def get_user(user_id: str) -> dict[str, str]:
    return {"id": user_id}


@users.post("/")
async def create_user() -> dict[str, str]:
    return {"created": "yes"}


api = APIRouter()
api.include_router(users)

app = FastAPI()
app.include_router(api, prefix="/api")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()  # the client's close raises WebSocketDisconnect out of the app
        await websocket.send_text(f"{room}: {text}")


sub = FastAPI()


@sub.get("/items/{item_id}")
async def sub_item(item_id: str) -> dict[str, str]:
    return {"sub": item_id}


@sub.get("/fail")
async def sub_fail() -> None:
    raise RuntimeError("the sub-app failed")


app.mount("/sub", sub)
app.mount("/static", StaticFiles(directory=Path(__file__).parent), name="static")
