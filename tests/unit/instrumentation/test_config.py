from __future__ import annotations

import pytest

from instrumentation._internal.config import QueueConfig, resolve

NO_ARGUMENTS = dict(service_name=None, service_version=None, environment=None, otlp_endpoint=None, sentry_dsn=None)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "SENTRY_DSN",
        "SENTRY_ENVIRONMENT",
        "SENTRY_RELEASE",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_SCHEDULE_DELAY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = resolve(**NO_ARGUMENTS)
    assert settings.service_name == "unknown_service"
    assert settings.otlp_endpoint == "http://localhost:4318"
    assert settings.sentry_dsn is None
    assert settings.span_queue == QueueConfig()


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "api")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=1.2.3, deployment.environment=staging")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("SENTRY_DSN", "http://key@sentry.local/1")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    settings = resolve(**NO_ARGUMENTS)
    assert (settings.service_name, settings.service_version, settings.environment) == ("api", "1.2.3", "staging")
    assert settings.otlp_endpoint == "http://collector:4318"
    assert settings.sentry_dsn == "http://key@sentry.local/1"
    assert settings.sentry_release == "1.2.3"
    assert settings.span_queue.max_queue_size == 10
    assert settings.span_queue.schedule_delay_s == 0.25


def test_sentry_variables_fill_environment_and_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_ENVIRONMENT", "production")
    monkeypatch.setenv("SENTRY_RELEASE", "phonoglyph@7")
    settings = resolve(**NO_ARGUMENTS)
    assert settings.environment == "production"
    assert settings.sentry_release == "phonoglyph@7"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    settings = resolve(**{**NO_ARGUMENTS, "service_name": "worker", "environment": "dev"})
    assert settings.service_name == "worker"
    assert settings.environment == "dev"
