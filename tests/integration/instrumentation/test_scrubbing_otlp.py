"""Scrubbing at the source, end to end: configure() → real OTLP exporters → the OTLP capture server."""

from __future__ import annotations

import pytest

from instrumentation import ScrubbingConfig, configure, identify, operation, semconv, shutdown, track
from tests.fakes.otlp import OtlpCapture

pytestmark = pytest.mark.integration

ACCOUNT = "acct_123456"
TOKEN = "tok_SEED_41c2"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SENTRY_DSN", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "PHONOGLYPH_SCRUB_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PHONOGLYPH_SCRUB_VALUES", r"acct_\d{6}")


def _emit() -> None:
    with identify(user_id="seed.user@example.com", session_id="s_1"):
        with operation(
            "render",
            {
                semconv.RENDER_ID: "r_1",
                "tenant.hint": "h_SEED",
                "source.url": f"https://cdn.example/a.wav?token={TOKEN}",
            },
        ) as span:
            span.set_attribute("billing.note", f"charged {ACCOUNT}")
        track(
            "credits_purchased",
            {semconv.PROJECT_ID: "p_1", "billing.account": ACCOUNT, "referrer": f"/buy?token={TOKEN}"},
        )


@pytest.mark.parametrize(
    "scrubbing",
    [
        pytest.param(
            ScrubbingConfig(extra_key_patterns=(r"^tenant\.hint$",), extra_value_patterns=(r"acct_\d{6}",)),
            id="argument",
        ),
        pytest.param(None, id="environment"),
    ],
)
def test_spans_and_event_records_are_scrubbed_before_they_leave(
    fresh_otel: None,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    otlp: tuple[str, OtlpCapture],
    scrubbing: ScrubbingConfig | None,
) -> None:
    if scrubbing is None:
        monkeypatch.setenv("PHONOGLYPH_SCRUB_KEYS", r"^tenant\.hint$")
    endpoint, capture = otlp
    configure(service_name="worker", otlp_endpoint=endpoint, scrubbing=scrubbing)
    _emit()
    shutdown()

    snapshot = capture.snapshot()
    (render,) = [span for span in snapshot["spans"] if span["name"] == "render"]
    assert render["attributes"]["tenant.hint"] == "[Scrubbed]"
    assert render["attributes"]["billing.note"] == "charged [Scrubbed]"
    assert render["attributes"]["source.url"] == "https://cdn.example/a.wav?token=[Scrubbed]"
    assert render["attributes"][semconv.RENDER_ID] == "r_1"
    assert render["attributes"][semconv.USER_ID] == "seed.user@example.com"  # identity is never scrubbed
    assert render["attributes"][semconv.SESSION_ID] == "s_1"
    assert set(render["attributes"]["phonoglyph.scrubbed"]) == {
        "attributes.tenant.hint",
        "attributes.billing.note",
        "attributes.source.url",
    }

    records = {record["event_name"]: record for record in snapshot["log_records"]}
    purchased = records["credits_purchased"]["attributes"]
    assert purchased["billing.account"] == "[Scrubbed]"
    assert purchased["referrer"] == "/buy?token=[Scrubbed]"
    assert purchased[semconv.PROJECT_ID] == "p_1"
    assert purchased[semconv.USER_ID] == "seed.user@example.com"
    assert set(purchased["phonoglyph.scrubbed"]) == {"attributes.billing.account", "attributes.referrer"}
    started = records["render_started"]["attributes"]
    assert started["tenant.hint"] == "[Scrubbed]"

    text = repr(snapshot)
    assert [seed for seed in (ACCOUNT, TOKEN, "h_SEED") if seed in text] == []
    assert snapshot["errors"] == []
