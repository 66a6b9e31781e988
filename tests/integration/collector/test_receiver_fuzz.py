"""Hypothesis fuzzing of the running receiver: malformed protobuf, JSON and gzip, and odd but valid OTLP.

Only 200 (valid by chance), 4xx and backpressure answers are allowed; the process survives and its
memory stays bounded.
"""

import gzip
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.collector.collector_process import CollectorProcess
from tests.unit.collector.otlp_builders import logs, record, span, traces

pytestmark = pytest.mark.integration

ALLOWED = {200, 400, 413, 415, 429, 503}
PATHS = st.sampled_from(["/v1/traces", "/v1/logs", "/v1/metrics"])
ATTRIBUTE_KEYS = st.sampled_from(
    [
        "phonoglyph.operation",
        "phonoglyph.outcome",
        "user.id",
        "session.id",
        "phonoglyph.event.id",
        "phonoglyph.operation.duration_ms",
        "error.type",
        "phonoglyph.user.guest",
        "event.name",
        "password",
        "x",
    ]
)
ATTRIBUTE_VALUES = st.recursive(
    st.one_of(
        st.text(max_size=20),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True),
        st.booleans(),
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(ATTRIBUTE_KEYS, ATTRIBUTE_VALUES, max_size=6)
TIMES = st.integers(0, 2**64 - 6)  # the record builder adds 5 ns for the observed time
IDS16 = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
IDS8 = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))


@st.composite
def odd_otlp(draw) -> tuple[str, bytes]:
    """Valid protobuf framing with arbitrary field values: exercises the mapping, not the decoder."""
    if draw(st.booleans()):
        spans = [
            span(
                draw(ATTRIBUTES),
                name=draw(st.text(max_size=10)),
                start=draw(TIMES),
                end=draw(TIMES),
                trace_id=draw(IDS16),
                span_id=draw(IDS8),
                error=draw(st.booleans()),
            )
            for _ in range(draw(st.integers(0, 4)))
        ]
        return "/v1/traces", traces(*spans, resource=draw(ATTRIBUTES)).SerializeToString()
    records = [
        record(draw(st.text(max_size=15)), draw(ATTRIBUTES), time=draw(TIMES), trace_id=draw(IDS16), span_id=draw(IDS8))
        for _ in range(draw(st.integers(0, 4)))
    ]
    return "/v1/logs", logs(*records, resource=draw(ATTRIBUTES)).SerializeToString()


@st.composite
def mutated(draw, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        index = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "truncate", "insert"]))
        if action == "flip":
            data[index] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del data[index:]
        else:
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "resourceLogs",
                    "scopeLogs",
                    "logRecords",
                    "eventName",
                    "timeUnixNano",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


@st.composite
def requests(draw) -> tuple[str, bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["random-protobuf", "odd-otlp", "mutated-otlp", "json", "gzip", "mutated-gzip"]))
    path = draw(PATHS)
    content_type = "application/x-protobuf"
    headers: dict[str, str] = {}
    if kind == "random-protobuf":
        body = draw(st.binary(max_size=300))
    elif kind in ("odd-otlp", "mutated-otlp"):
        path, body = draw(odd_otlp())
        if kind == "mutated-otlp":
            body = draw(mutated(body))
    elif kind == "json":
        content_type = "application/json"
        body = json.dumps(draw(JSON_VALUES)).encode()
        if draw(st.booleans()):
            body = draw(mutated(body))
    else:
        path, inner = draw(odd_otlp())
        body = gzip.compress(inner)
        headers["content-encoding"] = "gzip"
        if kind == "mutated-gzip":
            body = draw(mutated(body))
    headers["content-type"] = content_type
    return path, body, headers


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    process = CollectorProcess(tmp_path_factory.mktemp("fuzz"), config_yaml="drain_timeout_s: 2\n")
    with process:
        yield process


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def rss_baseline(collector):
    return collector.rss_kb()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(request=requests())
def test_receiver_answers_only_4xx_or_backpressure(collector, client, rss_baseline, request):
    path, body, headers = request
    response = client.post(f"{collector.url}{path}", content=body, headers=headers)
    assert response.status_code in ALLOWED, (response.status_code, response.content[:300], collector.stderr()[-2000:])
    assert collector.alive()


def test_after_fuzzing_the_collector_is_healthy_and_memory_bounded(collector, client, rss_baseline):
    assert client.get(f"{collector.url}/readyz").status_code == 200
    assert collector.rss_kb() - rss_baseline < 64 * 1024
    assert collector.metric("rejected_requests_total", status="500") == 0
