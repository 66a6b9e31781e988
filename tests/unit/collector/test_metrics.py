import threading

from collector.metrics import Metrics


def test_render_counters_gauges_and_labels():
    metrics = Metrics()
    metrics.inc("received_spans_total", 512)
    metrics.inc("received_spans_total", 3)
    metrics.inc("rejected_requests_total", status="413")
    metrics.inc("dead_lettered_events_total", reason='bad "uuid"\n')
    metrics.set("outbox_depth", 7)
    metrics.set("outbox_oldest_age_seconds", 1.5)
    assert metrics.render() == (
        "# HELP phonoglyph_collector_dead_lettered_events_total Events moved to the dead-letter table, by reason.\n"
        "# TYPE phonoglyph_collector_dead_lettered_events_total counter\n"
        'phonoglyph_collector_dead_lettered_events_total{reason="bad \\"uuid\\"\\n"} 1\n'
        "# HELP phonoglyph_collector_outbox_depth Events waiting in the outbox.\n"
        "# TYPE phonoglyph_collector_outbox_depth gauge\n"
        "phonoglyph_collector_outbox_depth 7\n"
        "# HELP phonoglyph_collector_outbox_oldest_age_seconds Age of the oldest event in the outbox.\n"
        "# TYPE phonoglyph_collector_outbox_oldest_age_seconds gauge\n"
        "phonoglyph_collector_outbox_oldest_age_seconds 1.5\n"
        "# HELP phonoglyph_collector_received_spans_total Spans received over OTLP.\n"
        "# TYPE phonoglyph_collector_received_spans_total counter\n"
        "phonoglyph_collector_received_spans_total 515\n"
        "# HELP phonoglyph_collector_rejected_requests_total Requests answered with an error status, by status.\n"
        "# TYPE phonoglyph_collector_rejected_requests_total counter\n"
        'phonoglyph_collector_rejected_requests_total{status="413"} 1\n'
    )


def test_label_order_does_not_split_series_and_value_reads_back():
    metrics = Metrics()
    metrics.inc("export_errors_total", kind="retry", status="503")
    metrics.inc("export_errors_total", status="503", kind="retry")
    assert metrics.value("export_errors_total", kind="retry", status="503") == 2
    assert metrics.value("export_errors_total", kind="other") == 0


def test_concurrent_increments_are_not_lost():
    metrics = Metrics()

    def work():
        for _ in range(5000):
            metrics.inc("mapped_events_total")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.value("mapped_events_total") == 20000
