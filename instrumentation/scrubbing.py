"""PII scrubbing policy: one policy for spans, event records, Sentry events and PostHog properties.

A :class:`Scrubber` replaces the value of sensitive keys (passwords, tokens, cookies, card data...)
and sensitive values inside any string (bearer tokens, JWTs, Luhn-valid card numbers, e-mail
addresses, ``token=`` style parameters in URLs and query strings). It records *where* it scrubbed
(a path such as ``attributes.http.request.header.authorization``), never *what*.

Identity and correlation keys (``user.id``, ``session.id``, ``phonoglyph.*.id``, trace and span
ids) are never scrubbed. Clean input is returned as the very same object, so the common case costs
a few substring checks per string (or one set lookup for a string seen before) and allocates nothing.

This module is pure Python (no OpenTelemetry import): the instrumentation's OTel adapters
(``instrumentation._internal.otel_scrubbing``) and the collector's scrub processor both use it. See
docs/architecture.md, "Scrubbing".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from instrumentation import semconv

__all__ = [
    "KEY_PATTERNS",
    "MAX_MEMOISED_KEYS",
    "MAX_MEMOISED_STRINGS",
    "MAX_MEMOISED_STRING_CHARS",
    "MAX_STRING_CHARS",
    "SAFE_KEYS",
    "SCRUBBED",
    "SCRUBBED_ATTRIBUTE",
    "Scrubber",
    "ScrubbingConfig",
]

SCRUBBED: Final = "[Scrubbed]"
"""What a scrubbed value (or the scrubbed part of a string) is replaced with."""
SCRUBBED_ATTRIBUTE: Final = "phonoglyph.scrubbed"
"""Attribute listing the scrubbed paths of a span or event record (values are never recorded)."""

MAX_STRING_CHARS: Final = 4096
""":meth:`Scrubber.scrub_properties` cuts a longer top-level string to this many characters (plus
``…``) before scrubbing it: scrubbing time grows with the length of the text, and an analytics
property that long carries no meaning."""

KEY_PATTERNS: Final = (
    r"passw(?:or)?d|passwd|^pass$|[-_.]pass$|pwd",
    r"secret",
    r"token",
    r"authori[sz]ation|^auth$|[-_.]auth$|^x-auth",
    r"api[-_.]?key|access[-_.]?key",
    r"cookie",
    r"sessionid|session[-_.]?(?:key|secret|token)",
    r"card[-_.]?(?:number|num|no)$|credit[-_.]?card|^cc[-_.]?(?:number|num)?$|^pan$",
    r"^cvv2?$|^cvc2?$|[-_.]cvv2?$|[-_.]cvc2?$",
    r"iban",
    r"private[-_.]?key",
    r"credential",
)
"""Sensitive keys, searched case-insensitively in the key itself (not the path)."""

SAFE_KEYS: Final = frozenset(
    {
        semconv.USER_ID,
        semconv.SESSION_ID,
        semconv.USER_GUEST,
        semconv.EVENT_ID,
        SCRUBBED_ATTRIBUTE,
        "trace_id",
        "span_id",
        "parent_span_id",
        "trace.id",
        "span.id",
        "traceId",
        "spanId",
        "parentSpanId",
        "$session_id",
        "distinct_id",
        "uuid",
    }
)
"""Identity and correlation keys: never scrubbed, neither by key nor by value."""
_SAFE_KEY_PATTERN: Final = re.compile(r"^phonoglyph\.[a-z0-9_.]*id$")
_SAFE, _SENSITIVE, _VALUE = 0, 1, 2
MAX_MEMOISED_KEYS: Final = 4096
"""Bound of the memo of key verdicts (cleared when full)."""
MAX_MEMOISED_STRINGS: Final = 8192
"""Bound of each memo of short strings (cleared when full)."""
MAX_MEMOISED_STRING_CHARS: Final = 256
"""Only strings up to this length are memoised (span names, routes, methods, user agents repeat)."""

_NAME_CHAR: Final = r"[^=&#\s?;,:\"'{}()\[\]]"
_PARAMETER_NAMES: Final = (
    rf"{_NAME_CHAR}*(?:passw(?:or)?d|passwd|pwd|secret|token){_NAME_CHAR}*"
    rf"|{_NAME_CHAR}*(?:key|auth|authorization|signature|sessionid|session_key)"
)
"""Names whose value is scrubbed in ``name=value`` / ``name: value`` text: query strings, form
bodies, URLs, log lines, JSON or source code quoted into a message."""
_PARAMETER_START: Final = r"(?:(?<=[?&;,\s{(\"'])|^)"
_PARAMETER_VALUE: Final = r"(?:(?:bearer|basic|token)[ \t]+)?(?:\"[^\"]+\"|'[^']+'|[^&;,#\s\"'}]+)"
_DEFAULT_VALUE_RULES: Final = (
    # (needles, pattern, regex flags, replacement). A rule runs only on text whose lower-case form
    # contains one of its needles (every match of the pattern does): clean text costs a few
    # substring checks, not a regex scan per rule.
    # bearer/basic credentials in a header value or a message: keep the scheme
    (("bearer", "basic"), r"\b(bearer|basic)[ \t]+[a-z0-9\-._~+/]{8,}=*", re.IGNORECASE, r"\1 " + SCRUBBED),
    # "token <credential>": only credential-like words (a digit, 12+ chars), not "token refreshed"
    (("token",), r"\b(token)[ \t]+(?=[a-z0-9\-._~+/]*\d)[a-z0-9\-._~+/]{12,}=*", re.IGNORECASE, r"\1 " + SCRUBBED),
    # JSON Web Tokens (the header segment always starts with base64url '{"')
    (("eyj",), r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", 0, SCRUBBED),
    # credentials in a URL: scheme://user:password@host
    (("@",), r"(?<=://)[^/\s:@]+:[^/\s@]+@", 0, SCRUBBED + "@"),
    # sensitive parameters and assignments (?token=..., password: ..., "secret": "..."): keep the name
    (
        ("passw", "pwd", "secret", "token", "key", "auth", "signature", "session"),
        _PARAMETER_START + r"(" + _PARAMETER_NAMES + r")([\"']?[ \t]*[:=][ \t]*)" + _PARAMETER_VALUE,
        re.IGNORECASE,
        r"\1\2" + SCRUBBED,
    ),
    # OAuth codes and URL signatures: whole names in query strings only (status_code=500 is no secret)
    (
        ("code", "sig"),
        _PARAMETER_START + r"(code|auth_code|authorization_code|sig)(=)" + _PARAMETER_VALUE,
        re.IGNORECASE,
        r"\1\2" + SCRUBBED,
    ),
    # e-mail addresses; the lookbehind starts a match only where a run of local-part characters
    # starts, so a long run before an "@" costs one scan, not one per position
    (("@",), r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", 0, SCRUBBED),
)
_MIN_CARD_DIGITS: Final = 13
_CARD_NUMBER: Final = re.compile(r"\d(?<![\w-]\d)(?:[ -]?\d){12,18}(?![\w-])")
_SCALARS: Final = frozenset({int, float, bool, type(None), bytes})


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _scrub_card_number(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return SCRUBBED if 13 <= len(digits) <= 19 and _luhn_valid(digits) else match.group(0)


@dataclass(frozen=True)
class ScrubbingConfig:
    """Additions to the built-in policy; the built-in patterns always apply."""

    extra_key_patterns: tuple[str, ...] = ()
    """Regexes searched case-insensitively in each key (not its path): a match makes the key sensitive
    and its whole value is replaced."""

    extra_value_patterns: tuple[str, ...] = ()
    """Regexes searched case-insensitively in every string value: each match is replaced."""

    safe_keys: tuple[str, ...] = ()
    """Keys never scrubbed, neither by key nor by value, on top of :data:`SAFE_KEYS`."""

    @classmethod
    def from_env(cls) -> ScrubbingConfig:
        """``PHONOGLYPH_SCRUB_KEYS`` / ``PHONOGLYPH_SCRUB_VALUES``: comma-separated regexes. A variable
        with a pattern that does not compile is ignored with a warning naming it."""
        from instrumentation._internal import config  # the settings table, read only here

        return cls(
            extra_key_patterns=config.read(config.SCRUB_KEYS),
            extra_value_patterns=config.read(config.SCRUB_VALUES),
        )


class Scrubber:
    """Applies the scrubbing policy to strings and JSON-like values; regexes are compiled once, here.

    One scrubber may serve several threads: its memos are plain dicts and sets, only added to or
    cleared, and an entry lost to a race is recomputed.
    """

    def __init__(self, config: ScrubbingConfig | None = None) -> None:
        config = config or ScrubbingConfig()
        self.config = config
        self._sensitive_key = re.compile(
            "|".join(f"(?:{p})" for p in KEY_PATTERNS + config.extra_key_patterns), re.IGNORECASE
        )
        self._safe_keys = SAFE_KEYS | frozenset(config.safe_keys)
        self._value_rules = tuple(
            (needles, re.compile(pattern, flags), replacement)
            for needles, pattern, flags, replacement in _DEFAULT_VALUE_RULES
        )
        self._extra_value_rules = tuple(re.compile(p, re.IGNORECASE) for p in config.extra_value_patterns)
        self._key_verdicts: dict[str, int] = {}
        # short strings known to be clean (span names, routes, methods repeat endlessly); a string
        # that needed scrubbing is never remembered here
        self._clean_strings: set[str] = set()
        # scrub_properties: short property strings and their result, scrubbed or not
        self._property_strings: dict[str, str] = {}

    def is_safe_key(self, key: str) -> bool:
        """An identity or correlation key: never scrubbed, neither by key nor by value."""
        return self._key_verdict(key) == _SAFE

    def is_sensitive_key(self, key: str) -> bool:
        """A key whose whole value is replaced (unless empty or a boolean)."""
        return self._key_verdict(key) == _SENSITIVE

    def _key_verdict(self, key: str) -> int:
        """Safe, sensitive, or "look at the value"; memoised (attribute keys repeat endlessly)."""
        verdict = self._key_verdicts.get(key)
        if verdict is None:
            if key in self._safe_keys or _SAFE_KEY_PATTERN.match(key) is not None:
                verdict = _SAFE
            elif self._sensitive_key.search(key) is not None:
                verdict = _SENSITIVE
            else:
                verdict = _VALUE
            if len(self._key_verdicts) >= MAX_MEMOISED_KEYS:
                self._key_verdicts.clear()
            self._key_verdicts[key] = verdict
        return verdict

    def scrub_string(self, text: str) -> str:
        """``text`` with sensitive values replaced; the same object when nothing matched."""
        if text in self._clean_strings:
            return text
        lower = text.lower()
        result = text
        for needles, pattern, replacement in self._value_rules:
            for needle in needles:
                if needle in lower:
                    result = pattern.sub(replacement, result)
                    break
        for pattern in self._extra_value_rules:
            result = pattern.sub(SCRUBBED, result)
        if len(result) >= _MIN_CARD_DIGITS:
            result = _CARD_NUMBER.sub(_scrub_card_number, result)
        if result == text:
            if len(text) <= MAX_MEMOISED_STRING_CHARS:
                if len(self._clean_strings) >= MAX_MEMOISED_STRINGS:
                    self._clean_strings.clear()
                self._clean_strings.add(text)
            return text
        return result

    def scrub(self, value: Any, path: str = "") -> tuple[Any, list[str]]:
        """Scrub any JSON-like value recursively.

        Returns ``(value, paths)``: the original object when nothing matched (``paths`` empty),
        else a scrubbed copy and the paths of what was replaced.
        """
        paths: list[str] = []
        return self.scrub_value(value, path, paths), paths

    def scrub_properties(self, properties: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
        """Scrub one flat mapping of analytics properties (a PostHog event's), one of many in a row.

        Keys and many values (routes, services, user agents) repeat from one mapping to the next, so
        the result of scrubbing a short string is remembered (bounded, like the key verdicts). A
        top-level string longer than :data:`MAX_STRING_CHARS` is cut to that length plus ``…`` and
        counts as scrubbed; nested values are scrubbed whole, as :meth:`scrub` does.

        Returns ``(properties, [])`` (the same object) when nothing was scrubbed; else a new ``dict``
        whose :data:`SCRUBBED_ATTRIBUTE` lists the paths it already had, then the new ones, and the
        new paths.
        """
        changed: dict[str, Any] | None = None
        paths: list[str] = []
        verdicts = self._key_verdicts
        for key, value in properties.items():
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._key_verdict(key)
            if verdict == _SAFE:
                continue
            scrubbed: Any
            if verdict == _SENSITIVE:
                if value is None or value is True or value is False or value == "" or value == SCRUBBED:
                    continue
                scrubbed = SCRUBBED
                paths.append(key)
            elif isinstance(value, str):
                scrubbed = self._scrub_property_string(value)
                if scrubbed is value:
                    continue
                paths.append(key)
            elif isinstance(value, (dict, list, tuple)):
                scrubbed = self.scrub_value(value, key, paths)
                if scrubbed is value:
                    continue
            else:
                continue
            if changed is None:
                changed = dict(properties)
            changed[key] = scrubbed
        if changed is None:
            return properties, paths
        previous = changed.get(SCRUBBED_ATTRIBUTE) or ()
        changed[SCRUBBED_ATTRIBUTE] = list(dict.fromkeys((*previous, *paths)))
        return changed, paths

    def _scrub_property_string(self, text: str) -> str:
        if len(text) > MAX_MEMOISED_STRING_CHARS:
            if len(text) > MAX_STRING_CHARS:
                return self.scrub_string(text[:MAX_STRING_CHARS]) + "…"
            return self.scrub_string(text)
        memo = self._property_strings
        scrubbed = memo.get(text)
        if scrubbed is None:
            scrubbed = self.scrub_string(text)
            if len(memo) >= MAX_MEMOISED_STRINGS:
                memo.clear()
            memo[text] = scrubbed
        return text if scrubbed == text else scrubbed

    def scrub_value(self, value: Any, path: str, paths: list[str]) -> Any:
        """Scrub any JSON-like value recursively, appending the paths of what was replaced to ``paths``
        (a path starts with ``path``). Returns the original object when nothing matched, else a copy
        in which only the changed containers are new.

        For callers that scrub several parts of one record and list all their paths together.
        """
        kind = type(value)
        if kind is str:
            scrubbed = self.scrub_string(value)
            if scrubbed is not value:
                paths.append(path)
            return scrubbed
        if kind in _SCALARS:
            return value
        if isinstance(value, Mapping):
            return self._scrub_mapping(value, path, paths)
        if isinstance(value, (list, tuple)):
            items = None
            for index, item in enumerate(value):
                scrubbed = self.scrub_value(item, f"{path}[{index}]", paths)
                if scrubbed is not item:
                    if items is None:
                        items = list(value)
                    items[index] = scrubbed
            if items is None:
                return value
            return tuple(items) if isinstance(value, tuple) else items
        return value

    def _scrub_mapping(self, mapping: Mapping[Any, Any], path: str, paths: list[str]) -> Any:
        changed: dict[Any, Any] | None = None
        verdicts = self._key_verdicts
        for key, item in mapping.items():
            name = key if type(key) is str else str(key)
            verdict = verdicts.get(name)
            if verdict is None:
                verdict = self._key_verdict(name)
            if verdict == _SAFE:
                continue
            scrubbed: Any
            if verdict == _SENSITIVE:
                if item is None or item is True or item is False or item == "" or item == SCRUBBED:
                    continue
                scrubbed = SCRUBBED
                paths.append(f"{path}.{name}" if path else name)
            elif type(item) is str:
                scrubbed = self.scrub_string(item)
                if scrubbed is item:
                    continue
                paths.append(f"{path}.{name}" if path else name)
            elif type(item) in _SCALARS:
                continue
            else:
                scrubbed = self.scrub_value(item, f"{path}.{name}" if path else name, paths)
                if scrubbed is item:
                    continue
            if changed is None:
                changed = dict(mapping)
            changed[key] = scrubbed
        return mapping if changed is None else changed
