"""Receiving an audio upload: stream to a temp file under a size cap, validate, then publish atomically.

Nothing half-written stays behind: the body goes to ``<data>/tmp/<random>.part``; only a valid file
is renamed into ``<data>/files/`` inside the transaction that inserts its row, and the temp file is
removed on every failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from opentelemetry.trace import Span
from starlette.concurrency import run_in_threadpool

from instrumentation import semconv
from services.api.errors import api_error
from services.audio.wav import AudioError, decode
from services.settings import ServiceSettings
from services.store import catalog
from services.store.database import Database

WAV_CONTENT_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})


def check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in WAV_CONTENT_TYPES:
        raise api_error(415, "unsupported_media_type", f"expected audio/wav, got {media_type or 'nothing'}")


def check_declared_size(content_length: str | None, max_upload_bytes: int) -> None:
    if content_length and content_length.isdigit() and int(content_length) > max_upload_bytes:
        raise api_error(413, "file_too_large", f"the limit is {max_upload_bytes} bytes")


async def receive_to_temp(chunks: AsyncIterator[bytes], temp_dir: Path, max_upload_bytes: int) -> tuple[Path, int]:
    """Write the body to a fresh temp file; 413 as soon as it passes the limit (the file is removed)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    temp_path = temp_dir / f"{secrets.token_hex(8)}.part"
    size_bytes = 0
    try:
        with temp_path.open("wb") as out:
            async for chunk in chunks:
                size_bytes += len(chunk)
                if size_bytes > max_upload_bytes:
                    raise api_error(413, "file_too_large", f"the limit is {max_upload_bytes} bytes")
                out.write(chunk)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return temp_path, size_bytes


def _validate(temp_path: Path, max_duration_s: float) -> tuple[float, int, int]:
    try:
        audio = decode(temp_path.read_bytes())
    except AudioError as exc:
        status = 415 if exc.code == "not_audio" else 422
        raise api_error(status, exc.code, exc.message) from None
    if audio.duration_s > max_duration_s:
        raise api_error(422, "duration_too_long", f"{audio.duration_s:.1f} s is over the {max_duration_s:.0f} s limit")
    return audio.duration_s, audio.sample_rate_hz, audio.channels


async def store_upload(
    *,
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    content_length: str | None,
    filename: str,
    project_id: str,
    user_id: str,
    db: Database,
    settings: ServiceSettings,
    span: Span,
) -> catalog.FileRecord:
    """Validate and persist one upload; raises ApiError (4xx) with the reason's code."""
    check_content_type(content_type)
    check_declared_size(content_length, settings.max_upload_bytes)
    file_id = catalog.new_file_id()
    span.set_attribute(semconv.FILE_ID, file_id)
    temp_path, size_bytes = await receive_to_temp(chunks, settings.data_dir / "tmp", settings.max_upload_bytes)
    final_path = settings.data_dir / "files" / f"{file_id}.wav"
    try:
        span.set_attribute(semconv.FILE_SIZE, size_bytes)
        if size_bytes == 0:
            raise api_error(400, "empty_file", "the request body is empty")
        duration_s, sample_rate_hz, channels = await run_in_threadpool(_validate, temp_path, settings.max_duration_s)
        span.set_attributes(
            {
                semconv.AUDIO_DURATION_S: duration_s,
                semconv.AUDIO_SAMPLE_RATE_HZ: sample_rate_hz,
                semconv.AUDIO_CHANNELS: channels,
            }
        )
        record = catalog.FileRecord(
            id=file_id,
            project_id=project_id,
            user_id=user_id,
            filename=filename,
            path=str(final_path),
            size_bytes=size_bytes,
            duration_s=duration_s,
            sample_rate_hz=sample_rate_hz,
            channels=channels,
        )
        await run_in_threadpool(_publish, db, record, temp_path, final_path)
    finally:
        temp_path.unlink(missing_ok=True)
    return record


def _publish(db: Database, record: catalog.FileRecord, temp_path: Path, final_path: Path) -> None:
    """Row and file appear together: rename inside the transaction, undo the rename if it rolls back."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with db.transaction() as conn:
            catalog.insert_file(conn, record)
            os.replace(temp_path, final_path)
    except BaseException:
        final_path.unlink(missing_ok=True)
        raise
