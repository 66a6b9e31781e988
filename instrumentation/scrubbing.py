"""PII scrubbing at the source: one policy for spans, event records and Sentry events.

A :class:`Scrubber` replaces the value of sensitive keys (passwords, tokens, cookies, card data...)
and sensitive values inside any string (bearer tokens, JWTs, Luhn-valid card numbers, e-mail
addresses, ``token=`` style parameters in URLs and query strings). It records *where* it scrubbed
(a path such as ``attributes.http.request.header.authorization``), never *what*.

Identity and correlation keys (``user.id``, ``session.id``, ``phonoglyph.*.id``, trace and span
ids) are never scrubbed. Clean input is returned as the very same object, so the common case costs
a few substring checks per string (or one set lookup for a string seen before) and allocates nothing.

:class:`ScrubbingSpanExporter` and :class:`ScrubbingLogExporter` wrap real exporters and scrub on
the export thread, never on the request's.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from instrumentation import semconv

SCRUBBED: Final = "[Scrubbed]"
SCRUBBED_ATTRIBUTE: Final = "phonoglyph.scrubbed"
"""Attribute listing the scrubbed paths of a span or event record (values are never recorded)."""

MAX_ATTRIBUTES: Final = 128
"""OTel's default attribute count limit: ``phonoglyph.scrubbed`` is added only below it."""

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
MAX_MEMOISED_STRINGS: Final = 8192
MAX_MEMOISED_STRING_CHARS: Final = 256

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
    # starts, so a long run before an "@" costs one scan, not one per position (was quadratic)
    (("@",), r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", 0, SCRUBBED),
)
MIN_CARD_DIGITS: Final = 13
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


def _split_env(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class ScrubbingConfig:
    """Extra patterns on top of the built-in policy (regexes, searched case-insensitively)."""

    extra_key_patterns: tuple[str, ...] = ()
    extra_value_patterns: tuple[str, ...] = ()
    safe_keys: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> ScrubbingConfig:
        """``PHONOGLYPH_SCRUB_KEYS`` / ``PHONOGLYPH_SCRUB_VALUES``: comma-separated regexes."""
        return cls(
            extra_key_patterns=_split_env("PHONOGLYPH_SCRUB_KEYS"),
            extra_value_patterns=_split_env("PHONOGLYPH_SCRUB_VALUES"),
        )


class Scrubber:
    """Applies the scrubbing policy to JSON-like values; regexes are compiled once, here."""

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
        # that needed scrubbing is never remembered
        self._clean_strings: set[str] = set()

    def is_safe_key(self, key: str) -> bool:
        return self._key_verdict(key) == _SAFE

    def is_sensitive_key(self, key: str) -> bool:
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
        if len(result) >= MIN_CARD_DIGITS:
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
        return self._scrub(value, path, paths), paths

    def scrub_attributes(
        self, attributes: Mapping[str, Any] | None, path: str = ""
    ) -> tuple[Mapping[str, Any] | None, list[str]]:
        """Scrub an attribute mapping: the same mapping when clean, else a scrubbed ``dict``."""
        if not attributes:
            return attributes, []
        return self.scrub(attributes, path)

    def _scrub(self, value: Any, path: str, paths: list[str]) -> Any:
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
                scrubbed = self._scrub(item, f"{path}[{index}]", paths)
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
                scrubbed = self._scrub(item, f"{path}.{name}" if path else name, paths)
                if scrubbed is item:
                    continue
            if changed is None:
                changed = dict(mapping)
            changed[key] = scrubbed
        return mapping if changed is None else changed


def _with_scrubbed_paths(attributes: Any, paths: list[str]) -> Any:
    if not paths or len(attributes or ()) >= MAX_ATTRIBUTES:
        return attributes
    result = dict(attributes or {})
    previous = result.get(SCRUBBED_ATTRIBUTE) or ()
    result[SCRUBBED_ATTRIBUTE] = tuple(dict.fromkeys((*previous, *paths)))
    return result


class _ScrubbedSpan(ReadableSpan):
    """A scrubbed copy that keeps the original's dropped counts."""

    def __init__(self, original: ReadableSpan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._original = original

    @property
    def dropped_attributes(self) -> int:
        return self._original.dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._original.dropped_events

    @property
    def dropped_links(self) -> int:
        return self._original.dropped_links


def _plain(attributes: Any) -> Any:
    """The dict inside the SDK's ``BoundedAttributes``: iterating it directly is several times faster
    than through the ``Mapping`` ABC (this runs for every exported span)."""
    inner = getattr(attributes, "_dict", None)
    return inner if type(inner) is dict else attributes


def _span_attributes(span: ReadableSpan) -> Any:
    return _plain(getattr(span, "_attributes", None) or span.attributes)


def scrub_span(span: ReadableSpan, scrubber: Scrubber) -> ReadableSpan:
    """The span itself when clean, else a scrubbed copy carrying ``phonoglyph.scrubbed``."""
    paths: list[str] = []
    name = scrubber.scrub_string(span.name)
    if name is not span.name:
        paths.append("name")
    status = span.status
    if status.description:
        description = scrubber.scrub_string(status.description)
        if description is not status.description:
            paths.append("status.description")
            status = Status(status.status_code, description)
    original_attributes = _span_attributes(span)
    attributes = (
        scrubber._scrub(original_attributes, "attributes", paths) if original_attributes else original_attributes
    )

    events: Sequence[Event] = span.events
    new_events: list[Event] | None = None
    for index, event in enumerate(events):
        original_event_attributes = _plain(event.attributes)
        event_attributes = (
            scrubber._scrub(original_event_attributes, f"events[{index}].attributes", paths)
            if original_event_attributes
            else original_event_attributes
        )
        if event_attributes is not original_event_attributes:
            if new_events is None:
                new_events = list(events)
            new_events[index] = Event(event.name, event_attributes, event.timestamp)
    if new_events is not None:
        events = tuple(new_events)

    links: Sequence[Link] = span.links
    new_links: list[Link] | None = None
    for index, link in enumerate(links):
        link_attributes = (
            scrubber._scrub(link.attributes, f"links[{index}].attributes", paths)
            if link.attributes
            else link.attributes
        )
        if link_attributes is not link.attributes:
            if new_links is None:
                new_links = list(links)
            new_links[index] = Link(link.context, link_attributes)
    if new_links is not None:
        links = tuple(new_links)

    if not paths:
        return span
    return _ScrubbedSpan(
        span,
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_with_scrubbed_paths(attributes, paths),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def scrub_log_record(record: ReadableLogRecord, scrubber: Scrubber) -> ReadableLogRecord:
    """The record itself when clean, else a scrubbed copy carrying ``phonoglyph.scrubbed``."""
    log_record = record.log_record
    paths: list[str] = []
    body = scrubber._scrub(log_record.body, "body", paths)
    attributes = (
        scrubber._scrub(log_record.attributes, "attributes", paths) if log_record.attributes else log_record.attributes
    )
    if not paths:
        return record
    scrubbed = copy.copy(log_record)
    scrubbed.body = body
    scrubbed.attributes = _with_scrubbed_paths(attributes, paths)
    return dataclasses.replace(record, log_record=scrubbed)


class ScrubbingSpanExporter(SpanExporter):
    """Exports scrubbed copies of spans through ``inner`` (clean spans pass through as they are)."""

    def __init__(self, inner: SpanExporter, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrubber = scrubber

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub_span(span, self.scrubber) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class ScrubbingLogExporter(LogRecordExporter):
    """Exports scrubbed copies of log/event records through ``inner``."""

    def __init__(self, inner: LogRecordExporter, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrubber = scrubber

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self.inner.export([scrub_log_record(record, self.scrubber) for record in batch])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
