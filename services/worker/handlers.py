"""What each job kind does: stem separation, audio analysis, render. Pure work, no queue logic."""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span

from instrumentation import semconv
from services.audio import analysis, render, separation, wav
from services.settings import ServiceSettings
from services.store import jobs
from services.store.catalog import FileRecord
from services.store.jobs import Job
from services.worker.errors import FAULT_INJECTED, JobFailed

# (job, file, span, settings, read-only connection) -> result stored on the job
Handler = Callable[[Job, FileRecord, Span, ServiceSettings, sqlite3.Connection], dict[str, Any]]


def load_audio(record: FileRecord) -> wav.Audio:
    try:
        data = Path(record.path).read_bytes()
    except FileNotFoundError:
        raise wav.AudioError("file_missing", f"the stored audio of {record.id} is gone") from None
    return wav.decode(data)


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(path.name + ".part")
    temp_path.write_bytes(data)
    os.replace(temp_path, path)


def separate_stems(
    job: Job, record: FileRecord, span: Span, settings: ServiceSettings, _conn: sqlite3.Connection
) -> dict[str, Any]:
    audio = load_audio(record)
    rate = settings.faults.separation_failure_rate
    if rate and random.random() < rate:
        raise JobFailed(FAULT_INJECTED, f"stem separation failed (PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE={rate})")
    stems = separation.separate(audio)
    result: dict[str, Any] = {"stems": {}}
    for name, samples in stems.items():
        path = settings.data_dir / "stems" / job.id / f"{name}.wav"
        write_atomically(path, wav.encode(samples, audio.sample_rate_hz))
        result["stems"][name] = {"path": str(path), "download": f"/stems/{job.id}/{name}.wav"}
    span.set_attribute("phonoglyph.stems.count", len(stems))
    return result


def analyse_audio(
    job: Job, record: FileRecord, span: Span, settings: ServiceSettings, conn: sqlite3.Connection
) -> dict[str, Any]:
    return analysis.analyse(load_audio(record)).to_dict()  # the runner caches it with the job's completion


def render_image(
    job: Job, record: FileRecord, span: Span, settings: ServiceSettings, conn: sqlite3.Connection
) -> dict[str, Any]:
    audio = load_audio(record)
    cached = jobs.cached_analysis(conn, record.id)
    features = analysis.Analysis(**cached) if cached else analysis.analyse(audio)
    png = render.render_png(audio, features)
    path = settings.data_dir / "renders" / f"{job.id}.png"
    write_atomically(path, png)
    span.set_attribute(semconv.RENDER_ID, job.id)
    return {"image_path": str(path), "download": f"/renders/{job.id}/image", "png_bytes": len(png)}


HANDLERS: dict[str, Handler] = {
    "stem_separation": separate_stems,
    "audio_analysis": analyse_audio,
    "render": render_image,
}
