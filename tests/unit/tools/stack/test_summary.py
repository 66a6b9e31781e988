"""tools.stack.summary: what the demo prints about the stored events and the alerts (pure, no process)."""

from __future__ import annotations

from collector.alerting.engine import rfc3339
from tools.stack.summary import (
    Incident,
    alert_episodes,
    detection,
    percentile,
    render_alerts_section,
    render_summary,
    summarize,
)
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


def snapshot(status, starts_at, *, at, ends_at=None, alertname="stem_separation_failing", value_text="75.0 %"):
    return {
        "alertname": alertname,
        "severity": "critical",
        "subject_label": "operation",
        "subject": "stem_separation",
        "status": status,
        "value_text": value_text,
        "summary": f"{alertname} (operation stem_separation): 6 of 8 outcomes failed in the last 10 s",
        "trace_ids": ["t1", "t2"],
        "starts_at": starts_at,
        "ends_at": ends_at,
        "at": at,
    }


INCIDENT = Incident("stem separations failing", "stem_separation_failing", started_at=1000.0, ended_at=1004.0)


def test_alert_episodes_pair_each_firing_with_its_resolution():
    history = [  # newest first, as read_alerts returns it
        snapshot("firing", 1020.0, at=1020.0, value_text="50.0 %"),
        snapshot("resolved", 1003.0, at=1011.0, ends_at=1011.0, value_text="100.0 %"),
        snapshot("firing", 1003.0, at=1003.0),
    ]
    firing = [snapshot("firing", 1020.0, at=1021.0, value_text="60.0 %")]
    episodes = alert_episodes(firing, history)
    assert [(e.fired_at, e.resolved_at, e.value_text) for e in episodes] == [
        (1003.0, 1011.0, "75.0 %"),  # the figure when it fired
        (1020.0, None, "50.0 %"),
    ]
    assert episodes[0].subject == "operation=stem_separation" and episodes[0].trace_ids == ("t1", "t2")


def test_an_alert_still_firing_whose_history_entry_is_gone_comes_from_the_firing_list():
    episodes = alert_episodes([snapshot("firing", 1003.0, at=1030.0)], [])
    assert [(e.alertname, e.fired_at, e.resolved_at) for e in episodes] == [("stem_separation_failing", 1003.0, None)]


def test_detection_is_the_incidents_rule_firing_after_the_incident_began():
    before = snapshot("firing", 990.0, at=990.0)
    other = snapshot("firing", 1002.0, at=1002.0, alertname="api_5xx")
    assert detection(alert_episodes([], [other, before]), INCIDENT) is None
    caught = detection(alert_episodes([], [snapshot("firing", 1003.0, at=1003.0), other, before]), INCIDENT)
    assert caught is not None and caught.fired_at == 1003.0


def test_alerts_section_says_when_each_alert_fired_and_resolved_relative_to_the_incident():
    history = [
        snapshot("resolved", 1003.5, at=1011.0, ends_at=1011.0),
        snapshot("firing", 1003.5, at=1003.5),
        snapshot("firing", 990.0, at=990.0, alertname="api_5xx"),
    ]
    lines = render_alerts_section(alert_episodes([], history), INCIDENT, rules="demo rules")
    text = "\n".join(lines)
    assert lines[:2] == ["", "== Alerts (demo rules)"]
    assert "  incident  stem separations failing" in text
    assert "  critical  stem_separation_failing  operation=stem_separation  value 75.0 %" in text
    assert f"      fired     {rfc3339(1003.5)}  3.5 s after the incident began" in text
    assert f"      resolved  {rfc3339(1011.0)}  after 8s firing, 7.0 s after the incident ended" in text
    assert "6 of 8 outcomes failed" in text and "traces: t1, t2" in text
    assert "10.0 s before the incident began (not caused by it)" in text  # api_5xx, listed first
    assert text.index("api_5xx") < text.index("stem_separation_failing  operation")


def test_alerts_section_without_alerts_says_so_and_a_firing_alert_is_still_firing():
    assert "  (no alert fired)" in render_alerts_section([], INCIDENT)
    lines = render_alerts_section(alert_episodes([snapshot("firing", 1001.0, at=1001.0)], []), None)
    assert "      resolved  (still firing)" in lines
    assert not any("incident" in line for line in lines)


def test_rendered_summary_places_the_alerts_after_the_processing_times(tmp_path):
    alerts = render_alerts_section([], INCIDENT, rules="demo rules")
    text = render_summary(summarize(EVENTS), Stack(root=tmp_path), alerts=alerts)
    assert text.index("== Processing time") < text.index("== Alerts (demo rules)") < text.index("== Where")
    assert "  phonoglyph-collector alerts [--json]" in text
