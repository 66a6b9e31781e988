"""Every setting the instrumentation reads from the environment, one row each; the only reader of it.

A row (:class:`ConfigParam`) names the variable(s), the default, the parser and what it means. A
value that does not parse logs a warning naming the variable and the default is used: a bad setting
never turns the instrumentation off (the OTel SDK behaves the same). ``configure()``'s keyword
arguments win over the environment (:func:`resolve`). Variables the OTel SDK reads itself
(``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``, ...) are not repeated here. See
docs/architecture.md, "Configuration".
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from instrumentation import semconv

T = TypeVar("T")

_logger = logging.getLogger("instrumentation")

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
DEFAULT_SERVICE_NAME = "unknown_service"
DEFAULT_EXCLUDED_URLS = "/health,/healthz"


# -- parsers: raise ValueError on a malformed value ------------------------------------------------


def _text(raw: str) -> str:
    return raw


def _positive_int(raw: str) -> int:
    value = int(float(raw))
    if value <= 0:
        raise ValueError("not a positive number")
    return value


def _positive_ms_as_s(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("not a positive number of milliseconds")
    return value / 1000


def _on_off(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError("neither on nor off")


def _flag(raw: str) -> bool:
    return raw == "1"


def _regexes(raw: str) -> tuple[str, ...]:
    patterns = tuple(part.strip() for part in raw.split(",") if part.strip())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regex: {exc}") from None
    return patterns


def _key_values(raw: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = value.strip()
    return attributes


# -- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigParam(Generic[T]):
    """One setting: the first of ``env_vars`` that is set (and not blank) gives its value."""

    env_vars: tuple[str, ...]
    """The environment variables, in order of precedence."""
    default: T
    """The value when none is set, or when the one set is malformed."""
    parse: Callable[[str], T]
    """The type: text to value; raises ``ValueError`` on a malformed value."""
    blank_is_unset: bool = True
    """A blank value counts as unset (the next variable, then the default, applies); when False, an
    empty value is a value (an empty list of excluded URLs)."""


SERVICE_NAME = ConfigParam[str | None](env_vars=("OTEL_SERVICE_NAME",), default=None, parse=_text)
"""The ``service.name`` resource attribute (else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``,
else ``unknown_service``)."""

RESOURCE_ATTRIBUTES = ConfigParam[Mapping[str, str]](
    env_vars=("OTEL_RESOURCE_ATTRIBUTES",), default=MappingProxyType({}), parse=_key_values
)
"""``key=value`` pairs, comma-separated: ``service.version`` and ``deployment.environment`` are read."""

OTLP_ENDPOINT = ConfigParam[str | None](env_vars=("OTEL_EXPORTER_OTLP_ENDPOINT",), default=None, parse=_text)
"""Base URL of the collector (``/v1/traces`` etc. appended); default ``http://localhost:4318``."""

OTLP_TRACES_ENDPOINT = ConfigParam[str | None](
    env_vars=("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",), default=None, parse=_text
)
"""Full URL for spans, instead of ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``."""

OTLP_LOGS_ENDPOINT = ConfigParam[str | None](env_vars=("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",), default=None, parse=_text)
"""Full URL for event records, instead of ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/logs``."""

OTLP_METRICS_ENDPOINT = ConfigParam[str | None](
    env_vars=("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",), default=None, parse=_text
)
"""Full URL for metrics, instead of ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/metrics``."""

METRIC_EXPORT_INTERVAL = ConfigParam[float](
    env_vars=("OTEL_METRIC_EXPORT_INTERVAL",), default=10.0, parse=_positive_ms_as_s
)
"""Milliseconds between metric exports. 10 s here (the SDK's own default is 60 s): the collector's alert
rules read the request and queue metrics, and a minute between points would be a minute more before a
5xx burst pages someone."""

SENTRY_DSN = ConfigParam[str | None](env_vars=("SENTRY_DSN",), default=None, parse=_text)
"""Sentry is on when set."""

SENTRY_ENVIRONMENT = ConfigParam[str | None](env_vars=("SENTRY_ENVIRONMENT",), default=None, parse=_text)
"""The environment, when ``OTEL_RESOURCE_ATTRIBUTES`` gives none."""

SENTRY_RELEASE = ConfigParam[str | None](env_vars=("SENTRY_RELEASE",), default=None, parse=_text)
"""Sentry's release (else the service version), and the service version when none is given."""

SENTRY_SPANS = ConfigParam[bool](env_vars=("PHONOGLYPH_SENTRY_SPANS",), default=True, parse=_on_off)
"""``on`` (or true/1/yes): spans go to Sentry's OTLP endpoint from this process. ``off`` (or
false/0/no): Sentry gets errors only (an OpenTelemetry Collector forwards the spans; otherwise
Sentry would get each twice)."""

SCRUB_KEYS = ConfigParam[tuple[str, ...]](env_vars=("PHONOGLYPH_SCRUB_KEYS",), default=(), parse=_regexes)
"""Comma-separated regexes: more sensitive keys (``ScrubbingConfig.extra_key_patterns``)."""

SCRUB_VALUES = ConfigParam[tuple[str, ...]](env_vars=("PHONOGLYPH_SCRUB_VALUES",), default=(), parse=_regexes)
"""Comma-separated regexes: more sensitive values (``ScrubbingConfig.extra_value_patterns``)."""

STRICT = ConfigParam[bool](env_vars=("PHONOGLYPH_INSTRUMENTATION_STRICT",), default=False, parse=_flag)
"""``1`` (the test suite sets it): an instrumentation error is re-raised instead of only logged."""

FASTAPI_EXCLUDED_URLS = ConfigParam[str](
    env_vars=("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"),
    default=DEFAULT_EXCLUDED_URLS,
    parse=_text,
    blank_is_unset=False,
)
"""Under ``opentelemetry-instrument``: comma-separated paths (or regexes) that get no server span."""


SPOOL = ConfigParam[bool](env_vars=("PHONOGLYPH_SPOOL",), default=True, parse=_on_off)
"""``on``: event records that cannot be exported (collector down, 5xx/429, timeout) are kept in a
bounded on-disk spool and sent oldest first once the endpoint answers. ``off`` (read-only file
systems): kept in memory only, dropped when the export retries give up; one warning at start."""

SPOOL_DIR = ConfigParam[str | None](env_vars=("PHONOGLYPH_SPOOL_DIR",), default=None, parse=_text)
"""Where the spool lives: one directory per process under it. Default
``<system temp>/phonoglyph-spool/<service.name>``. Not writable: a warning, and no spool."""

SPOOL_MAX_BYTES = ConfigParam[int](
    env_vars=("PHONOGLYPH_SPOOL_MAX_BYTES",), default=64 * 1024 * 1024, parse=_positive_int
)
"""The process's spool at most (bytes); beyond it the oldest records are dropped and counted."""


@dataclass(frozen=True)
class QueueConfig:
    """One export queue: bounded, drained by a worker thread in batches."""

    max_queue_size: int = 4096
    """Items waiting at most; when full, new ones are dropped and counted."""
    max_export_batch_size: int = 512
    """Items per export call."""
    schedule_delay_s: float = 1.0
    """Longest wait between two exports (the environment variable is in milliseconds, as the spec says)."""
    export_timeout_s: float = 10.0
    """Timeout of one export (milliseconds in the environment)."""


@dataclass(frozen=True)
class QueueParams:
    """The four rows of one export queue (``OTEL_BSP_*`` for spans, ``OTEL_BLRP_*`` for records)."""

    max_queue_size: ConfigParam[int]
    max_export_batch_size: ConfigParam[int]
    schedule_delay_s: ConfigParam[float]
    export_timeout_s: ConfigParam[float]


def _queue_params(prefix: str, default: QueueConfig) -> QueueParams:
    return QueueParams(
        max_queue_size=ConfigParam(
            env_vars=(f"{prefix}_MAX_QUEUE_SIZE",), default=default.max_queue_size, parse=_positive_int
        ),
        max_export_batch_size=ConfigParam(
            env_vars=(f"{prefix}_MAX_EXPORT_BATCH_SIZE",), default=default.max_export_batch_size, parse=_positive_int
        ),
        schedule_delay_s=ConfigParam(
            env_vars=(f"{prefix}_SCHEDULE_DELAY",), default=default.schedule_delay_s, parse=_positive_ms_as_s
        ),
        export_timeout_s=ConfigParam(
            env_vars=(f"{prefix}_EXPORT_TIMEOUT",), default=default.export_timeout_s, parse=_positive_ms_as_s
        ),
    )


SPAN_QUEUE_DEFAULTS = QueueConfig(max_queue_size=8192, max_export_batch_size=2048)
"""Larger defaults than the spec's (2048 and 512): under a busy event loop, one export request costs its
thread about 1.3 ms of CPU whatever its size (the GIL changes hands at each socket call), so 2,048 spans
a request instead of 512 took about 8 µs of CPU off each request of a trivial endpoint
(docs/benchmarks.md). Our span exporter also splits a batch into requests of at most
``batching.MAX_REQUEST_BYTES``."""

SPAN_QUEUE = _queue_params("OTEL_BSP", SPAN_QUEUE_DEFAULTS)
"""``OTEL_BSP_MAX_QUEUE_SIZE``, ``_MAX_EXPORT_BATCH_SIZE``, ``_SCHEDULE_DELAY``, ``_EXPORT_TIMEOUT``."""

EVENT_QUEUE = _queue_params("OTEL_BLRP", QueueConfig())
"""``OTEL_BLRP_MAX_QUEUE_SIZE``, ``_MAX_EXPORT_BATCH_SIZE``, ``_SCHEDULE_DELAY``, ``_EXPORT_TIMEOUT``."""


def read(param: ConfigParam[T]) -> T:
    """The value of ``param`` from the environment; its default when unset or malformed (warned)."""
    for name in param.env_vars:
        raw = os.environ.get(name)
        if raw is None or (param.blank_is_unset and not raw.strip()):
            continue
        try:
            return param.parse(raw)
        except (ValueError, OverflowError) as exc:
            _logger.warning("%s=%r is invalid (%s): using the default, %r", name, raw, exc, param.default)
            return param.default
    return param.default


def read_queue(params: QueueParams) -> QueueConfig:
    return QueueConfig(
        max_queue_size=read(params.max_queue_size),
        max_export_batch_size=read(params.max_export_batch_size),
        schedule_delay_s=read(params.schedule_delay_s),
        export_timeout_s=read(params.export_timeout_s),
    )


# -- configure()'s settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    service_name: str
    service_version: str | None
    environment: str | None
    otlp_endpoint: str
    sentry_dsn: str | None
    sentry_release: str | None
    span_queue: QueueConfig
    event_queue: QueueConfig
    traces_endpoint: str | None = None
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (else ``otlp_endpoint`` + ``/v1/traces``)."""
    logs_endpoint: str | None = None
    metrics_endpoint: str | None = None
    metric_export_interval_s: float = METRIC_EXPORT_INTERVAL.default
    spool_enabled: bool = SPOOL.default
    spool_dir: str | None = SPOOL_DIR.default
    spool_max_bytes: int = SPOOL_MAX_BYTES.default

    def signal_endpoint(self, signal: str) -> str:
        """The URL for ``signal`` (``traces``, ``logs`` or ``metrics``)."""
        specific = {"traces": self.traces_endpoint, "logs": self.logs_endpoint, "metrics": self.metrics_endpoint}
        return specific.get(signal) or f"{self.otlp_endpoint}/v1/{signal}"


def resolve(
    *,
    service_name: str | None,
    service_version: str | None,
    environment: str | None,
    otlp_endpoint: str | None,
    sentry_dsn: str | None,
) -> Settings:
    """configure()'s arguments, completed from the environment, then the defaults."""
    resource = read(RESOURCE_ATTRIBUTES)
    sentry_release = read(SENTRY_RELEASE)
    return Settings(
        service_name=service_name or read(SERVICE_NAME) or resource.get(semconv.SERVICE_NAME) or DEFAULT_SERVICE_NAME,
        service_version=service_version or resource.get(semconv.SERVICE_VERSION) or sentry_release or None,
        environment=environment
        or resource.get(semconv.DEPLOYMENT_ENVIRONMENT)
        or resource.get(semconv.DEPLOYMENT_ENVIRONMENT_NAME)
        or read(SENTRY_ENVIRONMENT)
        or None,
        otlp_endpoint=(otlp_endpoint or read(OTLP_ENDPOINT) or DEFAULT_OTLP_ENDPOINT).rstrip("/"),
        sentry_dsn=sentry_dsn or read(SENTRY_DSN) or None,
        sentry_release=sentry_release or service_version or resource.get(semconv.SERVICE_VERSION) or None,
        span_queue=read_queue(SPAN_QUEUE),
        event_queue=read_queue(EVENT_QUEUE),
        traces_endpoint=read(OTLP_TRACES_ENDPOINT),
        logs_endpoint=read(OTLP_LOGS_ENDPOINT),
        metrics_endpoint=read(OTLP_METRICS_ENDPOINT),
        metric_export_interval_s=read(METRIC_EXPORT_INTERVAL),
        spool_enabled=read(SPOOL),
        spool_dir=read(SPOOL_DIR),
        spool_max_bytes=read(SPOOL_MAX_BYTES),
    )
