"""tools.stack.summary: what the demo prints about the stored events (pure, no process)."""

from __future__ import annotations

from tools.stack.summary import percentile, render_summary, summarize
from tools.stack.supervisor import Stack


def event(name, user, timestamp, **properties):
    uuid = f"{name}-{user}-{timestamp}"
    return {"event": name, "distinct_id": user, "timestamp": timestamp, "properties": properties, "uuid": uuid}


EVENTS = [
    event("user_signed_up", "u1", "2026-11-28T10:00:00Z"),
    event("user_signed_up", "u2", "2026-11-28T10:00:01Z"),
    event("user_signed_up", "u3", "2026-11-28T10:00:02Z"),
    event("file_uploaded", "u1", "2026-11-28T10:01:00Z"),
    event("file_uploaded", "u2", "2026-11-28T10:01:00Z"),
    event("file_uploaded", "u4", "2026-11-28T10:01:00Z"),  # never signed up: not in the funnel
    event("stem_separation_completed", "u1", "2026-11-28T10:02:00Z", processing_time_ms=100.0, trace_id="t1"),
    event("stem_separation_completed", "u2", "2026-11-28T09:00:00Z", processing_time_ms=300.0, trace_id="t2"),
    event(
        "stem_separation_failed",
        "u3",
        "2026-11-28T10:02:00Z",
        processing_time_ms=50.0,
        error_type="DecodeError",
        trace_id="t3",
    ),
    event("render_started", "u1", "2026-11-28T10:03:00Z"),
    event("credits_purchased", "u1", "2026-11-28T10:04:00Z"),
]


def test_percentile_is_nearest_rank():
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile(list(map(float, range(1, 101))), 0.95) == 95.0


def test_summary_counts_events_failures_and_durations():
    summary = summarize(EVENTS)
    assert summary.events_per_name["file_uploaded"] == 3
    assert [step.event for step in summary.funnel] == [
        "user_signed_up",
        "file_uploaded",
        "stem_separation_completed",
        "render_started",  # no render_completed arrived: the funnel uses the start
        "credits_purchased",
    ]
    assert [step.count for step in summary.funnel] == [3, 2, 1, 1, 1]
    assert [(f.event, f.error_type, f.trace_id) for f in summary.failures] == [
        ("stem_separation_failed", "DecodeError", "t3")
    ]
    assert summary.durations_ms == {"stem_separation": (3, 100.0, 300.0)}


def test_rendered_summary_names_failures_and_inspection_commands(tmp_path):
    text = render_summary(summarize(EVENTS), Stack(root=tmp_path))
    assert "DecodeError" in text and "trace t3" in text
    assert f"COLLECTOR_DATA_DIR={tmp_path / 'collector'}" in text
    assert "phonoglyph-collector funnel user_signed_up file_uploaded" in text
    assert "  user_signed_up                 3   100.0%\n  file_uploaded                  2    66.7%\n" in text
