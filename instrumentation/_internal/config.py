"""configure()'s settings: keyword arguments first, then the standard environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
DEFAULT_SERVICE_NAME = "unknown_service"


@dataclass(frozen=True)
class QueueConfig:
    """One export queue: bounded, drained by a worker thread in batches."""

    max_queue_size: int = 4096
    max_export_batch_size: int = 512
    schedule_delay_s: float = 1.0
    export_timeout_s: float = 10.0


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


def _resource_attributes_from_env() -> dict[str, str]:
    attributes: dict[str, str] = {}
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = value.strip()
    return attributes


def _queue_from_env(prefix: str) -> QueueConfig:
    """Honours OTEL_BSP_* / OTEL_BLRP_* (delays in milliseconds, as the spec says)."""
    default = QueueConfig()

    def number(name: str, fallback: float) -> float:
        raw = os.environ.get(f"{prefix}_{name}", "").strip()
        return float(raw) if raw else fallback

    return QueueConfig(
        max_queue_size=int(number("MAX_QUEUE_SIZE", default.max_queue_size)),
        max_export_batch_size=int(number("MAX_EXPORT_BATCH_SIZE", default.max_export_batch_size)),
        schedule_delay_s=number("SCHEDULE_DELAY", default.schedule_delay_s * 1000) / 1000,
        export_timeout_s=number("EXPORT_TIMEOUT", default.export_timeout_s * 1000) / 1000,
    )


def resolve(
    *,
    service_name: str | None,
    service_version: str | None,
    environment: str | None,
    otlp_endpoint: str | None,
    sentry_dsn: str | None,
) -> Settings:
    env = os.environ
    resource = _resource_attributes_from_env()
    return Settings(
        service_name=service_name
        or env.get("OTEL_SERVICE_NAME")
        or resource.get("service.name")
        or DEFAULT_SERVICE_NAME,
        service_version=service_version or resource.get("service.version") or env.get("SENTRY_RELEASE") or None,
        environment=environment
        or resource.get("deployment.environment")
        or resource.get("deployment.environment.name")
        or env.get("SENTRY_ENVIRONMENT")
        or None,
        otlp_endpoint=(otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_OTLP_ENDPOINT).rstrip("/"),
        sentry_dsn=sentry_dsn or env.get("SENTRY_DSN") or None,
        sentry_release=env.get("SENTRY_RELEASE") or service_version or resource.get("service.version") or None,
        span_queue=_queue_from_env("OTEL_BSP"),
        event_queue=_queue_from_env("OTEL_BLRP"),
    )
