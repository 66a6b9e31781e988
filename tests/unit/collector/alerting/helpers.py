"""Test helpers for alerting: a settable clock, event and metric builders, a scripted HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    HistogramDataPoint,
    NumberDataPoint,
)

from collector.alerting.config import AlertsConfig, parse_alerts
from collector.alerting.engine import Engine
from collector.alerting.store import AlertStore

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def event(name: str, n: int, *, ms: float = 100.0, job: str | None = None, error_type: str | None = None) -> dict:
    """A mapped PostHog event: operation span n has trace id ``{n:032x}`` and span id ``{n:016x}``."""
    properties: dict = {"trace_id": f"{n:032x}", "span_id": f"{n:016x}"}
    if not name.endswith("_started"):
        properties["processing_time_ms"] = ms
    if name.endswith("_failed"):
        properties["error_type"] = error_type or "RuntimeError"
    if job is not None:
        properties["phonoglyph.job.id"] = job
    return {"event": name, "distinct_id": "u1", "properties": properties, "timestamp": "2026-12-06T01:00:00.000000Z"}


def outcomes(operation: str, completed: int, failed: int, *, first: int = 0) -> list[dict]:
    return [event(f"{operation}_completed", first + i) for i in range(completed)] + [
        event(f"{operation}_failed", first + completed + i) for i in range(failed)
    ]


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def http_request(
    points: Iterable[tuple[str, int, int]],
    *,
    start_ns: int,
    cumulative: bool = True,
    service: str = "api",
    exemplar_trace: bytes | None = None,
    gauges: dict[str, dict[str, float]] | None = None,
) -> ExportMetricsServiceRequest:
    """``http.server.request.duration`` with one point per (route, status, count)."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(_kv("service.name", service))
    metric = resource_metrics.scope_metrics.add().metrics.add()
    metric.name = "http.server.request.duration"
    metric.histogram.aggregation_temporality = (
        AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        if cumulative
        else AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    )
    for route, status, count in points:
        point = HistogramDataPoint(start_time_unix_nano=start_ns, time_unix_nano=start_ns + 1, count=count)
        point.attributes.extend(
            [_kv("http.route", route), _kv("http.response.status_code", status), _kv("http.request.method", "GET")]
        )
        if exemplar_trace is not None and status >= 500:
            point.exemplars.append(Exemplar(trace_id=exemplar_trace, span_id=b"\x01" * 8, as_double=0.1))
        metric.histogram.data_points.append(point)
    for name, by_kind in (gauges or {}).items():  # {gauge name: {job kind: value}}
        gauge = resource_metrics.scope_metrics[0].metrics.add()
        gauge.name = name
        for kind, value in by_kind.items():
            point = NumberDataPoint(as_double=value)
            point.attributes.append(_kv("phonoglyph.job.kind", kind))
            gauge.gauge.data_points.append(point)
    return request


def engine_for(
    rules: list[dict] | AlertsConfig, path: Path, clock: Clock, *, notifiers=("webhook",), **kwargs
) -> Engine:
    config = rules if isinstance(rules, AlertsConfig) else parse_alerts({"rules": rules})
    return Engine(config, AlertStore(path / "alerts.db"), notifiers=notifiers, clock=clock, **kwargs)


class Receiver:
    """An HTTP receiver on 127.0.0.1 (free port): records JSON bodies, answers scripted statuses (then 200)."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.statuses = list(statuses)
        self.bodies: list = []
        self.paths: list[str] = []
        self.received = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.bodies.append(body)
                        receiver.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                if status == 200:
                    receiver.received.set()

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def closed_port_url() -> str:
    """A loopback URL nobody listens on (bound then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
