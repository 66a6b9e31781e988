"""tools.stack.commands: the demo collector's alert rules (pure, no process)."""

from __future__ import annotations

import yaml

from collector.alerting import DEFAULT_RULES, parse_alerts
from tools.stack.commands import DEMO_MIN_COUNT, DEMO_WINDOW_S, INCIDENT_ALERT, INCIDENT_USERS, demo_alerts


def test_demo_rules_are_the_default_rules_scaled_to_seconds():
    config = parse_alerts(yaml.safe_load(yaml.safe_dump({"alerts": demo_alerts()}))["alerts"])
    defaults = {rule.name: rule for rule in DEFAULT_RULES}
    assert [rule.name for rule in config.rules] == list(defaults)
    assert config.evaluation_interval_s <= 1
    for rule in config.rules:
        default = defaults[rule.name]
        assert (rule.when, rule.severity, rule.operation, rule.route) == (
            default.when,
            default.severity,
            default.operation,
            default.route,
        )
        assert (rule.above, rule.above_ms, rule.ignore_error_types) == (
            default.above,
            default.above_ms,
            default.ignore_error_types,
        )
        assert rule.window_s <= DEMO_WINDOW_S and rule.min_count <= DEMO_MIN_COUNT
        assert rule.keep_firing_for_s < default.keep_firing_for_s


def test_the_incident_is_big_enough_for_its_rule():
    rule = next(rule for rule in parse_alerts(demo_alerts()).rules if rule.name == INCIDENT_ALERT)
    assert (rule.when, rule.operation) == ("failure_rate", "stem_separation")
    assert rule.min_count <= INCIDENT_USERS
