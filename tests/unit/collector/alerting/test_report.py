from collector.alerting.report import duration_text, render_alerts
from tests.unit.collector.alerting.helpers import Clock, engine_for, outcomes

RULE = {
    "name": "stems_failing",
    "when": "failure_rate",
    "operation": "stem_separation",
    "window_s": 60,
    "above": 0.2,
    "min_count": 5,
    "severity": "critical",
    "keep_firing_for_s": 0,
}


def test_durations():
    assert [duration_text(s) for s in (0, 45.4, 185, 7440)] == ["0s", "45s", "3m05s", "2h04m"]


def test_render_firing_and_history(tmp_path):
    clock = Clock()
    engine = engine_for([RULE], tmp_path, clock)
    assert render_alerts(engine.firing(), engine.history(), now=clock.now) == (
        "== Firing (0)\n  (none)\n== History (0)\n  (none)\n"
    )
    engine.observe_events(outcomes("stem_separation", completed=2, failed=6))
    engine.evaluate()
    clock.advance(30)
    text = render_alerts(engine.firing(), engine.history(), now=clock.now)
    lines = text.splitlines()
    assert lines[0] == "== Firing (1)"
    assert lines[1].startswith("  critical stems_failing  operation=stem_separation  since 2027-01-15T08:00:00.000Z")
    assert lines[1].endswith("(30s)  value 75.0 %")
    assert "6 of 8 outcomes failed" in lines[2] and lines[3].startswith("      traces: ")
    clock.advance(40)
    engine.evaluate()
    text = render_alerts(engine.firing(), engine.history(), now=clock.now)
    assert "== Firing (0)" in text
    assert "resolved critical stems_failing  operation=stem_separation  after 1m10s, last 75.0 %" in text
    assert "firing   critical stems_failing  operation=stem_separation  value 75.0 %" in text
