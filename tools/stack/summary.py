"""The demo's summary of the events in the collector's local store: counts, funnel, failures, durations."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from collector.exporters.local import FunnelStep, funnel
from tools.stack.supervisor import Stack

__all__ = ["FUNNEL_STEPS", "FailedOperation", "Summary", "percentile", "render_summary", "summarize"]

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


def render_summary(summary: Summary, stack: Stack, *, max_failures: int = 10) -> str:
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
    data_dir = stack.collector_data_dir
    lines += [
        "",
        "== Where the data lives",
        f"  events, outbox, dead letters  {data_dir}",
        f"  api/worker database, files   {stack.root / 'phonoglyph.db'}, {stack.root / 'data'}",
        f"  process logs                  {stack.logs_dir}/{{collector,api,worker}}.log",
        "",
        "== Inspect it",
        f"  export COLLECTOR_DATA_DIR={data_dir}",
        "  phonoglyph-collector events [--event NAME] [--json]",
        "  phonoglyph-collector funnel " + " ".join(step.event for step in summary.funnel),
        "  phonoglyph-collector stats",
        "  phonoglyph-collector dead-letters list",
        "  (phonoglyph-collector is in .venv/bin; `make up` keeps the stack running)",
    ]
    return "\n".join(lines)
