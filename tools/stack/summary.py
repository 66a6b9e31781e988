"""The demo's summary: the events in the collector's local store (counts, funnel, failures, durations) and
the alerts the collector's rules fired during the demo's incident."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.alerting.engine import rfc3339
from collector.alerting.report import duration_text
from collector.exporters.local import FunnelStep, funnel
from tools.stack.supervisor import Stack

__all__ = [
    "FUNNEL_STEPS",
    "AlertEpisode",
    "FailedOperation",
    "Incident",
    "Summary",
    "alert_episodes",
    "detection",
    "percentile",
    "render_alerts_section",
    "render_summary",
    "summarize",
]

FUNNEL_STEPS = (
    "user_signed_up",
    "file_uploaded",
    "stem_separation_completed",
    "render_completed",
    "credits_purchased",
)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class FailedOperation:
    event: str
    error_type: str
    trace_id: str


@dataclass(frozen=True)
class Summary:
    events_per_name: dict[str, int]
    funnel: list[FunnelStep]
    failures: list[FailedOperation]
    durations_ms: dict[str, tuple[int, float, float]]  # operation: (count, p50, p95)


def summarize(events: Sequence[Mapping], funnel_steps: Sequence[str] = FUNNEL_STEPS) -> Summary:
    """The summary of stored events (``phonoglyph-collector events --json`` lines).

    When no ``render_completed`` arrived but a ``render_started`` did, the funnel uses the start, so a run
    whose renders all failed still shows how far its users got.
    """
    names = Counter(event["event"] for event in events)
    steps = list(funnel_steps)
    if "render_completed" in steps and not names["render_completed"] and names["render_started"]:
        steps[steps.index("render_completed")] = "render_started"
    failures = [
        FailedOperation(
            event["event"],
            str(event["properties"].get("error_type") or "unknown"),
            str(event["properties"].get("trace_id") or "-"),
        )
        for event in events
        if event["event"].endswith("_failed")
    ]
    durations: dict[str, list[float]] = defaultdict(list)
    for event in events:
        name = event["event"]
        value = event["properties"].get("processing_time_ms")
        if value is not None and (name.endswith("_completed") or name.endswith("_failed")):
            durations[name.rsplit("_", 1)[0]].append(float(value))
    return Summary(
        events_per_name=dict(sorted(names.items())),
        funnel=funnel(events, steps),
        failures=failures,
        durations_ms={
            operation: (len(values), percentile(values, 0.5), percentile(values, 0.95))
            for operation, values in sorted(durations.items())
        },
    )


@dataclass(frozen=True)
class Incident:
    """What the demo broke on purpose, when, and the rule that must catch it (epoch seconds)."""

    what: str
    alertname: str
    started_at: float
    ended_at: float | None = None


@dataclass(frozen=True)
class AlertEpisode:
    """One alert instance from firing to resolved (``resolved_at`` None: still firing)."""

    alertname: str
    severity: str
    subject: str  # "operation=stem_separation", "route=/projects", "-" for a rule without a subject
    fired_at: float
    resolved_at: float | None
    value_text: str  # the figure when it fired
    summary: str
    trace_ids: tuple[str, ...] = ()


def _subject(snapshot: Mapping[str, Any]) -> str:
    label = snapshot.get("subject_label")
    return f"{label}={snapshot.get('subject')}" if label else "-"


def alert_episodes(firing: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> list[AlertEpisode]:
    """Episodes, oldest first, from ``read_alerts``' snapshots: the history (newest first) pairs each firing
    with its resolution by (rule, subject, ``starts_at``); an alert still firing whose firing entry left
    the history comes from ``firing``."""
    episodes: dict[tuple[str, str, float], AlertEpisode] = {}
    for entry in [*reversed(history), *firing]:
        key = (entry["alertname"], str(entry.get("subject") or ""), float(entry["starts_at"]))
        known = episodes.get(key)
        resolved = entry.get("status") == "resolved" and entry.get("ends_at") is not None
        if known is None:
            episodes[key] = AlertEpisode(
                alertname=entry["alertname"],
                severity=entry["severity"],
                subject=_subject(entry),
                fired_at=float(entry["starts_at"]),
                resolved_at=float(entry["ends_at"]) if resolved else None,
                value_text=str(entry.get("value_text") or "n/a"),
                summary=str(entry.get("summary") or ""),
                trace_ids=tuple(entry.get("trace_ids") or ()),
            )
        elif resolved:
            episodes[key] = AlertEpisode(**{**known.__dict__, "resolved_at": float(entry["ends_at"])})
    return sorted(episodes.values(), key=lambda episode: (episode.fired_at, episode.alertname, episode.subject))


def detection(episodes: Sequence[AlertEpisode], incident: Incident) -> AlertEpisode | None:
    """The first episode of the incident's rule that fired once the incident had begun, or None."""
    return next((e for e in episodes if e.alertname == incident.alertname and e.fired_at >= incident.started_at), None)


def render_alerts_section(
    episodes: Sequence[AlertEpisode], incident: Incident | None, *, rules: str = "", max_traces: int = 3
) -> list[str]:
    """``== Alerts``: the incident, then each alert with its figure, when it fired and resolved, and how
    long after the incident began it fired."""
    lines = ["", f"== Alerts ({rules})" if rules else "== Alerts"]
    if incident is not None:
        until = f" to {rfc3339(incident.ended_at)}" if incident.ended_at is not None else ""
        lasted = (
            f" ({incident.ended_at - incident.started_at:.1f} s)" if incident.ended_at is not None else " (not ended)"
        )
        lines.append(f"  incident  {incident.what}")
        lines.append(f"            from {rfc3339(incident.started_at)}{until}{lasted}")
    if not episodes:
        lines.append("  (no alert fired)")
    for episode in episodes:
        lines.append(f"  {episode.severity:<8}  {episode.alertname}  {episode.subject}  value {episode.value_text}")
        fired = f"      fired     {rfc3339(episode.fired_at)}"
        if incident is not None:
            offset = episode.fired_at - incident.started_at
            fired += (
                f"  {offset:.1f} s after the incident began"
                if offset >= 0
                else f"  {-offset:.1f} s before the incident began (not caused by it)"
            )
        lines.append(fired)
        if episode.resolved_at is None:
            lines.append("      resolved  (still firing)")
        else:
            resolved = f"      resolved  {rfc3339(episode.resolved_at)}"
            resolved += f"  after {duration_text(episode.resolved_at - episode.fired_at)} firing"
            if incident is not None and incident.ended_at is not None and episode.resolved_at >= incident.ended_at:
                resolved += f", {episode.resolved_at - incident.ended_at:.1f} s after the incident ended"
            lines.append(resolved)
        if episode.summary:
            lines.append(f"      {episode.summary}")
        if episode.trace_ids:
            lines.append(f"      traces: {', '.join(episode.trace_ids[:max_traces])}")
    return lines


def render_summary(summary: Summary, stack: Stack, *, alerts: Sequence[str] = (), max_failures: int = 10) -> str:
    """The summary's text; ``alerts``: the ``== Alerts`` lines (``render_alerts_section``), after the
    processing times."""
    lines = ["", "== Events per name (PostHog events in the collector's local store)"]
    width = max((len(name) for name in summary.events_per_name), default=10)
    lines += [f"  {name:<{width}}  {count:>5}" for name, count in summary.events_per_name.items()]
    lines += ["", "== Funnel (distinct users, in order)"]
    for step in summary.funnel:
        lines.append(f"  {step.event:<27} {step.count:>4}   {step.conversion_from_first:6.1%}")
    lines += ["", f"== Failed operations: {len(summary.failures)}"]
    for error_type, count in Counter((f.event, f.error_type) for f in summary.failures).most_common():
        lines.append(f"  {error_type[0]:<27} {error_type[1]:<28} x{count}")
    for failure in summary.failures[:max_failures]:
        lines.append(f"    {failure.event:<25} {failure.error_type:<28} trace {failure.trace_id}")
    lines += ["", "== Processing time per operation (ms)"]
    lines.append(f"  {'operation':<20} {'count':>5} {'p50':>9} {'p95':>9}")
    for operation, (count, p50, p95) in summary.durations_ms.items():
        lines.append(f"  {operation:<20} {count:>5} {p50:>9.1f} {p95:>9.1f}")
    lines += alerts
    data_dir = stack.collector_data_dir
    lines += [
        "",
        "== Where the data lives",
        f"  events, outbox, dead letters, alerts  {data_dir}",
        f"  api/worker database, files            {stack.root / 'phonoglyph.db'}, {stack.root / 'data'}",
        f"  process logs                          {stack.logs_dir}/{{collector,api,worker}}.log",
        "",
        "== Inspect it",
        f"  export COLLECTOR_DATA_DIR={data_dir}",
        "  phonoglyph-collector events [--event NAME] [--json]",
        "  phonoglyph-collector funnel " + " ".join(step.event for step in summary.funnel),
        "  phonoglyph-collector stats",
        "  phonoglyph-collector alerts [--json]",
        "  phonoglyph-collector dead-letters list",
        "  (phonoglyph-collector is in .venv/bin; `make up` keeps the stack running)",
    ]
    return "\n".join(lines)
