import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.alerting.config import parse_alerts
from collector.alerting.engine import Engine
from collector.alerting.store import AlertStore
from collector.alerting.windows import CountWindow, LatencyWindow
from tests.unit.collector.alerting.helpers import T0, Clock, engine_for, event, http_request, outcomes

FAILING = {
    "name": "stems_failing",
    "when": "failure_rate",
    "operation": "stem_separation",
    "window_s": 60,
    "above": 0.2,
    "min_count": 5,
    "severity": "critical",
    "keep_firing_for_s": 0,
}
STALLED = {
    "name": "stems_stalled",
    "when": "stalled",
    "operation": "stem_separation",
    "after_s": 600,
    "severity": "critical",
    "keep_firing_for_s": 0,
}
API = {
    "name": "api_errors",
    "when": "http_error_rate",
    "route": "*",
    "window_s": 60,
    "above": 0.05,
    "min_count": 20,
    "severity": "critical",
    "keep_firing_for_s": 0,
}


def statuses(transitions):
    return [(t.rule, t.subject, t.status, t.repeat) for t in transitions]


def pending_rows(engine):
    return [(row.notifier, row.status) for row in engine.store.pending_notifications()]


# -- windows ----------------------------------------------------------------------------------------


def test_count_window_sums_the_last_window_and_stays_bounded():
    window = CountWindow(5, 60)
    for second in range(0, 600):
        window.add(T0 + second, "x")
    assert window.totals(T0 + 599, 60) == {"x": 60}
    assert window.totals(T0 + 599, 10) == {"x": 10}
    assert len(window._buckets) <= 60 / 5 + 1
    assert window.totals(T0 + 599 + 120, 60) == {}


def test_latency_window_p95_ignores_a_single_outlier_among_twenty():
    window = LatencyWindow(5, 600)
    for _ in range(19):
        window.add(T0, 100.0)
    window.add(T0, 90_000.0)
    p95, count = window.quantile(T0, 600, 0.95)
    assert count == 20 and p95 is not None and 100 <= p95 < 111
    window.add(T0, 90_000.0)
    window.add(T0, 90_000.0)
    p95, _ = window.quantile(T0, 600, 0.95)
    assert p95 is not None and 90_000 <= p95 < 99_000


# -- failure_rate -----------------------------------------------------------------------------------


def test_failure_rate_fires_once_over_threshold_and_resolves_when_the_window_clears(tmp_path):
    clock = Clock()
    engine = engine_for([FAILING], tmp_path, clock)
    engine.observe_events(outcomes("stem_separation", completed=3, failed=1))
    assert engine.evaluate() == []  # 4 outcomes: below min_count
    engine.observe_events(outcomes("stem_separation", completed=0, failed=2, first=10))
    transitions = engine.evaluate()
    assert statuses(transitions) == [("stems_failing", "stem_separation", "firing", False)]
    snapshot = transitions[0].snapshot
    assert snapshot["value"] == 0.5 and snapshot["labels"] == {
        "alertname": "stems_failing",
        "severity": "critical",
        "operation": "stem_separation",
    }
    assert snapshot["trace_ids"] == [f"{n:032x}" for n in (11, 10, 3)]
    assert "3 of 6 outcomes failed in the last 60 s (50.0 %" in snapshot["summary"]
    assert pending_rows(engine) == [("webhook", "firing")]
    clock.advance(5)
    assert engine.evaluate() == []  # still firing: no second notification
    assert [a["alertname"] for a in engine.firing()] == ["stems_failing"]
    assert engine.metrics_samples() == [("stems_failing", "critical", 1.0)]
    clock.advance(61)
    resolved = engine.evaluate()
    assert statuses(resolved) == [("stems_failing", "stem_separation", "resolved", False)]
    assert resolved[0].snapshot["ends_at"] == clock.now
    assert engine.firing() == [] and engine.metrics_samples() == [("stems_failing", "critical", 0.0)]
    assert [h["status"] for h in engine.history()] == ["resolved", "firing"]
    assert pending_rows(engine) == [("webhook", "firing"), ("webhook", "resolved")]


def test_failure_rate_at_exactly_the_threshold_does_not_fire(tmp_path):
    engine = engine_for([FAILING], tmp_path, Clock())
    engine.observe_events(outcomes("stem_separation", completed=8, failed=2))  # 0.2, not above
    assert engine.evaluate() == []


def test_default_rules_ignore_steady_failures_and_fire_on_a_surge(tmp_path):
    clock = Clock()
    engine = Engine(parse_alerts(None), AlertStore(tmp_path / "alerts.db"), clock=clock)
    rng = random.Random(7)
    n = 0
    for _ in range(720):  # an hour of 2-5 % failures, one separation every 5 s
        n += 1
        failed = rng.random() < 0.05
        engine.observe_events([event(f"stem_separation_{'failed' if failed else 'completed'}", n)])
        clock.advance(5)
        assert engine.evaluate() == []
    surge_start = clock.now
    fired_at = None
    for _ in range(12):  # every separation fails, one a second
        for _ in range(5):
            n += 1
            engine.observe_events([event("stem_separation_failed", n)])
            clock.advance(1)
        if any(t.status == "firing" for t in engine.evaluate()):
            fired_at = clock.now
            break
    assert fired_at is not None and fired_at - surge_start <= 60


def test_default_rules_ignore_a_flood_of_bad_uploads_but_not_failing_uploads(tmp_path):
    clock = Clock()
    engine = Engine(parse_alerts(None), AlertStore(tmp_path / "alerts.db"), clock=clock)
    for n in range(40):
        engine.observe_events([event("file_upload_failed", n, error_type="unsupported_media_type")])
        engine.observe_events([event("render_failed", 100 + n, error_type="insufficient_credits")])
        clock.advance(1)
        assert engine.evaluate() == []
    engine.observe_events([event("file_upload_failed", 200 + n, error_type="OSError") for n in range(8)])
    transitions = engine.evaluate()
    assert [(t.rule, t.status) for t in transitions] == [("file_upload_failing", "firing")]
    assert "8 of 8 outcomes failed" in transitions[0].snapshot["summary"]
    assert transitions[0].snapshot["trace_ids"][0] == f"{207:032x}"


def test_for_s_keeps_an_alert_pending_and_a_short_blip_never_fires(tmp_path):
    clock = Clock()
    engine = engine_for([{**FAILING, "for_s": 30, "window_s": 10}], tmp_path, clock)
    engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
    assert engine.evaluate() == [] and len(engine.pending()) == 1
    clock.advance(15)  # the window no longer holds them
    assert engine.evaluate() == [] and engine.pending() == []
    engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
    assert engine.evaluate() == []
    for _ in range(6):
        clock.advance(5)
        engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
        transitions = engine.evaluate()
        if transitions:
            break
    assert statuses(transitions) == [("stems_failing", "stem_separation", "firing", False)]
    assert transitions[0].snapshot["starts_at"] == clock.now - 30


def test_repeat_interval_renotifies_a_firing_alert(tmp_path):
    clock = Clock()
    engine = engine_for([{**FAILING, "repeat_interval_s": 20}], tmp_path, clock)
    kinds = []
    for _ in range(9):
        engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
        kinds += [(t.status, t.repeat) for t in engine.evaluate()]
        clock.advance(5)
    assert kinds == [("firing", False), ("firing", True), ("firing", True)]
    assert [h["status"] for h in engine.history()] == ["firing"]  # repeats are not history


def test_flapping_condition_is_damped_by_keep_firing_for(tmp_path):
    clock = Clock()
    engine = engine_for([{**FAILING, "window_s": 5, "keep_firing_for_s": 30}], tmp_path, clock)
    clock.advance(10)  # past the warm-up of a 5 s window
    transitions = []
    for step in range(12):  # condition true on even steps, false on odd ones
        if step % 2 == 0:
            engine.observe_events(outcomes("stem_separation", completed=0, failed=5, first=step * 10))
        transitions += engine.evaluate()
        clock.advance(5)
    assert [t.status for t in transitions] == ["firing"]
    for _ in range(8):
        transitions += engine.evaluate()
        clock.advance(5)
    assert [t.status for t in transitions] == ["firing", "resolved"]


def test_each_operation_on_its_own(tmp_path):
    engine = engine_for([{**FAILING, "operation": "*"}], tmp_path, Clock())
    engine.observe_events(outcomes("render", completed=0, failed=5) + outcomes("file_upload", completed=9, failed=0))
    assert statuses(engine.evaluate()) == [("stems_failing", "render", "firing", False)]


def test_restart_keeps_a_firing_alert_without_renotifying(tmp_path):
    clock = Clock()
    engine = engine_for([FAILING], tmp_path, clock)
    engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
    assert len(engine.evaluate()) == 1
    engine.store.close()
    clock.advance(10)
    restarted = engine_for([FAILING], tmp_path, clock)
    assert [a["alertname"] for a in restarted.firing()] == ["stems_failing"]
    assert restarted.evaluate() == []  # empty windows after the restart: neither re-notified nor resolved
    assert pending_rows(restarted) == [("webhook", "firing")]
    clock.advance(61)
    assert statuses(restarted.evaluate()) == [("stems_failing", "stem_separation", "resolved", False)]


def test_a_rule_removed_from_the_config_forgets_its_instances(tmp_path):
    clock = Clock()
    engine = engine_for([FAILING], tmp_path, clock)
    engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
    engine.evaluate()
    engine.store.close()
    other = engine_for([STALLED], tmp_path, clock)
    assert other.firing() == [] and other.evaluate() == []


# -- stalled ----------------------------------------------------------------------------------------


def test_stalled_fires_after_after_s_and_resolves_when_the_outcome_arrives(tmp_path):
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock)
    engine.observe_events([event("stem_separation_started", 1), event("stem_separation_started", 2)])
    engine.observe_events([event("stem_separation_completed", 2)])
    clock.advance(599)
    assert engine.evaluate() == []
    clock.advance(2)
    transitions = engine.evaluate()
    assert statuses(transitions) == [("stems_stalled", "stem_separation", "firing", False)]
    assert transitions[0].snapshot["value"] == 1 and transitions[0].snapshot["trace_ids"] == [f"{1:032x}"]
    engine.observe_events([event("stem_separation_failed", 1)])
    assert statuses(engine.evaluate()) == [("stems_stalled", "stem_separation", "resolved", False)]


def test_stalled_state_survives_a_restart(tmp_path):
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock)
    engine.observe_events([event("stem_separation_started", 1)])
    clock.advance(5)
    engine.evaluate()  # the open start is persisted here
    engine.store.close()
    clock.advance(600)
    restarted = engine_for([STALLED], tmp_path, clock)
    assert restarted.open_starts() == 1
    assert statuses(restarted.evaluate()) == [("stems_stalled", "stem_separation", "firing", False)]
    restarted.store.close()
    again = engine_for([STALLED], tmp_path, clock)
    assert again.evaluate() == []  # firing remembered, not re-notified
    again.observe_events([event("stem_separation_completed", 1)])
    assert statuses(again.evaluate()) == [("stems_stalled", "stem_separation", "resolved", False)]
    again.store.close()
    assert engine_for([STALLED], tmp_path, clock).open_starts() == 0


def test_an_outcome_before_its_start_leaves_nothing_open(tmp_path):
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock)
    engine.observe_events([event("stem_separation_completed", 1)])
    engine.observe_events([event("stem_separation_started", 1)])
    assert engine.open_starts() == 0
    clock.advance(700)
    assert engine.evaluate() == []


def test_an_outcome_is_remembered_across_a_restart(tmp_path):
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock)
    # the operation has been seen started: its outcomes are the ones a later start can still need
    engine.observe_events([event("stem_separation_started", 0), event("stem_separation_completed", 0)])
    engine.observe_events([event("stem_separation_completed", 1)])
    engine.evaluate()
    engine.observe_events([event("stem_separation_failed", 2)])
    engine.flush()  # shutdown
    engine.store.close()
    clock.advance(30)
    restarted = engine_for([STALLED], tmp_path, clock)
    restarted.observe_events([event("stem_separation_started", 1), event("stem_separation_started", 2)])
    assert restarted.open_starts() == 0
    restarted.store.close()
    clock.advance(901)  # long after: the outcomes are forgotten, a start opens again
    late = engine_for([STALLED], tmp_path, clock)
    late.observe_events([event("stem_separation_started", 1)])
    assert late.open_starts() == 1


def test_starts_and_outcomes_match_by_job_id_across_spans(tmp_path):
    clock = Clock()
    engine = engine_for([{**STALLED, "operation": "render"}], tmp_path, clock)
    engine.observe_events([event("render_started", 1, job="r1")])  # the api's product event
    engine.observe_events([event("render_started", 2, job="r2")])
    engine.observe_events([event("render_started", 3, job="r2")])  # a retry of r2: one open start
    assert engine.open_starts() == 2
    engine.observe_events([event("render_completed", 7, job="r1"), event("render_failed", 8, job="r2")])
    assert engine.open_starts() == 0
    clock.advance(700)
    assert engine.evaluate() == []


def test_the_open_start_table_is_bounded_and_counts_what_it_drops(tmp_path):
    dropped: list[tuple[str, int]] = []
    clock = Clock()
    engine = engine_for(
        [STALLED],
        tmp_path,
        clock,
        max_open_starts=3,
        max_finished=3,
        open_start_ttl_s=1000,
        on_drop=lambda reason, n: dropped.append((reason, n)),
    )
    engine.observe_events([event("stem_separation_started", n) for n in range(5)])
    assert engine.open_starts() == 3 and dropped == [("evicted", 1), ("evicted", 1)]
    clock.advance(1001)
    engine.evaluate()
    assert engine.open_starts() == 0 and dropped[-1] == ("expired", 3)
    engine.observe_events([event("stem_separation_completed", 100 + n) for n in range(5)])
    assert len(engine._finished) == 3 and len(engine._finished_new) == 3  # the outcome memory is bounded too


def _flood(engine, operation: str, count: int, *, first: int) -> None:
    """``count`` outcomes of ``operation`` (no starts), in batches of 500 like a receiver's."""
    for batch in range(first, first + count, 500):
        engine.observe_events(
            [event(f"{operation}_completed", n) for n in range(batch, min(batch + 500, first + count))]
        )


def test_a_start_arriving_after_20000_other_outcomes_is_still_recognised_as_finished(tmp_path):
    dropped: list[tuple[str, int]] = []
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock, on_drop=lambda reason, n: dropped.append((reason, n)))
    engine.observe_events([event("stem_separation_started", 1), event("stem_separation_completed", 1)])
    engine.observe_events([event("stem_separation_completed", 2)])  # its start travels in a later batch
    _flood(engine, "audio_analysis", 25_000, first=1_000_000)  # ~6 s at the bench's rate, no starts
    clock.advance(5)
    engine.observe_events([event("stem_separation_started", 2)])
    assert engine.open_starts() == 0
    clock.advance(700)
    assert engine.evaluate() == []  # no false stalled
    assert ("recent_evicted", 15_000) in dropped and not [d for d in dropped if d[0] == "finished_evicted"]


def test_a_start_of_an_operation_never_seen_started_shortly_after_its_outcome_is_recognised(tmp_path):
    clock = Clock()
    engine = engine_for([{**STALLED, "operation": "*"}], tmp_path, clock)
    engine.observe_events([event("audio_analysis_completed", 7)])
    _flood(engine, "render", 9_000, first=1_000_000)  # within the recency table
    engine.observe_events([event("audio_analysis_started", 7)])
    assert engine.open_starts() == 0
    engine.evaluate()
    assert engine.store.finished_rows() == 0  # outcomes of operations never seen started are not persisted
    # the recency table's limit: long after, a start of an operation never seen started opens
    engine.observe_events([event("file_upload_completed", 8)])
    _flood(engine, "render", 10_000, first=2_000_000)
    engine.observe_events([event("file_upload_started", 8)])
    assert engine.open_starts() == 1
    engine.store.close()


def test_remembered_outcomes_stay_bounded_under_a_flood_and_evictions_are_counted(tmp_path):
    dropped: list[tuple[str, int]] = []
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock, on_drop=lambda reason, n: dropped.append((reason, n)))
    engine.observe_events([event("stem_separation_started", 0), event("stem_separation_completed", 0)])
    for round_ in range(3):  # 130,000 outcomes of an operation seen started, 15,000 of one never seen started
        _flood(engine, "stem_separation", 43_333 + (round_ == 0), first=1 + round_ * 100_000)
        _flood(engine, "render", 5_000, first=1_000_000 + round_ * 5_000)
        clock.advance(5)
        engine.evaluate()
        assert len(engine._finished) <= 100_000 and len(engine._recent_finished) <= 10_000
        assert engine.store.finished_rows() <= 100_000
    assert len(engine._finished) == 100_000 and engine.store.finished_rows() == 100_000
    assert len(engine._recent_finished) == 10_000 and not engine._finished_new
    totals: dict[str, int] = {}
    for reason, n in dropped:
        totals[reason] = totals.get(reason, 0) + n
    assert totals == {"finished_evicted": 30_001, "recent_evicted": 5_000}
    # the newest are the ones kept
    engine.observe_events([event("stem_separation_started", 200_000 + 43_332), event("stem_separation_started", 1)])
    assert engine.open_starts() == 1 and engine._open.popitem()[0].endswith(f"{1:016x}")
    # and all of them are forgotten FINISHED_KEEP_S later, without counting that as a loss
    dropped.clear()
    clock.advance(901)
    engine.evaluate()
    assert len(engine._finished) == 0 and engine.store.finished_rows() == 0
    assert [d for d in dropped if d[0] != "expired"] == []
    engine.store.close()


def test_outcomes_of_started_operations_survive_a_restart_bounded(tmp_path):
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock, max_finished=1_000)
    engine.observe_events([event("stem_separation_started", 0), event("stem_separation_completed", 0)])
    _flood(engine, "stem_separation", 1_000, first=1)
    engine.observe_events([event("render_completed", 5_000)])  # never seen started: not persisted
    engine.evaluate()
    clock.advance(10)
    _flood(engine, "stem_separation", 500, first=1_001)  # evicts 0..500
    engine.flush()  # shutdown
    engine.store.close()
    reopened = AlertStore(tmp_path / "alerts.db")
    assert reopened.finished_rows() == 1_000
    reopened.close()

    clock.advance(30)
    restarted = engine_for([STALLED], tmp_path, clock, max_finished=1_000)
    assert len(restarted._finished) == 1_000 and "stem_separation" in restarted._started_ops
    restarted.observe_events([event("stem_separation_started", n) for n in (501, 1_000, 1_500)])
    restarted.observe_events([event("render_started", 5_000)])
    assert restarted.open_starts() == 1 and next(iter(restarted._open)).startswith("render\x00")
    # known from alerts.db: its next outcomes are remembered in the persisted table again
    restarted.observe_events([event("stem_separation_completed", 9_000)])
    assert "stem_separation\x00span\x00" + f"{9_000:032x}:{9_000:016x}" in restarted._finished
    restarted.store.close()

    small = engine_for([STALLED], tmp_path, clock, max_finished=100)  # the load is bounded: the newest 100
    assert len(small._finished) == 100
    assert next(reversed(small._finished)).endswith(f"{1_500:016x}")
    small.observe_events([event("stem_separation_started", 1_400), event("stem_separation_started", 1_401)])
    assert small.open_starts() == 1
    small.store.close()


def test_the_operations_seen_started_are_bounded_by_the_series_limit(tmp_path):
    dropped: list[tuple[str, int]] = []
    clock = Clock()
    engine = engine_for([STALLED], tmp_path, clock, max_series=2, on_drop=lambda reason, n: dropped.append((reason, n)))
    engine.observe_events([event(f"{op}_started", n) for n, op in enumerate(["render", "file_upload", "render"])])
    engine.observe_events([event("audio_analysis_started", 3)])  # file_upload is the least recently started
    assert list(engine._started_ops) == ["render", "audio_analysis"]
    engine.observe_events([event("file_upload_completed", 9), event("render_completed", 10)])
    assert list(engine._recent_finished) == [f"file_upload\x00span\x00{9:032x}:{9:016x}"]
    assert list(engine._finished) == [f"render\x00span\x00{10:032x}:{10:016x}"]
    engine.evaluate()
    assert ("operation_evicted", 1) in dropped


# -- http_error_rate --------------------------------------------------------------------------------


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def test_cumulative_histograms_are_differenced_with_restarts(tmp_path):
    clock = Clock()
    engine = engine_for([API], tmp_path, clock)
    # a series that began before the engine did: a baseline, not a burst
    engine.observe_metrics(http_request([("/files", 500, 1000), ("/files", 200, 5000)], start_ns=_ns(T0 - 3600)))
    assert engine.evaluate() == []
    clock.advance(10)
    engine.observe_metrics(http_request([("/files", 500, 1000), ("/files", 200, 5030)], start_ns=_ns(T0 - 3600)))
    assert engine.evaluate() == []  # 30 requests, no 5xx
    clock.advance(10)
    trace = bytes.fromhex("ab" * 16)
    engine.observe_metrics(
        http_request([("/files", 500, 1003), ("/files", 200, 5040)], start_ns=_ns(T0 - 3600), exemplar_trace=trace)
    )
    transitions = engine.evaluate()  # 3 of 43
    assert statuses(transitions) == [("api_errors", "/files", "firing", False)]
    assert round(transitions[0].snapshot["value"], 4) == round(3 / 43, 4)
    assert transitions[0].snapshot["trace_ids"] == ["ab" * 16]
    assert transitions[0].snapshot["labels"]["route"] == "/files"
    clock.advance(70)
    # the service restarted: its counts start again from zero (a lower count, a new start time)
    engine.observe_metrics(http_request([("/files", 500, 0), ("/files", 200, 40)], start_ns=_ns(clock.now - 5)))
    assert statuses(engine.evaluate()) == [("api_errors", "/files", "resolved", False)]
    clock.advance(10)
    engine.observe_metrics(http_request([("/files", 500, 10), ("/files", 200, 40)], start_ns=_ns(clock.now - 15)))
    assert statuses(engine.evaluate()) == [("api_errors", "/files", "firing", False)]


def test_a_series_first_seen_after_the_engine_started_counts_whole(tmp_path):
    clock = Clock()
    engine = engine_for([API], tmp_path, clock)
    clock.advance(20)
    engine.observe_metrics(http_request([("/billing/webhook", 503, 25)], start_ns=_ns(clock.now - 10)))
    assert statuses(engine.evaluate()) == [("api_errors", "/billing/webhook", "firing", False)]


def test_delta_histograms_and_4xx_floods(tmp_path):
    clock = Clock()
    engine = engine_for([API], tmp_path, clock)
    for _ in range(10):
        engine.observe_metrics(
            http_request([("/files", 400, 50), ("/auth", 401, 50), ("/files", 201, 10)], start_ns=0, cumulative=False)
        )
        clock.advance(5)
        assert engine.evaluate() == []
    engine.observe_metrics(http_request([("/files", 502, 100), ("/files", 201, 5)], start_ns=0, cumulative=False))
    assert statuses(engine.evaluate()) == [("api_errors", "/files", "firing", False)]


def test_a_route_prefix_counts_its_routes_together(tmp_path):
    clock = Clock()
    engine = engine_for([{**API, "route": "/projects*", "min_count": 20, "above": 0.2}], tmp_path, clock)
    routes = [f"/projects/{{id}}/r{i}" for i in range(8)]
    engine.observe_metrics(
        http_request([(r, 500, 2) for r in routes] + [("/auth", 500, 50)], start_ns=0, cumulative=False)
    )
    engine.observe_metrics(http_request([(r, 200, 2) for r in routes], start_ns=0, cumulative=False))
    transitions = engine.evaluate()
    assert statuses(transitions) == [("api_errors", "/projects*", "firing", False)]
    assert "16 of 32 requests answered 5xx" in transitions[0].snapshot["summary"]
    assert transitions[0].snapshot["labels"]["route"] == "/projects*"


def test_default_rules_fire_on_a_5xx_burst_within_a_minute_and_not_on_4xx_floods(tmp_path):
    clock = Clock()
    engine = Engine(parse_alerts(None), AlertStore(tmp_path / "alerts.db"), clock=clock)
    routes = [f"/projects/{{id}}/r{i}" for i in range(12)]
    for _ in range(24):  # two minutes of 4xx floods beside normal traffic
        engine.observe_metrics(
            http_request(
                [(r, 200, 1) for r in routes] + [("/files", 415, 20), ("/auth/token", 401, 20)],
                start_ns=0,
                cumulative=False,
            )
        )
        clock.advance(5)
        assert engine.evaluate() == []
    fired: list[str] = []
    for _ in range(12):  # a 5xx burst: half of every route's requests
        engine.observe_metrics(http_request([(r, 500, 1) for r in routes], start_ns=0, cumulative=False))
        engine.observe_metrics(http_request([(r, 200, 1) for r in routes], start_ns=0, cumulative=False))
        clock.advance(5)
        fired += [t.rule for t in engine.evaluate()]
        if fired:
            break
    assert fired and set(fired) <= {"api_5xx", "api_5xx_total"}  # within the 60 s of the loop


def test_job_queue_gauges_keep_their_last_values_and_queue_age_fires(tmp_path):
    clock = Clock()
    rule = {"name": "jobs_waiting", "when": "queue_age", "operation": "*", "above_s": 300, "severity": "critical"}
    engine = engine_for([{**rule, "keep_firing_for_s": 0}], tmp_path, clock)
    ages = {"stem_separation": 31.5, "render": 0.0}
    engine.observe_metrics(
        http_request([], start_ns=0, gauges={"phonoglyph.jobs.queued": {"stem_separation": 4, "render": 0}})
    )
    engine.observe_metrics(http_request([], start_ns=0, gauges={"phonoglyph.jobs.oldest_queued_age": ages}))
    assert engine.gauges() == {
        "phonoglyph.jobs.queued": {"stem_separation": 4.0, "render": 0.0},
        "phonoglyph.jobs.oldest_queued_age": ages,
    }
    assert engine.evaluate() == []
    clock.advance(5)
    engine.observe_metrics(
        http_request([], start_ns=0, gauges={"phonoglyph.jobs.oldest_queued_age": {"stem_separation": 301}})
    )
    transitions = engine.evaluate()
    assert statuses(transitions) == [("jobs_waiting", "stem_separation", "firing", False)]
    assert transitions[0].snapshot["value_text"] == "301 s waiting"
    clock.advance(301)  # the api stopped reporting: a stale age is not trusted
    assert statuses(engine.evaluate()) == [("jobs_waiting", "stem_separation", "resolved", False)]


# -- latency_p95 and delivery_backlog ---------------------------------------------------------------


def test_latency_p95_needs_more_than_one_slow_operation(tmp_path):
    clock = Clock()
    rule = {
        "name": "render_slow",
        "when": "latency_p95",
        "operation": "render",
        "window_s": 600,
        "above_ms": 30000,
        "min_count": 20,
        "severity": "warning",
    }
    engine = engine_for([rule], tmp_path, clock)
    engine.observe_events([event("render_completed", n, ms=2000) for n in range(19)])
    engine.observe_events([event("render_completed", 99, ms=120_000)])
    assert engine.evaluate() == []
    engine.observe_events([event("render_failed", 100 + n, ms=60_000) for n in range(2)])
    transitions = engine.evaluate()
    assert statuses(transitions) == [("render_slow", "render", "firing", False)]
    assert transitions[0].snapshot["value"] > 30000
    assert transitions[0].snapshot["trace_ids"] == [f"{n:032x}" for n in (101, 100, 99)]


def test_delivery_backlog(tmp_path):
    clock = Clock()
    rule = {"name": "backlog", "when": "delivery_backlog", "above_s": 300, "severity": "warning"}
    engine = engine_for([{**rule, "keep_firing_for_s": 0}], tmp_path, clock)
    engine.observe_delivery(None)
    assert engine.evaluate() == []
    engine.observe_delivery(299.0)
    assert engine.evaluate() == []
    engine.observe_delivery(301.0)
    transitions = engine.evaluate()
    assert statuses(transitions) == [("backlog", "", "firing", False)]
    assert "operation" not in transitions[0].snapshot["labels"] and transitions[0].snapshot["value_text"] == "301 s"
    engine.observe_delivery(None)
    assert statuses(engine.evaluate()) == [("backlog", "", "resolved", False)]


def test_one_notification_row_per_notifier_and_transition(tmp_path):
    engine = engine_for([FAILING], tmp_path, Clock(), notifiers=("webhook", "slack", "alertmanager"))
    engine.observe_events(outcomes("stem_separation", completed=0, failed=5))
    engine.evaluate()
    assert pending_rows(engine) == [("webhook", "firing"), ("slack", "firing"), ("alertmanager", "firing")]
    fingerprints = {row.fingerprint for row in engine.store.pending_notifications()}
    assert len(fingerprints) == 1


def test_series_are_bounded(tmp_path):
    dropped: list[tuple[str, int]] = []
    engine = engine_for(
        [{**FAILING, "operation": "*"}], tmp_path, Clock(), max_series=1, on_drop=lambda r, n: dropped.append((r, n))
    )
    engine.observe_events(outcomes("render", completed=0, failed=5) + outcomes("file_upload", completed=0, failed=5))
    assert statuses(engine.evaluate()) == [("stems_failing", "render", "firing", False)]
    assert dropped == [("series_limit", 1)] * 5


def test_concurrent_ingest_counts_everything(tmp_path):
    clock = Clock()
    engine = engine_for([{**FAILING, "above": 0.9}], tmp_path, clock)

    def feed(offset: int) -> None:
        for n in range(250):
            engine.observe_events([event("stem_separation_failed", offset + n)])
            engine.observe_events([event("stem_separation_started", offset + n)])

    threads = [threading.Thread(target=feed, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    engine.evaluate()  # evaluation beside ingest
    for thread in threads:
        thread.join(30)
    engine.evaluate()
    (alert,) = engine.firing()
    assert "1000 of 1000 outcomes failed" in alert["summary"]
    assert engine.open_starts() == 0  # every start came after its outcome


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 400), st.sampled_from("ab")), max_size=60), st.floats(1, 120))
def test_count_window_matches_a_brute_force_count(adds, window_s):
    window = CountWindow(5, 120)
    times = sorted(adds, key=lambda item: item[0])
    for at, name in times:
        window.add(T0 + at, name)
    now = T0 + (times[-1][0] if times else 0) + 1
    first_bucket = int((now - window_s) // 5) + 1
    expected: dict[str, float] = {}
    for at, name in times:
        if int((T0 + at) // 5) >= max(first_bucket, int(now // 5) - int(120 // 5)):
            expected[name] = expected.get(name, 0.0) + 1
    assert window.totals(now, window_s) == expected


def test_default_latency_rule_fires_on_a_regression_of_a_rare_operation_but_not_on_one_slow_job(tmp_path):
    """render_slow: a render every 2 minutes (too few for a large min_count), then every render 40 s slower.
    One slow render among fast ones never fires: the slowest outcome of the window is never its p95."""
    clock = Clock()
    engine = Engine(parse_alerts(None), AlertStore(tmp_path / "alerts.db"), clock=clock)
    n = 0
    for i in range(10):  # 20 minutes of fast renders, one of them slow
        n += 1
        engine.observe_events([event("render_completed", n, ms=95_000 if i == 2 else 900)])
        clock.advance(5)
        assert engine.evaluate() == []
        clock.advance(115)
    fired_after = None
    for i in range(10):  # the regression: every render takes 41 s
        n += 1
        engine.observe_events([event("render_completed", n, ms=41_000)])
        clock.advance(5)
        if any(t.rule == "render_slow" and t.status == "firing" for t in engine.evaluate()):
            fired_after = i + 1
            break
        clock.advance(115)
    assert fired_after == 2  # the second slow render: 5 outcomes in the window, two of them over 30 s


def test_default_5xx_rule_fires_within_a_minute_on_half_of_a_routes_requests_after_a_full_healthy_window(tmp_path):
    clock = Clock()
    engine = Engine(parse_alerts(None), AlertStore(tmp_path / "alerts.db"), clock=clock)
    for _ in range(60):  # five healthy minutes: the window is full of 200s
        engine.observe_metrics(http_request([("/projects", 200, 2)], start_ns=0, cumulative=False))
        clock.advance(5)
        assert engine.evaluate() == []
    start, fired_at = clock.now, None
    for _ in range(12):  # half of /projects answers 500
        engine.observe_metrics(
            http_request([("/projects", 200, 1), ("/projects", 500, 1)], start_ns=0, cumulative=False)
        )
        clock.advance(5)
        if any(t.rule == "api_5xx" and t.status == "firing" for t in engine.evaluate()):
            fired_at = clock.now
            break
    assert fired_at is not None and fired_at - start <= 30  # + up to 10 s of metric export in a real stack


def test_a_batch_counts_what_its_events_count_one_by_one(tmp_path):
    """observe_events adds a batch's counts and latencies to the windows per operation at its end: the
    windows, examples, open starts and finished outcomes are what observing each event alone gives,
    series limits included."""
    rules = [
        {**FAILING, "operation": "*", "ignore_error_types": ["Timeout"]},
        {
            "name": "slow",
            "when": "latency_p95",
            "operation": "*",
            "window_s": 600,
            "above_ms": 500,
            "min_count": 1,
            "severity": "warning",
        },
    ]
    rng = random.Random(4)
    events = []
    for n in range(400):
        operation = rng.choice(["render", "file_upload", "stem_separation", "audio_analysis", ""])
        kind = rng.choice(["started", "completed", "failed", "failed"])
        item = event(
            f"{operation}_{kind}",
            rng.randrange(150),
            ms=rng.choice([0.5, 20.0, 700.0, 12_345.0]),
            job=rng.choice([None, None, f"job-{n % 7}"]),
            error_type=rng.choice(["Timeout", "RuntimeError", None]),
        )
        if rng.random() < 0.1:
            item["properties"]["processing_time_ms"] = rng.choice([True, "slow", None])
        events.append(item)
    clock = Clock()
    dropped: dict[str, list] = {"batch": [], "alone": []}
    engines = {
        name: engine_for(
            rules,
            tmp_path / name,
            clock,
            max_series=3,
            on_drop=lambda reason, n, name=name: dropped[name].append(reason),
        )
        for name in ("batch", "alone")
    }
    for start in range(0, len(events), 50):
        engines["batch"].observe_events(events[start : start + 50])
        for item in events[start : start + 50]:
            engines["alone"].observe_events([item])
        clock.advance(7)

    def state(engine: Engine) -> tuple:
        now = clock()
        return (
            {op: window.totals(now, 600) for op, window in engine._outcomes.items()},
            {op: window.quantile(now, 600, 0.95) for op, window in engine._latency.items()},
            {op: list(examples) for op, examples in engine._failed_examples.items()},
            {op: list(examples) for op, examples in engine._slow_examples.items()},
            list(engine._open),
            list(engine._finished.items()),
            engine._finished_new,
        )

    assert state(engines["batch"]) == state(engines["alone"])
    assert dropped["batch"] == dropped["alone"] and dropped["batch"]
    assert statuses(engines["batch"].evaluate()) == statuses(engines["alone"].evaluate())
