"""The ``alerts:`` section of ``COLLECTOR_CONFIG``: rules the collector evaluates, validated up front.

Each rule names one condition over what the collector already receives (see docs/architecture.md,
"Alerting")::

    alerts:
      evaluation_interval_s: 5
      links: {sentry: "https://sentry.example/traces/{trace_id}"}   # optional, every rule
      rules:
        - {name: stems_failing, when: failure_rate, operation: stem_separation, window_s: 300, above: 0.2,
           min_count: 5, severity: critical}
        - {name: stems_stalled, when: stalled, operation: stem_separation, after_s: 600, severity: critical}
        - {name: api_errors, when: http_error_rate, route: "*", window_s: 300, above: 0.05, min_count: 20,
           severity: critical}
        - {name: render_slow, when: latency_p95, operation: render, window_s: 600, above_ms: 30000,
           min_count: 10, severity: warning}
        - {name: analytics_backlog, when: delivery_backlog, above_s: 300, severity: warning}
        - {name: jobs_waiting, when: queue_age, operation: "*", above_s: 300, severity: critical}

``route`` of ``http_error_rate``: ``"*"`` each route on its own, ``/billing/webhook`` one route, and a
pattern ending in ``*`` (``/projects*``, ``/*``) all the routes it prefixes counted together as one.

``queue_age`` reads the api's gauge ``phonoglyph.jobs.oldest_queued_age`` (by job kind, which is the
operation's name): a dead worker runs no operation at all, so only the queue shows it.

``failure_rate`` also takes ``ignore_error_types`` (a list of ``error_type`` values that count
neither as failed nor as completed: the caller's mistakes).

Every rule also takes ``for_s`` (the condition must hold that long before the alert fires),
``repeat_interval_s`` (re-notify a still-firing alert that often; 0 = never), ``keep_firing_for_s``
(flap damping: a firing alert resolves only once its condition has been false that long), ``labels``
(extra string labels on the notifications) and ``links`` (URL templates with ``{trace_id}``, filled
with the alert's example trace ids). Unknown keys, wrong types, a field missing for the rule's kind and
duplicate names are errors naming the key, like the rest of the file. Without the section the
``DEFAULT_RULES`` below apply; ``alerts: {rules: []}`` turns alerting off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from collector.config import ConfigError

__all__ = [
    "DEFAULT_RULES",
    "KINDS",
    "SEVERITIES",
    "AlertsConfig",
    "Rule",
    "default_rules_markdown",
    "default_rules_table",
    "fill_link",
    "parse_alerts",
]

KINDS = ("failure_rate", "stalled", "http_error_rate", "latency_p95", "delivery_backlog", "queue_age")
SEVERITIES = ("critical", "warning", "info")
ALL = "*"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.-]{0,99}$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_RESERVED_LABELS = frozenset({"alertname", "severity", "operation", "route"})
_COMMON = ("name", "when", "severity", "for_s", "repeat_interval_s", "keep_firing_for_s", "labels", "links")
# per kind: (required fields, optional fields) besides the common ones
_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "failure_rate": (("operation", "window_s", "above"), ("min_count", "ignore_error_types")),
    "stalled": (("operation", "after_s"), ("above",)),
    "http_error_rate": (("route", "window_s", "above"), ("min_count",)),
    "latency_p95": (("operation", "window_s", "above_ms"), ("min_count",)),
    "delivery_backlog": (("above_s",), ()),
    "queue_age": (("operation", "above_s"), ()),
}
DEFAULT_EVALUATION_INTERVAL_S = 5.0
DEFAULT_KEEP_FIRING_FOR_S = 60.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


@dataclass(frozen=True)
class Rule:
    """One validated rule. ``operation``/``route`` is ``"*"`` for "each on its own", None when not used."""

    name: str
    when: str
    severity: str
    operation: str | None = None
    route: str | None = None
    window_s: float = 0.0
    above: float = 0.0
    above_ms: float = 0.0
    above_s: float = 0.0
    after_s: float = 0.0
    min_count: int = 1
    for_s: float = 0.0
    repeat_interval_s: float = DEFAULT_REPEAT_INTERVAL_S
    keep_firing_for_s: float = DEFAULT_KEEP_FIRING_FOR_S
    labels: tuple[tuple[str, str], ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    ignore_error_types: frozenset[str] = frozenset()
    why: str = ""

    @property
    def subject_label(self) -> str | None:
        """The label that tells this rule's instances apart: ``operation``, ``route`` or none."""
        if self.when == "http_error_rate":
            return "route"
        if self.when == "delivery_backlog":
            return None
        return "operation"

    def condition(self) -> str:
        """The rule as one line of text (README table, summaries)."""
        subject = self.operation if self.subject_label == "operation" else self.route
        each = "each operation" if subject == ALL and self.subject_label == "operation" else "each route"
        target = each if subject == ALL else f"`{subject}`"
        if self.when == "http_error_rate" and subject and subject != ALL and subject.endswith(ALL):
            target = f"all routes under `{subject[:-1]}` together"
        hold = f", for {_fmt(self.for_s)} s" if self.for_s else ""
        if self.when == "failure_rate":
            text = (
                f"failed / (completed + failed) of {target} > {_fmt(self.above)} over {_fmt(self.window_s)} s"
                f" (at least {self.min_count} outcomes)"
            )
            if self.ignore_error_types:
                text += f"; the caller's mistakes ({', '.join(sorted(self.ignore_error_types))}) not counted"
        elif self.when == "stalled":
            text = f"a start of {target} with no outcome after {_fmt(self.after_s)} s"
        elif self.when == "http_error_rate":
            text = (
                f"5xx share of {target} > {_fmt(self.above)} over {_fmt(self.window_s)} s"
                f" (at least {self.min_count} requests)"
            )
        elif self.when == "latency_p95":
            text = (
                f"p95 processing time of {target} > {_fmt(self.above_ms)} ms over {_fmt(self.window_s)} s"
                f" (at least {self.min_count} outcomes)"
            )
        elif self.when == "queue_age":
            kind = "every job kind" if subject == ALL else f"`{subject}` jobs"
            text = f"the oldest queued job of {kind} has waited more than {_fmt(self.above_s)} s"
        else:
            text = f"oldest undelivered analytics event older than {_fmt(self.above_s)} s"
        return text + hold


@dataclass(frozen=True)
class AlertsConfig:
    evaluation_interval_s: float = DEFAULT_EVALUATION_INTERVAL_S
    rules: tuple[Rule, ...] = ()
    links: tuple[tuple[str, str], ...] = ()


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_OPERATIONS = ("stem_separation", "audio_analysis", "render", "file_upload")


# error.type of failures that are the caller's mistake (the api answers 4xx): a flood of bad uploads or
# of renders without credits is noise, not an incident (services/api/uploads.py, routes/renders.py)
_CALLER_ERRORS = {
    "file_upload": frozenset(
        {
            "unsupported_media_type",
            "file_too_large",
            "empty_file",
            "duration_too_long",
            "not_audio",
            "corrupt_audio",
            "empty_audio",
            "unsupported_encoding",
        }
    ),
    "render": frozenset({"insufficient_credits"}),
}


def _default_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for operation in _OPERATIONS:
        rules.append(
            Rule(
                name=f"{operation}_failing",
                when="failure_rate",
                operation=operation,
                window_s=60,
                above=0.4,
                min_count=8,
                ignore_error_types=_CALLER_ERRORS.get(operation, frozenset()),
                severity="critical",
                why=(
                    "a surge (most attempts failing) fires within a minute; a steady 2-5 % of failures "
                    "would need 4 of 8 to fail at once, a quiet minute never fires, and the caller's "
                    "mistakes (4xx) never count"
                ),
            )
        )
    rules.append(
        Rule(
            name="api_5xx",
            when="http_error_rate",
            route=ALL,
            window_s=60,
            above=0.2,
            min_count=10,
            severity="critical",
            why="a route answering 5xx (a crash, an unconfigured dependency) pages; 4xx floods never count",
        )
    )
    rules.append(
        Rule(
            name="api_5xx_total",
            when="http_error_rate",
            route="/*",
            window_s=60,
            above=0.15,
            min_count=40,
            severity="critical",
            why="5xx spread over many routes, each too quiet for its own rule; 4xx floods only add to the total",
        )
    )
    for operation, after_s in (("stem_separation", 300), ("audio_analysis", 300), ("render", 300)):
        rules.append(
            Rule(
                name=f"{operation}_stalled",
                when="stalled",
                operation=operation,
                after_s=after_s,
                severity="critical",
                why=(
                    "a job started and never finished (worker killed or deadlocked); several times the "
                    "worker's lease, so a job another worker picks up again finishes before it fires"
                ),
            )
        )
    for operation, above_ms in (("stem_separation", 120_000), ("render", 30_000)):
        rules.append(
            Rule(
                name=f"{operation}_slow",
                when="latency_p95",
                operation=operation,
                window_s=600,
                above_ms=above_ms,
                min_count=5,
                severity="warning",
                why=(
                    "a latency regression, from 5 outcomes in 10 minutes (a slow operation runs few times); "
                    "the slowest outcome of the window is never its p95, so one slow job never fires"
                ),
            )
        )
    rules.append(
        Rule(
            name="jobs_waiting",
            when="queue_age",
            operation=ALL,
            above_s=300,
            severity="critical",
            why=(
                "no worker is taking jobs (dead, not restarted): nothing starts, so only the queue shows it; "
                "a worker restart takes seconds"
            ),
        )
    )
    rules.append(
        Rule(
            name="analytics_backlog",
            when="delivery_backlog",
            above_s=300,
            severity="warning",
            why="analytics are not reaching PostHog (down, key revoked); a collector restart drains in seconds",
        )
    )
    return tuple(rules)


DEFAULT_RULES: tuple[Rule, ...] = _default_rules()


def default_rules_table() -> list[dict[str, str]]:
    """The default rules as rows (rule, severity, condition, why) for the README's table."""
    return [
        {"rule": rule.name, "severity": rule.severity, "condition": rule.condition(), "why": rule.why}
        for rule in DEFAULT_RULES
    ]


def default_rules_markdown() -> str:
    """The default rules as a Markdown table (rule, condition, why), as the README shows them."""
    lines = ["| rule | severity | condition | why |", "| --- | --- | --- | --- |"]
    for row in default_rules_table():
        lines.append(f"| `{row['rule']}` | {row['severity']} | {row['condition']} | {row['why']} |")
    return "\n".join(lines) + "\n"


def fill_link(template: str, trace_id: str) -> str:
    """A link template with its ``{trace_id}`` filled."""
    return template.replace("{trace_id}", trace_id)


# -- parsing ------------------------------------------------------------------------------------


def _known(section: dict, keys: tuple[str, ...], prefix: str) -> None:
    for key in section:
        if key not in keys:
            raise ConfigError(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(keys)})")


def _positive(value: Any, key: str, *, allow_zero: bool = False, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(key, f"must be {kind} {bound}, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {kind} {bound}, got {value!r}")
    return value


def _string_map(value: Any, key: str, *, label_names: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping of names to strings")
    items = []
    for name, text in value.items():
        if not isinstance(name, str) or (label_names and not _LABEL.match(name)) or not name:
            raise ConfigError(f"{key}.{name}", "is not a valid name (letters, digits, _)")
        if label_names and name in _RESERVED_LABELS:
            raise ConfigError(f"{key}.{name}", "is set by the rule itself")
        if not isinstance(text, str) or not text:
            raise ConfigError(f"{key}.{name}", "must be a non-empty string")
        if not label_names and not text.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.{name}", "must be an http(s) URL template")
        items.append((name, text))
    return tuple(items)


def _rule(raw: Any, key: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a mapping")
    when = raw.get("when")
    if when not in KINDS:
        raise ConfigError(f"{key}.when", f"must be one of: {', '.join(KINDS)} (got {when!r})")
    required, optional = _FIELDS[when]
    _known(raw, _COMMON + required + optional, f"{key}.")
    for name in ("name", "severity", *required):
        if name not in raw:
            raise ConfigError(f"{key}.{name}", f"is required for when: {when}")
    name = raw["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{key}.name", f"{name!r} is not a valid rule name (letters, digits, _ : . -)")
    severity = raw["severity"]
    if severity not in SEVERITIES:
        raise ConfigError(f"{key}.severity", f"must be one of: {', '.join(SEVERITIES)} (got {severity!r})")
    values: dict[str, Any] = {"name": name, "when": when, "severity": severity}
    for subject in ("operation", "route"):
        if subject in raw:
            text = raw[subject]
            if not isinstance(text, str) or not text:
                raise ConfigError(f"{key}.{subject}", 'must be a non-empty string ("*" = each on its own)')
            values[subject] = text
    for number in ("window_s", "above_ms", "above_s", "after_s", "for_s", "repeat_interval_s", "keep_firing_for_s"):
        if number in raw:
            zero_ok = number in ("for_s", "repeat_interval_s", "keep_firing_for_s")
            values[number] = float(_positive(raw[number], f"{key}.{number}", allow_zero=zero_ok))
    if "above" in raw:
        above = _positive(raw["above"], f"{key}.above", allow_zero=True)
        if when in ("failure_rate", "http_error_rate") and above >= 1:
            raise ConfigError(f"{key}.above", f"is a share: must be >= 0 and < 1, got {above!r}")
        values["above"] = float(above)
    if "min_count" in raw:
        values["min_count"] = _positive(raw["min_count"], f"{key}.min_count", integer=True)
    if "ignore_error_types" in raw:
        types = raw["ignore_error_types"]
        if not isinstance(types, list) or not all(isinstance(item, str) and item for item in types):
            raise ConfigError(f"{key}.ignore_error_types", "must be a list of non-empty strings")
        values["ignore_error_types"] = frozenset(types)
    if "labels" in raw:
        values["labels"] = _string_map(raw["labels"], f"{key}.labels", label_names=True)
    if "links" in raw:
        values["links"] = _string_map(raw["links"], f"{key}.links", label_names=False)
    return Rule(**values)


def parse_alerts(value: Any) -> AlertsConfig:
    """The ``alerts:`` section → ``AlertsConfig``; None (no section) → the default rules."""
    if value is None:
        return AlertsConfig(rules=DEFAULT_RULES)
    if not isinstance(value, dict):
        raise ConfigError("alerts", "must be a mapping")
    _known(value, ("evaluation_interval_s", "rules", "links"), "alerts.")
    interval = DEFAULT_EVALUATION_INTERVAL_S
    if "evaluation_interval_s" in value:
        interval = float(_positive(value["evaluation_interval_s"], "alerts.evaluation_interval_s"))
    links = _string_map(value["links"], "alerts.links", label_names=False) if "links" in value else ()
    raw_rules = value.get("rules", None)
    if "rules" not in value:
        rules = DEFAULT_RULES
    else:
        if not isinstance(raw_rules, list):
            raise ConfigError("alerts.rules", "must be a list (an empty list turns the default rules off)")
        parsed: list[Rule] = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_rules):
            rule = _rule(raw, f"alerts.rules[{index}]")
            if rule.name in seen:
                raise ConfigError(f"alerts.rules[{index}].name", f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            parsed.append(rule)
        rules = tuple(parsed)
    if links:
        rules = tuple(rule if rule.links else Rule(**{**rule.__dict__, "links": links}) for rule in rules)
    return AlertsConfig(evaluation_interval_s=interval, rules=rules, links=links)
