"""Analytics-safe sampling against a real OTLP/HTTP server: every outcome and event once, no orphans."""

from __future__ import annotations

from collections import Counter

import pytest
from opentelemetry import trace

from instrumentation import configure, identify, operation, semconv, shutdown, track
from tests.fakes.otlp import OtlpCapture

pytestmark = pytest.mark.integration

REQUESTS = 200


class SeparationError(Exception):
    pass


def _run_journey(index: int) -> None:
    tracer = trace.get_tracer("journey")
    with tracer.start_as_current_span("POST /renders", kind=trace.SpanKind.SERVER):
        with identify(user_id=f"u_{index}", session_id=f"s_{index}"):
            track("project_created", {semconv.PROJECT_ID: f"p_{index}"})
            with operation("render", {semconv.RENDER_ID: f"r_{index}"}):
                try:
                    with operation("stem_separation", {semconv.FILE_ID: f"f_{index}"}) as span:
                        span.set_attribute(semconv.AUDIO_DURATION_S, 1.5)
                        if index % 5 == 0:
                            raise SeparationError
                except SeparationError:
                    pass


@pytest.mark.parametrize("ratio", ["1.0", "0.1", "0"])
def test_every_outcome_and_event_reaches_the_collector_once_without_orphans(
    ratio: str, otlp: tuple[str, OtlpCapture], fresh_otel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, capture = otlp
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    configure(service_name="sampling-test", otlp_endpoint=endpoint)
    for index in range(REQUESTS):
        _run_journey(index)
    shutdown()

    data = capture.snapshot()
    assert data["errors"] == []
    spans, records = data["spans"], data["log_records"]

    # product events: each exactly once, with its identity
    tracked = [r for r in records if r["event_name"] == "project_created"]
    assert len(tracked) == REQUESTS
    assert len({r["attributes"][semconv.EVENT_ID] for r in tracked}) == REQUESTS
    assert {r["attributes"][semconv.USER_ID] for r in tracked} == {f"u_{i}" for i in range(REQUESTS)}

    # every operation start, once, in its operation span's context
    started_ops = {
        (r["trace_id"], r["span_id"]): r["attributes"][semconv.OPERATION]
        for r in records
        if r["event_name"].endswith("_started")
    }
    assert len(started_ops) == 2 * REQUESTS
    assert Counter(started_ops.values()) == {"render": REQUESTS, "stem_separation": REQUESTS}

    # exactly one outcome per operation: the sampled span, or the outcome record of an unsampled one
    outcomes: Counter[tuple[str, str]] = Counter()
    outcome_names: dict[tuple[str, str], str] = {}
    for span in spans:
        if semconv.OPERATION in span["attributes"]:
            key = (span["trace_id"], span["span_id"])
            outcomes[key] += 1
            outcome_names[key] = f"{span['attributes'][semconv.OPERATION]}_{span['attributes'][semconv.OUTCOME]}"
    for record in records:
        if record["event_name"].endswith(("_completed", "_failed")):
            key = (record["trace_id"], record["span_id"])
            outcomes[key] += 1
            outcome_names[key] = record["event_name"]
            assert record["attributes"][semconv.USER_ID].startswith("u_")
            assert semconv.DURATION_MS in record["attributes"]
    assert set(outcomes) == set(started_ops)
    assert set(outcomes.values()) == {1}
    assert Counter(outcome_names.values()) == {
        "render_completed": REQUESTS,
        "stem_separation_completed": REQUESTS - REQUESTS // 5,
        "stem_separation_failed": REQUESTS // 5,
    }

    # no orphans: every exported span's parent was exported too
    span_ids = {span["span_id"] for span in spans}
    assert [span for span in spans if span["parent_span_id"] and span["parent_span_id"] not in span_ids] == []

    sampled_roots = sum(1 for span in spans if span["name"] == "POST /renders")
    if ratio == "1.0":
        assert sampled_roots == REQUESTS
    elif ratio == "0":
        assert spans == []
    else:
        assert 0 < sampled_roots < REQUESTS
