"""Settings shared by the api and the worker, read from the environment (12-factor)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_STACK_DIR = Path(".stack")


@dataclass(frozen=True)
class ServiceSettings:
    db_path: Path
    data_dir: Path
    billing_secret: str | None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_duration_s: float = 600.0
    job_lease_s: float = 120.0
    job_max_attempts: int = 3
    worker_poll_interval_s: float = 0.2
    signup_credits: int = 10
    guest_credits: int = 3
    render_cost_credits: int = 5

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        defaults = cls(db_path=Path(), data_dir=Path(), billing_secret=None)
        return cls(
            db_path=Path(env.get("PHONOGLYPH_DB", _STACK_DIR / "phonoglyph.db")),
            data_dir=Path(env.get("PHONOGLYPH_DATA_DIR", _STACK_DIR / "data")),
            billing_secret=env.get("PHONOGLYPH_BILLING_SECRET") or None,
            max_upload_bytes=int(env.get("PHONOGLYPH_MAX_UPLOAD_BYTES", defaults.max_upload_bytes)),
            max_duration_s=float(env.get("PHONOGLYPH_MAX_DURATION_S", defaults.max_duration_s)),
            job_lease_s=float(env.get("PHONOGLYPH_JOB_LEASE_S", defaults.job_lease_s)),
            worker_poll_interval_s=float(env.get("PHONOGLYPH_WORKER_POLL_INTERVAL_S", defaults.worker_poll_interval_s)),
        )
