import pytest

from collector.alerting.config import DEFAULT_RULES, default_rules_markdown, default_rules_table, parse_alerts
from collector.config import ConfigError

ISSUE_EXAMPLE = {
    "evaluation_interval_s": 5,
    "rules": [
        {
            "name": "stems_failing",
            "when": "failure_rate",
            "operation": "stem_separation",
            "window_s": 300,
            "above": 0.2,
            "min_count": 5,
            "severity": "critical",
        },
        {
            "name": "stems_stalled",
            "when": "stalled",
            "operation": "stem_separation",
            "after_s": 600,
            "severity": "critical",
        },
        {
            "name": "api_errors",
            "when": "http_error_rate",
            "route": "*",
            "window_s": 300,
            "above": 0.05,
            "min_count": 20,
            "severity": "critical",
        },
        {
            "name": "render_slow",
            "when": "latency_p95",
            "operation": "render",
            "window_s": 600,
            "above_ms": 30000,
            "min_count": 10,
            "severity": "warning",
        },
        {"name": "analytics_backlog", "when": "delivery_backlog", "above_s": 300, "severity": "warning"},
    ],
}


def test_the_issue_example_parses():
    config = parse_alerts(ISSUE_EXAMPLE)
    assert config.evaluation_interval_s == 5
    assert [rule.name for rule in config.rules] == [
        "stems_failing",
        "stems_stalled",
        "api_errors",
        "render_slow",
        "analytics_backlog",
    ]
    failing, stalled, api, slow, backlog = config.rules
    assert (failing.operation, failing.window_s, failing.above, failing.min_count) == ("stem_separation", 300, 0.2, 5)
    assert (stalled.after_s, stalled.severity) == (600, "critical")
    assert (api.route, api.subject_label) == ("*", "route")
    assert (slow.above_ms, slow.severity) == (30000, "warning")
    assert (backlog.above_s, backlog.subject_label) == (300, None)


def test_no_section_means_the_default_rules_and_an_empty_list_none():
    assert parse_alerts(None).rules == DEFAULT_RULES
    assert parse_alerts({"evaluation_interval_s": 2}).rules == DEFAULT_RULES
    assert parse_alerts({"rules": []}).rules == ()


def test_default_rules_cover_the_operations_the_api_and_delivery():
    kinds = {(rule.when, rule.operation or rule.route) for rule in DEFAULT_RULES}
    for operation in ("stem_separation", "audio_analysis", "render", "file_upload"):
        assert ("failure_rate", operation) in kinds
    assert ("http_error_rate", "*") in kinds
    assert ("stalled", "stem_separation") in kinds and ("stalled", "render") in kinds
    assert any(rule.when == "delivery_backlog" for rule in DEFAULT_RULES)
    assert ("queue_age", "*") in kinds
    table = default_rules_table()
    assert len(table) == len(DEFAULT_RULES)
    assert all(row["rule"] and row["condition"] and row["why"] for row in table)
    markdown = default_rules_markdown()
    assert markdown.count("\n") == len(DEFAULT_RULES) + 2 and "| `api_5xx` | critical |" in markdown
    assert table[0]["condition"].startswith("failed / (completed + failed) of `stem_separation` > 0.4 over 60 s")


def test_options_labels_and_links():
    config = parse_alerts(
        {
            "links": {"sentry": "https://sentry.example/traces/{trace_id}"},
            "rules": [
                {
                    "name": "a",
                    "when": "stalled",
                    "operation": "*",
                    "after_s": 60,
                    "severity": "info",
                    "for_s": 10,
                    "repeat_interval_s": 0,
                    "keep_firing_for_s": 0,
                    "labels": {"team": "audio"},
                },
                {
                    "name": "b",
                    "when": "delivery_backlog",
                    "above_s": 1,
                    "severity": "info",
                    "links": {"posthog": "https://posthog.example/{trace_id}"},
                },
            ],
        }
    )
    a, b = config.rules
    assert (a.for_s, a.repeat_interval_s, a.keep_firing_for_s, a.labels) == (10, 0, 0, (("team", "audio"),))
    assert a.links == (("sentry", "https://sentry.example/traces/{trace_id}"),)
    assert b.links == (("posthog", "https://posthog.example/{trace_id}"),)


def _rule(**fields) -> dict:
    base = {"name": "r", "when": "failure_rate", "operation": "x", "window_s": 60, "above": 0.5, "severity": "critical"}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([1], "alerts: must be a mapping"),
        ({"rule": []}, "alerts.rule: unknown key (expected one of: evaluation_interval_s, rules, links)"),
        ({"evaluation_interval_s": 0}, "alerts.evaluation_interval_s: must be a number > 0, got 0"),
        ({"evaluation_interval_s": "5"}, "alerts.evaluation_interval_s: must be a number > 0, got '5'"),
        ({"rules": {}}, "alerts.rules: must be a list (an empty list turns the default rules off)"),
        ({"rules": ["x"]}, "alerts.rules[0]: must be a mapping"),
        (
            {"rules": [_rule(when="error_rate")]},
            "alerts.rules[0].when: must be one of: failure_rate, stalled, http_error_rate, latency_p95, "
            "delivery_backlog, queue_age (got 'error_rate')",
        ),
        ({"rules": [_rule(), _rule(window_s=-1)]}, "alerts.rules[1].window_s: must be a number > 0, got -1"),
        ({"rules": [_rule(window_s=True)]}, "alerts.rules[0].window_s: must be a number > 0, got True"),
        ({"rules": [_rule(window_s=None)]}, "alerts.rules[0].window_s: is required for when: failure_rate"),
        ({"rules": [_rule(name=None)]}, "alerts.rules[0].name: is required for when: failure_rate"),
        ({"rules": [_rule(operation=None)]}, "alerts.rules[0].operation: is required for when: failure_rate"),
        (
            {"rules": [_rule(operation="")]},
            'alerts.rules[0].operation: must be a non-empty string ("*" = each on its own)',
        ),
        (
            {"rules": [_rule(severity="page")]},
            "alerts.rules[0].severity: must be one of: critical, warning, info (got 'page')",
        ),
        ({"rules": [_rule(above=1.5)]}, "alerts.rules[0].above: is a share: must be >= 0 and < 1, got 1.5"),
        ({"rules": [_rule(min_count=2.5)]}, "alerts.rules[0].min_count: must be an integer > 0, got 2.5"),
        (
            {"rules": [_rule(after_s=5)]},
            "alerts.rules[0].after_s: unknown key (expected one of: name, when, severity, for_s, "
            "repeat_interval_s, keep_firing_for_s, labels, links, operation, window_s, above, min_count, "
            "ignore_error_types)",
        ),
        ({"rules": [_rule(), _rule()]}, "alerts.rules[1].name: duplicate rule name 'r'"),
        (
            {"rules": [_rule(name="bad name")]},
            "alerts.rules[0].name: 'bad name' is not a valid rule name (letters, digits, _ : . -)",
        ),
        ({"rules": [_rule(labels={"severity": "x"})]}, "alerts.rules[0].labels.severity: is set by the rule itself"),
        ({"rules": [_rule(labels={"team": 1})]}, "alerts.rules[0].labels.team: must be a non-empty string"),
        ({"rules": [_rule(links={"s": "ftp://x"})]}, "alerts.rules[0].links.s: must be an http(s) URL template"),
        (
            {"rules": [_rule(ignore_error_types="empty_file")]},
            "alerts.rules[0].ignore_error_types: must be a list of non-empty strings",
        ),
        ({"rules": [_rule(for_s=-1)]}, "alerts.rules[0].for_s: must be a number >= 0, got -1"),
        (
            {"rules": [{"name": "s", "when": "stalled", "operation": "x", "severity": "info"}]},
            "alerts.rules[0].after_s: is required for when: stalled",
        ),
        (
            {"rules": [{"name": "h", "when": "http_error_rate", "window_s": 1, "above": 0.1, "severity": "info"}]},
            "alerts.rules[0].route: is required for when: http_error_rate",
        ),
        (
            {"rules": [{"name": "l", "when": "latency_p95", "operation": "x", "window_s": 1, "severity": "info"}]},
            "alerts.rules[0].above_ms: is required for when: latency_p95",
        ),
        (
            {"rules": [{"name": "q", "when": "queue_age", "above_s": 60, "severity": "info"}]},
            "alerts.rules[0].operation: is required for when: queue_age",
        ),
        (
            {"rules": [{"name": "d", "when": "delivery_backlog", "severity": "info"}]},
            "alerts.rules[0].above_s: is required for when: delivery_backlog",
        ),
    ],
)
def test_errors_name_the_key(section, message):
    with pytest.raises(ConfigError) as info:
        parse_alerts(section)
    assert str(info.value) == message
