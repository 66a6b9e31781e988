"""Re-scrub event properties with the shared policy (defense in depth behind the instrumentation).

The policy is the instrumentation's own (``instrumentation._internal.scrubbing``): the same
sensitive keys and values, the same safe identity keys (``$session_id``, ``trace_id``...). Scrubbed
paths are appended to the ``phonoglyph.scrubbed`` property; values are never recorded.
"""

from __future__ import annotations

from instrumentation._internal.scrubbing import SCRUBBED_ATTRIBUTE, Scrubber, ScrubbingConfig


class ScrubProcessor:
    def __init__(self, config: ScrubbingConfig | None = None) -> None:
        self._scrubber = Scrubber(config if config is not None else ScrubbingConfig.from_env())

    def process(self, events: list[dict]) -> int:
        """Scrub each event's properties in place; returns how many events had something scrubbed."""
        changed = 0
        for event in events:
            properties, paths = self._scrubber.scrub(event["properties"])
            if paths:
                previous = properties.get(SCRUBBED_ATTRIBUTE) or ()
                properties[SCRUBBED_ATTRIBUTE] = list(dict.fromkeys((*previous, *paths)))
                event["properties"] = properties
                changed += 1
        return changed
