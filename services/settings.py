"""Settings shared by the api and the worker, read from the environment (12-factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_STACK_DIR = Path(".stack")


@dataclass(frozen=True)
class FaultSettings:
    """Fault switches for the detection benchmark (README "Fault switches"); all off by default.

    Each one makes the services fail the way a real incident would, through their ordinary code
    paths, so what the instrumentation and the alert rules see is what they would see in production.
    """

    separation_failure_rate: float = 0.0
    """Share (0..1) of stem separations that raise ``fault_injected``."""
    operation: str | None = None
    """The worker operation (job kind) that sleeps ``operation_delay_s`` before its work."""
    operation_delay_s: float = 0.0
    http_5xx_rate: float = 0.0
    """Share (0..1) of api requests under ``http_5xx_route`` answered 500 ``fault_injected``."""
    http_5xx_route: str = "/projects"
    """A path prefix: the route family ``http_5xx_rate`` applies to."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultSettings:
        defaults = cls()
        return cls(
            separation_failure_rate=_rate(env, "PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE"),
            operation=env.get("PHONOGLYPH_FAULT_OPERATION") or None,
            operation_delay_s=max(0.0, float(env.get("PHONOGLYPH_FAULT_OPERATION_DELAY_S") or 0.0)),
            http_5xx_rate=_rate(env, "PHONOGLYPH_FAULT_HTTP_5XX_RATE"),
            http_5xx_route=env.get("PHONOGLYPH_FAULT_HTTP_5XX_ROUTE") or defaults.http_5xx_route,
        )

    @property
    def any_on(self) -> bool:
        return bool(self.separation_failure_rate or self.http_5xx_rate or (self.operation and self.operation_delay_s))


def _rate(env: Mapping[str, str], name: str) -> float:
    value = float(env.get(name) or 0.0)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} is not a share between 0 and 1")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = float(env.get(name) or default)
    if not value > 0:
        raise ValueError(f"{name}={value} is not a positive number of seconds")
    return value


@dataclass(frozen=True)
class ServiceSettings:
    db_path: Path
    data_dir: Path
    billing_secret: str | None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_duration_s: float = 600.0
    job_lease_s: float = 30.0
    """How long a claimed job is its worker's: the worker renews it every third of this while it works,
    so a job whose worker died (killed, host lost) is claimed again within this long."""
    job_max_attempts: int = 3
    worker_poll_interval_s: float = 0.2
    signup_credits: int = 10
    guest_credits: int = 3
    render_cost_credits: int = 5
    api_token_ttl_s: float = 30 * 86400.0
    """How long an API token works after it is issued (then 401; sign up or create another)."""
    guest_token_ttl_s: float = 7 * 86400.0
    """How long a guest session token works (it is revoked earlier when the guest signs up)."""
    db_busy_timeout_s: float = 10.0
    """How long one SQLite statement waits for another process's write lock before "database is locked"."""
    store_retry_budget_s: float = 60.0
    """How long the worker retries a job-store write that finds the database locked or busy before it
    gives up (and exits, reported): each try already waits out SQLite's own busy timeout."""
    faults: FaultSettings = field(default_factory=FaultSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        defaults = cls(db_path=Path(), data_dir=Path(), billing_secret=None)
        return cls(
            db_path=Path(env.get("PHONOGLYPH_DB", _STACK_DIR / "phonoglyph.db")),
            data_dir=Path(env.get("PHONOGLYPH_DATA_DIR", _STACK_DIR / "data")),
            billing_secret=env.get("PHONOGLYPH_BILLING_SECRET") or None,
            max_upload_bytes=int(env.get("PHONOGLYPH_MAX_UPLOAD_BYTES", defaults.max_upload_bytes)),
            max_duration_s=float(env.get("PHONOGLYPH_MAX_DURATION_S", defaults.max_duration_s)),
            job_lease_s=float(env.get("PHONOGLYPH_JOB_LEASE_S", defaults.job_lease_s)),
            job_max_attempts=int(env.get("PHONOGLYPH_JOB_MAX_ATTEMPTS", defaults.job_max_attempts)),
            worker_poll_interval_s=float(env.get("PHONOGLYPH_WORKER_POLL_INTERVAL_S", defaults.worker_poll_interval_s)),
            api_token_ttl_s=_positive(env, "PHONOGLYPH_API_TOKEN_TTL_S", defaults.api_token_ttl_s),
            guest_token_ttl_s=_positive(env, "PHONOGLYPH_GUEST_TOKEN_TTL_S", defaults.guest_token_ttl_s),
            db_busy_timeout_s=float(env.get("PHONOGLYPH_DB_BUSY_TIMEOUT_S", defaults.db_busy_timeout_s)),
            store_retry_budget_s=float(env.get("PHONOGLYPH_STORE_RETRY_BUDGET_S", defaults.store_retry_budget_s)),
            faults=FaultSettings.from_env(env),
        )
