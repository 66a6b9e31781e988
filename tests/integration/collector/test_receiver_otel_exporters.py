"""The official OTLP/HTTP exporters, from a separate process, against a running collector."""

import subprocess
import sys

import pytest

from collector.exporters.local import LocalStoreExporter
from tests.integration.collector.collector_process import CollectorProcess, wait_for

pytestmark = pytest.mark.integration

TOKEN = "it-secret-token"

CLIENT = r"""
import sys, uuid
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

endpoint, compression, run, token = sys.argv[1:5]
compression = Compression.Gzip if compression == "gzip" else Compression.NoCompression
headers = {"authorization": f"Bearer {token}"}


class Reporting(OTLPSpanExporter):
    def export(self, spans):
        result = super().export(spans)
        print("spans", result.name, flush=True)
        return result


class ReportingLogs(OTLPLogExporter):
    def export(self, batch):
        result = super().export(batch)
        print("logs", result.name, flush=True)
        return result


resource = Resource.create({"service.name": "it-client", "deployment.environment": "test"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(
    Reporting(endpoint=endpoint + "/v1/traces", compression=compression, headers=headers)))
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(
    ReportingLogs(endpoint=endpoint + "/v1/logs", compression=compression, headers=headers)))
tracer = tracer_provider.get_tracer("it")
logger = logger_provider.get_logger("it")
identity = {"user.id": f"user-{run}", "session.id": f"session-{run}"}
with tracer.start_as_current_span("render job", attributes={"phonoglyph.operation": "render", **identity}):
    logger.emit(event_name="render_started", attributes={
        "phonoglyph.event.id": str(uuid.uuid4()), "phonoglyph.operation": "render", **identity})
with tracer.start_as_current_span("separation", attributes={"phonoglyph.operation": "stem_separation",
                                                            **identity}) as span:
    span.set_attribute("error.type", "MemoryError")
    span.set_status(Status(StatusCode.ERROR))
with tracer.start_as_current_span("GET /health"):
    pass
logger.emit(body="a plain log line")
tracer_provider.shutdown()
logger_provider.shutdown()
"""


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    process = CollectorProcess(tmp_path_factory.mktemp("collector"), env={"COLLECTOR_AUTH_TOKEN": TOKEN})
    with process:
        yield process


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_official_exporters_deliver_events_to_the_local_store(collector, compression):
    run = f"run-{compression}"
    client = subprocess.run(
        [sys.executable, "-c", CLIENT, collector.url, compression, run, TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert client.returncode == 0, client.stderr
    assert client.stdout.split("\n").count("spans SUCCESS") == 3, client.stdout + client.stderr
    assert client.stdout.split("\n").count("logs SUCCESS") == 2, client.stdout + client.stderr

    store = LocalStoreExporter(collector.data_dir / "events.db")
    try:

        def mine():
            events = [e for e in store.read_events() if e["distinct_id"] == f"user-{run}"]
            return events if len(events) == 3 else None

        events = wait_for(mine, message="three events in the local store")
    finally:
        store.shutdown()
    by_name = {event["event"]: event for event in events}
    assert set(by_name) == {"render_started", "render_completed", "stem_separation_failed"}
    completed = by_name["render_completed"]["properties"]
    assert completed["service.name"] == "it-client" and completed["deployment.environment"] == "test"
    assert completed["$session_id"] == f"session-{run}" and completed["$ignore_sent_at"] is True
    assert completed["processing_time_ms"] >= 0
    assert by_name["render_started"]["properties"]["trace_id"] == completed["trace_id"]
    assert by_name["stem_separation_failed"]["properties"]["error_type"] == "MemoryError"


def test_a_wrong_token_is_refused_by_the_exporter(collector):
    client = subprocess.run(
        [sys.executable, "-c", CLIENT, collector.url, "gzip", "bad-token", "wrong"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert client.returncode == 0, client.stderr
    assert "spans FAILURE" in client.stdout and "spans SUCCESS" not in client.stdout
    assert collector.metric("rejected_requests_total", status="401") >= 3
