"""Plain-text views of the alert state for ``phonoglyph-collector alerts`` and the demo's ``== Alerts``.

Pure functions over the snapshots that ``Alerting.firing()`` / ``history()`` (or ``read_alerts``) return,
so the CLI, the demo summary and tests print the same lines. ``--json`` output is the snapshots as they
are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collector.alerting.engine import rfc3339

__all__ = ["duration_text", "render_alerts"]


def duration_text(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h04m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _who(alert: Mapping[str, Any]) -> str:
    label = alert.get("subject_label")
    return f"{label}={alert.get('subject')}" if label else "-"


def render_alerts(firing: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]], *, now: float) -> str:
    """The firing alerts (with their summary and example traces), then the history, newest first."""
    lines = [f"== Firing ({len(firing)})"]
    if not firing:
        lines.append("  (none)")
    for alert in firing:
        lines.append(
            f"  {alert['severity']:<8} {alert['alertname']}  {_who(alert)}  since {rfc3339(alert['starts_at'])}"
            f" ({duration_text(now - alert['starts_at'])})  value {alert['value_text']}"
        )
        lines.append(f"      {alert['summary']}")
        if alert.get("trace_ids"):
            lines.append(f"      traces: {', '.join(alert['trace_ids'])}")
    lines.append(f"== History ({len(history)})")
    if not history:
        lines.append("  (none)")
    for entry in history:
        if entry["status"] == "resolved" and entry.get("ends_at") is not None:
            detail = f"after {duration_text(entry['ends_at'] - entry['starts_at'])}, last {entry['value_text']}"
        else:
            detail = f"value {entry['value_text']}"
        lines.append(
            f"  {rfc3339(entry['at'])}  {entry['status']:<8} {entry['severity']:<8} {entry['alertname']}"
            f"  {_who(entry)}  {detail}"
        )
    return "\n".join(lines) + "\n"
