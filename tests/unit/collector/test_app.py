"""The builder: one app on one port, the pipeline's end translating outbox trouble into retryable errors."""

import pytest

from collector.app import OutboxDelivery, build_app
from collector.config import CollectorConfig
from collector.delivery.outbox import OutboxError, OutboxFullError
from collector.pipeline import Batch, RetryableError
from tests.unit.collector.otlp_builders import logs, record
from tests.unit.collector.test_otlp_http import asgi

EVENT_ID = "0b6f4b8e-2f3a-4c1d-9e8f-7a6b5c4d3e2f"


class Outbox:
    def __init__(self, error=None):
        self.error = error

    def put(self, events):
        if self.error is not None:
            raise self.error
        return len(events)


class Worker:
    woken = 0

    def wake(self):
        self.woken += 1


def test_outbox_full_is_429_and_storage_trouble_503_without_a_wake():
    for error, status, message in (
        (OutboxFullError("outbox full: 1 > 0"), 429, "outbox full: 1 > 0"),
        (OutboxError("disk"), 503, "storage unavailable"),
    ):
        worker = Worker()
        with pytest.raises(RetryableError) as info:
            OutboxDelivery(Outbox(error), worker, retry_after_s=3).put([{"uuid": "u"}])
        assert (info.value.status, info.value.message, info.value.retry_after_s, worker.woken) == (
            status,
            message,
            3,
            0,
        )
    worker = Worker()
    assert OutboxDelivery(Outbox(), worker, retry_after_s=3).put([{"uuid": "u"}]) == 1
    assert worker.woken == 1


class Exporter:
    def export(self, batch):
        pass

    def shutdown(self):
        pass


async def test_one_app_serves_the_receiver_and_the_health_endpoints_and_extra_processors_see_batches(tmp_path):
    seen = []

    class Observer:
        def process(self, batch: Batch) -> None:
            seen.append((batch.signal, len(batch.events)))

    app = build_app(CollectorConfig(data_dir=tmp_path), exporter=Exporter(), processors=[Observer()])
    try:
        body = logs(record("file_uploaded", {"phonoglyph.event.id": EVENT_ID})).SerializeToString()
        assert (await asgi(app.asgi, "/v1/logs", body))[0] == 200
        assert (await asgi(app.asgi, "/readyz", method="GET"))[0] == 200
        assert b"phonoglyph_collector_queued_events_total 1" in (await asgi(app.asgi, "/metrics", method="GET"))[2]
        assert (await asgi(app.asgi, "/other", method="GET"))[0] == 404
        assert seen == [("logs", 1)]
        assert app.outbox.depth() == 1
    finally:
        app.shutdown(0)
