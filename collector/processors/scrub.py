"""Re-scrub event properties with the shared policy (defense in depth behind the instrumentation).

The policy is the instrumentation's own (``instrumentation._internal.scrubbing``): the same
sensitive keys and values, the same safe identity keys (``$session_id``, ``trace_id``...). Scrubbed
paths are appended to the ``phonoglyph.scrubbed`` property; values are never recorded.

Properties repeat their keys and many of their values (routes, services, user agents) from one
event to the next, so the verdict on a key and the result of scrubbing a short string are
remembered in bounded memos; nested values go through ``Scrubber.scrub`` whole. A top-level string
longer than ``MAX_STRING_CHARS`` is cut to that length (its path is listed as scrubbed).
"""

from __future__ import annotations

from instrumentation._internal.scrubbing import SCRUBBED, SCRUBBED_ATTRIBUTE, Scrubber, ScrubbingConfig

_SAFE, _SENSITIVE, _CHECK = 0, 1, 2
_MEMO_ENTRIES = 8192
_MEMO_STRING_CHARS = 256
MAX_STRING_CHARS = 4096
"""Longer property strings are cut to this many characters (plus ``…``) before they are scrubbed: the
shared value patterns cost time quadratic in the length of a run of word characters."""


class ScrubProcessor:
    def __init__(self, config: ScrubbingConfig | None = None) -> None:
        self._scrubber = Scrubber(config if config is not None else ScrubbingConfig.from_env())
        self._key_verdicts: dict[str, int] = {}
        self._strings: dict[str, str] = {}

    def _verdict(self, key: str) -> int:
        verdict = self._key_verdicts.get(key)
        if verdict is None:
            scrubber = self._scrubber
            if scrubber.is_safe_key(key):
                verdict = _SAFE
            else:
                verdict = _SENSITIVE if scrubber.is_sensitive_key(key) else _CHECK
            if len(self._key_verdicts) >= _MEMO_ENTRIES:
                self._key_verdicts.clear()
            self._key_verdicts[key] = verdict
        return verdict

    def _string(self, text: str) -> str:
        if len(text) > _MEMO_STRING_CHARS:
            if len(text) > MAX_STRING_CHARS:
                return self._scrubber.scrub_string(text[:MAX_STRING_CHARS]) + "…"
            return self._scrubber.scrub_string(text)
        scrubbed = self._strings.get(text)
        if scrubbed is None:
            scrubbed = self._scrubber.scrub_string(text)
            if len(self._strings) >= _MEMO_ENTRIES:
                self._strings.clear()
            self._strings[text] = scrubbed
        return text if scrubbed == text else scrubbed

    def process(self, events: list[dict]) -> int:
        """Scrub each event's properties in place; returns how many events had something scrubbed."""
        changed_events = 0
        for event in events:
            properties = event["properties"]
            changed: dict | None = None
            paths: list[str] = []
            for key, value in properties.items():
                verdict = self._verdict(key)
                if verdict == _SAFE:
                    continue
                if verdict == _SENSITIVE:
                    if value is None or value == "" or isinstance(value, bool) or value == SCRUBBED:
                        continue
                    scrubbed = SCRUBBED
                    paths.append(key)
                elif isinstance(value, str):
                    scrubbed = self._string(value)
                    if scrubbed is value:
                        continue
                    paths.append(key)
                elif isinstance(value, (dict, list, tuple)):
                    scrubbed, nested = self._scrubber.scrub(value, key)
                    if not nested:
                        continue
                    paths.extend(nested)
                else:
                    continue
                if changed is None:
                    changed = dict(properties)
                changed[key] = scrubbed
            if changed is not None:
                previous = changed.get(SCRUBBED_ATTRIBUTE) or ()
                changed[SCRUBBED_ATTRIBUTE] = list(dict.fromkeys((*previous, *paths)))
                event["properties"] = changed
                changed_events += 1
        return changed_events
