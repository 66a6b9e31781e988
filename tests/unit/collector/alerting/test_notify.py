import re
import time

from collector.alerting.config import parse_alerts
from collector.alerting.engine import fingerprint
from collector.alerting.notify import (
    ZERO_TIME,
    AlertmanagerNotifier,
    Dispatcher,
    SlackNotifier,
    WebhookNotifier,
    backoff_s,
)
from collector.alerting.store import AlertStore
from tests.unit.collector.alerting.helpers import Clock, Receiver, closed_port_url, engine_for, outcomes

RULE = {
    "name": "stems_failing",
    "when": "failure_rate",
    "operation": "stem_separation",
    "window_s": 60,
    "above": 0.2,
    "min_count": 5,
    "severity": "critical",
    "keep_firing_for_s": 0,
    "labels": {"team": "audio"},
    "links": {"sentry": "https://sentry.example/traces/{trace_id}"},
}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def fire_and_resolve(tmp_path, clock, notifiers=("webhook",)):
    engine = engine_for([RULE], tmp_path, clock, notifiers=notifiers)
    engine.observe_events(outcomes("stem_separation", completed=1, failed=6))
    firing = engine.evaluate()[0].snapshot
    clock.advance(61)
    resolved = engine.evaluate()[0].snapshot
    return engine, firing, resolved


def test_webhook_payload_has_the_alertmanager_fields(tmp_path):
    _, firing, resolved = fire_and_resolve(tmp_path, Clock())
    notifier = WebhookNotifier("http://unused", receiver="pager", external_url="http://collector:4318")
    body = notifier.payload(firing)
    # the documented webhook_config payload (Alertmanager docs, "webhook_config"), version 4
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "pager"
    assert body["truncatedAlerts"] == 0 and body["groupKey"] == '{}:{alertname="stems_failing"}'
    assert body["groupLabels"] == {"alertname": "stems_failing"}
    assert body["externalURL"] == "http://collector:4318"
    (alert,) = body["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert alert["labels"] == {
        "alertname": "stems_failing",
        "severity": "critical",
        "operation": "stem_separation",
        "team": "audio",
    }
    assert body["commonLabels"] == alert["labels"]
    notes = alert["annotations"]
    assert notes["summary"].startswith("stems_failing (operation stem_separation): 6 of 7 outcomes failed")
    assert notes["value"] == "85.7 %"
    trace_ids = notes["trace_ids"].split(",")
    assert len(trace_ids) == 5 and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids)
    assert notes["sentry"].split(" ")[0] == f"https://sentry.example/traces/{trace_ids[0]}"
    assert all(isinstance(value, str) for value in notes.values())
    assert RFC3339.match(alert["startsAt"]) and alert["endsAt"] == ZERO_TIME
    assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
    closing = notifier.payload(resolved)
    assert closing["status"] == "resolved" and closing["alerts"][0]["status"] == "resolved"
    assert RFC3339.match(closing["alerts"][0]["endsAt"]) and closing["alerts"][0]["endsAt"] != ZERO_TIME
    assert closing["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert closing["alerts"][0]["startsAt"] == alert["startsAt"]


def test_fingerprints_are_alertmanagers():
    # the fingerprints Alertmanager gives these label sets (its GET /api/v2/alerts shows them)
    assert fingerprint({"alertname": "x", "severity": "critical"}) == "2531c3c2583840d8"
    assert fingerprint({"severity": "critical", "alertname": "y"}) == "64f200c79568884d"


def test_slack_text_carries_the_same_facts(tmp_path):
    _, firing, resolved = fire_and_resolve(tmp_path, Clock())
    body = SlackNotifier("http://unused").payload(firing)
    text = body["text"]
    assert "FIRING" in text and "[critical]" in text and "stems_failing" in text
    assert "6 of 7 outcomes failed" in text and "Value: 85.7 %" in text
    assert firing["trace_ids"][0] in text and "https://sentry.example/traces/" in text
    assert body["blocks"][0]["text"]["text"] == text
    assert "RESOLVED" in SlackNotifier.text(resolved) and "Resolved: " in SlackNotifier.text(resolved)


def test_alertmanager_body(tmp_path):
    _, firing, resolved = fire_and_resolve(tmp_path, Clock())
    notifier = AlertmanagerNotifier("http://am:9093/")
    assert notifier.url == "http://am:9093/api/v2/alerts"
    body = notifier.alert_body(firing)
    assert set(body) == {"labels", "annotations", "startsAt", "generatorURL"}  # no endsAt while firing
    assert body["labels"]["alertname"] == "stems_failing"
    closing = notifier.alert_body(resolved)
    assert RFC3339.match(closing["endsAt"]) and closing["labels"] == body["labels"]


def test_backoff_is_exponential_capped_and_jittered():
    assert [backoff_s(n, random=lambda: 0.5) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_s(50, random=lambda: 0.5) == 300.0
    assert backoff_s(1, random=lambda: 0.0) == 0.8 and backoff_s(1, random=lambda: 1.0) == 1.2
    assert backoff_s(10_000, random=lambda: 0.5) == 300.0


def test_a_receiver_answering_503_gets_it_later_once(tmp_path):
    clock = Clock()
    engine, _, _ = fire_and_resolve(tmp_path, clock)
    results = []
    with Receiver(statuses=[503]) as receiver:
        dispatcher = Dispatcher(
            engine.store,
            [WebhookNotifier(receiver.url)],
            clock=clock,
            random=lambda: 0.5,
            on_result=lambda name, result: results.append(result),
        )
        assert dispatcher.deliver_due() == 0  # 503: retried later, the resolution waits behind it
        assert [row.attempts for row in engine.store.pending_notifications()] == [1, 0]
        assert dispatcher.next_due_at() == clock.now + 1.0
        assert dispatcher.deliver_due() == 0  # not due yet
        clock.advance(1.0)
        assert dispatcher.deliver_due() == 2
        assert dispatcher.deliver_due() == 0
    assert [body["status"] for body in receiver.bodies] == ["firing", "resolved"]
    assert results == ["retried", "sent", "sent"]
    assert engine.store.pending_notifications() == []


def test_a_refusal_is_not_retried_and_does_not_block_the_next(tmp_path):
    clock = Clock()
    engine, _, _ = fire_and_resolve(tmp_path, clock)
    with Receiver(statuses=[400]) as receiver:
        dispatcher = Dispatcher(engine.store, [WebhookNotifier(receiver.url)], clock=clock)
        assert dispatcher.deliver_due() == 1
    assert [body["status"] for body in receiver.bodies] == ["resolved"]
    assert engine.store.failed_notifications() == 1


def test_notifications_survive_a_restart_and_are_not_duplicated(tmp_path):
    clock = Clock()
    engine, _, _ = fire_and_resolve(tmp_path, clock)
    down = Dispatcher(engine.store, [WebhookNotifier(closed_port_url(), timeout_s=2)], clock=clock)
    assert down.deliver_due() == 0
    engine.store.close()
    store = AlertStore(tmp_path / "alerts.db")  # a restarted collector
    assert [row.status for row in store.pending_notifications()] == ["firing", "resolved"]
    clock.advance(3600)
    with Receiver() as receiver:
        dispatcher = Dispatcher(store, [WebhookNotifier(receiver.url)], clock=clock)
        assert dispatcher.deliver_due() == 2
        again = Dispatcher(AlertStore(tmp_path / "alerts.db"), [WebhookNotifier(receiver.url)], clock=clock)
        assert again.deliver_due() == 0
    assert [body["status"] for body in receiver.bodies] == ["firing", "resolved"]
    assert len({body["alerts"][0]["fingerprint"] for body in receiver.bodies}) == 1


def test_alertmanager_gets_firing_alerts_repushed_and_the_resolution_once(tmp_path):
    clock = Clock()
    engine = engine_for([RULE], tmp_path, clock, notifiers=("alertmanager",))
    with Receiver() as receiver:
        dispatcher = Dispatcher(
            engine.store, [AlertmanagerNotifier(receiver.url, refresh_s=60)], clock=clock, firing=engine.firing
        )
        dispatcher.refresh()  # nothing firing: nothing pushed
        engine.observe_events(outcomes("stem_separation", completed=0, failed=6))
        engine.evaluate()
        assert dispatcher.deliver_due() == 1
        for _ in range(6):  # 30 s: too early for a re-push
            clock.advance(5)
            engine.observe_events(outcomes("stem_separation", completed=0, failed=1))
            engine.evaluate()
            dispatcher.refresh()
        clock.advance(30)
        dispatcher.refresh()
        clock.advance(61)
        engine.evaluate()
        dispatcher.refresh()  # resolved: no longer re-pushed
        assert dispatcher.deliver_due() == 1
    assert receiver.paths == ["/api/v2/alerts"] * 3
    kinds = [("endsAt" in body[0]) for body in receiver.bodies]
    assert kinds == [False, False, True]
    assert all(isinstance(body, list) and len(body) == 1 for body in receiver.bodies)


def test_the_dispatcher_thread_delivers_and_stops(tmp_path):
    engine = engine_for([RULE], tmp_path, Clock(time.time()), notifiers=("slack",))
    engine.observe_events(outcomes("stem_separation", completed=0, failed=6))
    engine.evaluate()
    with Receiver() as receiver:
        dispatcher = Dispatcher(engine.store, [SlackNotifier(receiver.url)])
        dispatcher.start()
        dispatcher.wake()
        assert receiver.received.wait(10)
        dispatcher.shutdown(10)
        assert dispatcher._thread is not None and not dispatcher._thread.is_alive()
    assert "stems_failing" in receiver.bodies[0]["text"]


def test_default_links_config_is_filled_per_rule():
    config = parse_alerts({"links": {"posthog": "https://ph.example/{trace_id}"}})
    assert all(rule.links == (("posthog", "https://ph.example/{trace_id}"),) for rule in config.rules)
