"""instrumentation._internal.config: the settings table and configure()'s resolution."""

from __future__ import annotations

import logging

import pytest

from instrumentation._internal import config
from instrumentation._internal.config import SPAN_QUEUE_DEFAULTS, QueueConfig, resolve

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
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_METRIC_EXPORT_INTERVAL",
        *(
            f"{prefix}_{name}"
            for prefix in ("OTEL_BSP", "OTEL_BLRP")
            for name in ("MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE", "SCHEDULE_DELAY", "EXPORT_TIMEOUT")
        ),
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = resolve(**NO_ARGUMENTS)
    assert settings.service_name == "unknown_service"
    assert settings.otlp_endpoint == "http://localhost:4318"
    assert settings.sentry_dsn is None
    assert settings.span_queue == SPAN_QUEUE_DEFAULTS == QueueConfig(max_queue_size=8192, max_export_batch_size=2048)


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


# -- one table; a malformed value warns and falls back to the default ------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_BSP_SCHEDULE_DELAY", "abc"), ("OTEL_BSP_MAX_QUEUE_SIZE", "-5"), ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
     ("OTEL_BLRP_EXPORT_TIMEOUT", "inf"), ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "many")],
)  # fmt: skip
def test_a_malformed_queue_setting_warns_and_uses_the_default(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="instrumentation"):
        settings = resolve(**NO_ARGUMENTS)
    assert (settings.span_queue, settings.event_queue) == (SPAN_QUEUE_DEFAULTS, QueueConfig())
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert name in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("on", True), ("ON", True), ("off", False), (" Off ", False), ("false", False),
     ("0", False), ("maybe", True)],
)  # fmt: skip
def test_the_sentry_span_switch(
    value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if value is None:
        monkeypatch.delenv("PHONOGLYPH_SENTRY_SPANS", raising=False)
    else:
        monkeypatch.setenv("PHONOGLYPH_SENTRY_SPANS", value)
    with caplog.at_level(logging.WARNING, logger="instrumentation"):
        assert config.read(config.SENTRY_SPANS) is expected
    warned = [record.getMessage() for record in caplog.records]
    assert warned == ([] if value != "maybe" else [warned[0]])
    assert all("PHONOGLYPH_SENTRY_SPANS" in message for message in warned)


def test_a_malformed_scrub_pattern_warns_and_adds_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from instrumentation.scrubbing import ScrubbingConfig

    monkeypatch.setenv("PHONOGLYPH_SCRUB_KEYS", "^tenant$, (unclosed")
    with caplog.at_level(logging.WARNING, logger="instrumentation"):
        assert ScrubbingConfig.from_env() == ScrubbingConfig()
    assert "PHONOGLYPH_SCRUB_KEYS" in caplog.records[0].getMessage()


def test_signal_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318/custom")
    settings = resolve(**NO_ARGUMENTS)
    assert settings.signal_endpoint("traces") == "http://collector:4318/v1/traces"
    assert settings.signal_endpoint("logs") == "http://logs:4318/custom"


@pytest.mark.parametrize(
    ("fastapi", "generic", "expected"),
    [(None, None, "/health,/healthz"), (None, "/a", "/a"), ("/b", "/a", "/b"), ("", "/a", "")],
)
def test_excluded_urls_for_the_distro(
    fastapi: str | None, generic: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", fastapi), ("OTEL_PYTHON_EXCLUDED_URLS", generic)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert config.read(config.FASTAPI_EXCLUDED_URLS) == expected


def test_only_the_settings_table_reads_the_environment() -> None:
    from pathlib import Path

    import instrumentation

    package = Path(instrumentation.__file__).parent
    readers = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "config.py"
        and any(read in path.read_text() for read in ("os.environ.get", "os.getenv", "os.environ[", "environ.items"))
    ]
    assert readers == []


@pytest.mark.parametrize(("value", "expected_s"), [(None, 10.0), ("2500", 2.5), ("abc", 10.0), ("-1", 10.0)])
def test_the_metric_export_interval(
    value: str | None, expected_s: float, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """10 s by default, so alert rules over the request metrics see a burst within their minute."""
    if value is not None:
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", value)
    with caplog.at_level(logging.WARNING, logger="instrumentation"):
        assert resolve(**NO_ARGUMENTS).metric_export_interval_s == expected_s
    warned = [r.getMessage() for r in caplog.records if "OTEL_METRIC_EXPORT_INTERVAL" in r.getMessage()]
    assert len(warned) == (1 if value in ("abc", "-1") else 0)
