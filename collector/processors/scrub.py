"""Re-scrub event properties with the shared policy (defense in depth behind the instrumentation).

The policy is the instrumentation's own (:mod:`instrumentation.scrubbing`): the same sensitive keys
and values, the same safe identity keys (``$session_id``, ``trace_id``...). Scrubbed paths are
appended to the ``phonoglyph.scrubbed`` property; values are never recorded. A top-level string
longer than ``MAX_STRING_CHARS`` is cut to that length (its path is listed as scrubbed). See
docs/architecture.md, "Scrubbing".
"""

from __future__ import annotations

from typing import Any

from instrumentation.scrubbing import MAX_STRING_CHARS, Scrubber, ScrubbingConfig

__all__ = ["MAX_STRING_CHARS", "ScrubProcessor"]


class ScrubProcessor:
    """Scrubs the properties of PostHog events; one :class:`Scrubber` (and its memos) for all batches."""

    def __init__(self, config: ScrubbingConfig | None = None) -> None:
        self._scrubber = Scrubber(config if config is not None else ScrubbingConfig.from_env())

    def process(self, events: list[dict[str, Any]]) -> int:
        """Scrub each event's properties in place; returns how many events had something scrubbed."""
        scrub_properties = self._scrubber.scrub_properties
        changed_events = 0
        for event in events:
            properties = event["properties"]
            scrubbed, _paths = scrub_properties(properties)
            if scrubbed is not properties:
                event["properties"] = scrubbed
                changed_events += 1
        return changed_events
