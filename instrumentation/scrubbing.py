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
    "MAX_SCRUB_CHARS",
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

MAX_SCRUB_CHARS: Final = 1 << 20
"""Bound of the work of one call (a span, an event record, a Sentry event, one event's properties):
once the strings longer than :data:`MAX_MEMOISED_STRING_CHARS` have cost this many characters, the
next ones are replaced whole by :data:`SCRUBBED` (their paths recorded) instead of searched."""

KEY_PATTERNS: Final = (
    r"passw(?:or)?d|passwd|^pass$|[-_.]pass$|pwd",
    r"secret",
    r"token",
    r"authori[sz]ation|^auth$|[-_.]auth$|^x-auth",
    r"api[-_.]?key|access[-_.]?key",
    r"cookie",
    r"sessionid|session[-_.]?(?:key|secret|token)",
    r"csrf|xsrf",
    r"card[-_.]?(?:number|num|no)$|credit[-_.]?card|^cc[-_.]?(?:number|num)?$|^pan$",
    r"^cvv2?$|^cvc2?$|[-_.]cvv2?$|[-_.]cvc2?$",
    r"iban",
    r"private[-_.]?key",
    r"credential",
    r"signature",
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

_NAME_CHAR: Final = r"[^=&#\s?;,:\"'{}()\[\]\\]"
_PARAMETER_START: Final = r"(?:(?<=[?&;,\s{(\"'])|(?<=%3f)|(?<=%26)|^)"
_PARAMETER_NAME: Final = (
    # A lookahead that scans the name once (a lazy, bounded walk along one run of name characters),
    # then the name taken possessively: no backtracking into the run, whatever repeats in it.
    rf"(?=(?:{_NAME_CHAR}{{0,96}}?(?:passw|pwd|secret|token|cookie|csrf|xsrf|signature|credential)"
    rf"|{_NAME_CHAR}{{0,96}}?(?:key|auth|authorization|sessionid|session_key)(?!{_NAME_CHAR})"
    r"|(?:code|auth_code|authorization_code|sig)(?:=|%3d)))"
    rf"((?:(?!%3[ad]){_NAME_CHAR}){{1,128}}+)"
)
"""Names whose value is scrubbed in ``name=value`` / ``name: value`` text: query strings, form
bodies, URLs, log lines, JSON or source code quoted into a message, reprs of header pairs."""
_PARAMETER_SEPARATOR: Final = (
    r"(\\?[\"']?(?:[ \t]|\+|%20)*+(?:[:=]|%3[ad])(?:[ \t]|\+|%20)*+"  # = : %3D, maybe JSON-escaped
    r"|\\?[\"'][ \t]*,[ \t]*b?(?=\\?[\"']))"  # a pair's repr: ('cookie', 'v') or (b'cookie', b'v')
)
_PARAMETER_VALUE: Final = (
    # a quoted value runs to its closing quote, or to the end when there is none: the match never
    # fails after its start, so no text is scanned twice
    r"(?:(?:bearer|basic|token)(?:[ \t]|\+|%20)++)?"
    r"(?:\\?\"[^\"\\]++(?:\\?\")?|'[^']++'?|[^&;,#\s\"'}]++)"
)
_CREDENTIAL_FORMATS: Final = (
    # Credentials recognised by their format, whatever their key (after gitleaks' and
    # detect-secrets' rules). Every alternative starts with one of a few characters rarer than
    # letters (_ - . : A), its prefix checked by a lookbehind, so the engine skips ahead on that set
    # (a match may keep a short prefix such as "sk", never the secret); every repetition is
    # possessive or bounded: linear time.
    # chat incoming webhooks (Slack, Discord, Teams)
    r"://(?<=https://)(?:hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]++"
    r"|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d++/[A-Za-z0-9_-]++"
    r"|[A-Za-z0-9-]++\.webhook\.office\.com/[^\s\"'<>]++)",
    # credentials in a URL: scheme://user:password@host, a Sentry DSN's key (32+ hex digits)@host
    r":(?P<url>//)(?:[^/\s:@\"'<>]*+:[^/\s\"'<>]+|[0-9a-fA-F]{32,}+(?::[0-9a-fA-F]{32,}+)?)@",
    # Slack tokens; GitLab, PyPI, OpenAI/Anthropic-style keys; private key blocks (to the END line
    # or the end of the text)
    r"-(?<=xox[a-z]-)[A-Za-z0-9-]{10,}+",
    r"-(?<=xapp-)\d-[A-Za-z0-9-]{10,}+",
    r"-(?:(?<=glpat-)|(?<=gldt-)|(?<=glrt-)|(?<=glptt-)|(?<=glcbt-)|(?<=gloas-)|(?<=glsoat-))[0-9A-Za-z_-]{20,}+",
    r"-(?<=pypi-)AgE[A-Za-z0-9_-]{40,}+",
    r"-(?<=sk-)(?:proj-|ant-|svcacct-)?[A-Za-z0-9_-]{20,}+",
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:(?!-----END)[\s\S])*+(?:-----END[A-Z0-9 ]{0,40}-----)?",
    # Stripe, GitHub, npm, Sentry auth tokens, PostHog keys
    r"_(?:(?<=sk_)|(?<=rk_))(?:live|test)_[0-9A-Za-z]{10,}+",
    r"_(?<=whsec_)[0-9A-Za-z+/=]{16,}+",
    r"_(?<=gh[pousr]_)[0-9A-Za-z]{30,}+",
    r"_(?<=github_)pat_[0-9A-Za-z_]{22,}+",
    r"_(?<=npm_)[A-Za-z0-9]{36}(?![A-Za-z0-9])",
    r"_(?<=sntry[su]_)[A-Za-z0-9+/=_-]{20,}+",
    r"_(?<=ph[cx]_)[A-Za-z0-9]{20,}+",
    # SendGrid, Google OAuth access tokens
    r"\.(?<=SG\.)[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+",
    r"\.(?<=ya29\.)[0-9A-Za-z_-]{20,}+",
    # AWS access key ids, Google API keys
    r"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])",
    r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
)


def _credential_replacement(match: re.Match[str]) -> str:
    return "://" + SCRUBBED + "@" if match.group("url") else SCRUBBED


_DEFAULT_VALUE_RULES: Final = (
    # (needles, pattern, regex flags, replacement). A rule runs only on text whose lower-case form
    # contains one of its needles (every match of the pattern does): clean text costs a few
    # substring checks, not a regex scan per rule. Every pattern runs in time linear in the text.
    # bearer/basic credentials in a header value or a message: keep the scheme
    (
        ("bearer", "basic"),
        r"\b(bearer|basic)(?:[ \t]|\+|%20)++[a-z0-9\-._~+/]{8,}+=*+",
        re.IGNORECASE,
        r"\1 " + SCRUBBED,
    ),
    # "token <credential>": only credential-like words (a digit, 12+ chars), not "token refreshed"
    (
        ("token",),
        r"\b(token)[ \t]++(?=[a-z0-9\-._~+/]*?\d)[a-z0-9\-._~+/]{12,}+=*+",
        re.IGNORECASE,
        r"\1 " + SCRUBBED,
    ),
    # JSON Web Tokens (the header segment always starts with base64url '{"')
    (("eyj",), r"\beyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+", 0, SCRUBBED),
    # sensitive parameters and assignments (?token=..., password: ..., "secret": "...", a header
    # pair's repr), OAuth codes and URL signatures (whole names, "=" only: status_code=500 is no
    # secret): keep the name
    (
        ("passw", "pwd", "secret", "token", "key", "auth", "sig", "session", "cookie", "srf", "credential", "code"),
        _PARAMETER_START + _PARAMETER_NAME + _PARAMETER_SEPARATOR + _PARAMETER_VALUE,
        re.IGNORECASE,
        r"\1\2" + SCRUBBED,
    ),
    # statement parameters in a database driver's error (SQLAlchemy's "[parameters: (...)]")
    (("[parameters:",), r"\[parameters: [^\n]*+", 0, "[parameters: " + SCRUBBED + "]"),
    # the values a PostgreSQL error quotes: "Key (email)=(a@b.c) already exists.", "Failing row
    # contains (...)"; MySQL's "Duplicate entry '...' for key"
    (
        ("key (",),
        r"\b(Key \([^)\n]{0,256}+\)=\()(?:[^)\n]|\)(?![ \t]+(?:already|is|conflicts)))*+\)?",
        0,
        r"\1" + SCRUBBED + ")",
    ),
    (("failing row",), r"(Failing row contains \()[^\n]*+", 0, r"\1" + SCRUBBED + ")"),
    (("duplicate entry",), r"(Duplicate entry ')(?:[^'\n]|'(?! for key))*+'?", 0, r"\1" + SCRUBBED + "'"),
    # e-mail addresses, also with a URL-encoded or JSON-escaped "@"; the lookbehind starts a match
    # only where a run of local-part characters starts, so a long run before an "@" costs one scan
    (
        ("@", "%40", "\\u0040"),
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+(?:@|%40|\\u0040)[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        0,
        SCRUBBED,
    ),
)
_MIN_CARD_DIGITS: Final = 13
_CARD_NUMBER: Final = re.compile(r"\d(?<![\w-]\d)(?:[ -]?\d){12,18}(?![\w-])")
_SCALARS: Final = frozenset({int, float, bool, type(None)})
_BYTES: Final = (bytes, bytearray, memoryview)
_PAIR_KEY: Final = re.compile(r"b?['\"]?[A-Za-z0-9_.\-]{1,64}['\"]?")
"""The first item of a 2-item list or tuple that names the second: a header pair ``(b"cookie",
b"...")``, also as repr'd by Sentry's frame variables (``["b'cookie'", "b'...'"]``)."""


def _key_name(key: str) -> str:
    """The name inside a repr'd key (``b'cookie'``, ``'cookie'``), else the key."""
    if len(key) >= 2 and key[-1] in "'\"":
        if key[0] == key[-1]:
            return key[1:-1]
        if key[0] == "b" and len(key) >= 3 and key[1] == key[-1]:
            return key[2:-1]
    return key


class _Work:
    """One call's budget: characters that long strings may still cost, and the length strings are
    cut to (``None``: not cut)."""

    __slots__ = ("cut", "remaining")

    def __init__(self, remaining: int, cut: int | None) -> None:
        self.remaining = remaining
        self.cut = cut


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

    max_chars_per_call: int = MAX_SCRUB_CHARS
    """Bound of the work of one call: see :data:`MAX_SCRUB_CHARS`."""

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
        self._credentials = re.compile("|".join(_CREDENTIAL_FORMATS))
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
            name = _key_name(key)
            if name in self._safe_keys or _SAFE_KEY_PATTERN.match(name) is not None:
                verdict = _SAFE
            elif self._sensitive_key.search(name) is not None:
                verdict = _SENSITIVE
            else:
                verdict = _VALUE
            if len(self._key_verdicts) >= MAX_MEMOISED_KEYS:
                self._key_verdicts.clear()
            self._key_verdicts[key] = verdict
        return verdict

    def scrub_string(self, text: str) -> str:
        """``text`` with sensitive values replaced; the same object when nothing matched.

        Linear in the length of ``text``; no bound of its own (``scrub``, ``scrub_value`` and
        ``scrub_properties`` bound the work of a call)."""
        if text in self._clean_strings:
            return text
        lower = text.lower()
        result = text
        if self._credentials.search(text) is not None:
            result = self._credentials.sub(_credential_replacement, text)
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

    def _work(self, cut: int | None = None) -> _Work:
        return _Work(self.config.max_chars_per_call, cut)

    def _scrub_long(self, text: str, work: _Work) -> str:
        """A string longer than :data:`MAX_MEMOISED_STRING_CHARS`: cut (``work.cut``) before it is
        searched, or replaced whole once the call's budget is spent."""
        cut = work.cut
        if cut is not None and len(text) > cut:
            text = text[:cut]
            if cut > work.remaining:
                work.remaining = 0
                return SCRUBBED
            work.remaining -= cut
            return self.scrub_string(text) + "…"
        if len(text) > work.remaining:
            work.remaining = 0
            return SCRUBBED
        work.remaining -= len(text)
        return self.scrub_string(text)

    def _scrub_bytes(self, data: bytes | bytearray | memoryview, work: _Work) -> Any:
        """Byte strings (a request body, header pairs in an ASGI scope) are searched as latin-1 text,
        which maps every byte to one character and back."""
        text = bytes(data).decode("latin-1")
        scrubbed = self.scrub_string(text) if len(text) <= MAX_MEMOISED_STRING_CHARS else self._scrub_long(text, work)
        if scrubbed is text:
            return data
        encoded = scrubbed.encode("latin-1", "replace")
        return bytearray(encoded) if isinstance(data, bytearray) else encoded

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
        string longer than :data:`MAX_STRING_CHARS`, top-level or nested, is cut to that length
        plus ``…`` before it is searched and counts as scrubbed.

        Returns ``(properties, [])`` (the same object) when nothing was scrubbed; else a new ``dict``
        whose :data:`SCRUBBED_ATTRIBUTE` lists the paths it already had, then the new ones, and the
        new paths.
        """
        changed: dict[str, Any] | None = None
        paths: list[str] = []
        verdicts = self._key_verdicts
        work = self._work(MAX_STRING_CHARS)
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
                scrubbed = self._scrub_property_string(value, work)
                if scrubbed is value:
                    continue
                paths.append(key)
            elif isinstance(value, (dict, list, tuple)):
                scrubbed = self.scrub_value(value, key, paths, work)
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

    def _scrub_property_string(self, text: str, work: _Work) -> str:
        if len(text) > MAX_MEMOISED_STRING_CHARS:
            return self._scrub_long(text, work)
        memo = self._property_strings
        scrubbed = memo.get(text)
        if scrubbed is None:
            scrubbed = self.scrub_string(text)
            if len(memo) >= MAX_MEMOISED_STRINGS:
                memo.clear()
            memo[text] = scrubbed
        return text if scrubbed == text else scrubbed

    def scrub_value(self, value: Any, path: str, paths: list[str], work: _Work | None = None) -> Any:
        """Scrub any JSON-like value recursively, appending the paths of what was replaced to ``paths``
        (a path starts with ``path``). Returns the original object when nothing matched, else a copy
        in which only the changed containers are new.

        For callers that scrub several parts of one record and list all their paths together: they
        pass one ``work`` (from :meth:`new_work`) to all the calls, so one budget bounds the record.
        """
        if work is None:
            work = self._work()
        kind = type(value)
        if kind is str:
            scrubbed = (
                self.scrub_string(value) if len(value) <= MAX_MEMOISED_STRING_CHARS else self._scrub_long(value, work)
            )
            if scrubbed is not value:
                paths.append(path)
            return scrubbed
        if kind in _SCALARS:
            return value
        if isinstance(value, Mapping):
            return self._scrub_mapping(value, path, paths, work)
        if isinstance(value, (list, tuple)):
            if len(value) == 2:
                pair = self._scrub_pair(value, path, paths)
                if pair is not None:
                    return pair
            items = None
            for index, item in enumerate(value):
                scrubbed = self.scrub_value(item, f"{path}[{index}]", paths, work)
                if scrubbed is not item:
                    if items is None:
                        items = list(value)
                    items[index] = scrubbed
            if items is None:
                return value
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, _BYTES):
            scrubbed = self._scrub_bytes(value, work)
            if scrubbed is not value:
                paths.append(path)
            return scrubbed
        return value

    def new_work(self) -> _Work:
        """A fresh budget for the :meth:`scrub_value` calls that scrub one record."""
        return self._work()

    def _scrub_pair(self, pair: list[Any] | tuple[Any, ...], path: str, paths: list[str]) -> Any:
        """A ``(name, value)`` pair whose name is sensitive or safe: the pair, its value replaced or
        kept; None for any other 2-item sequence."""
        first = pair[0]
        if type(first) is str:
            name = first
        elif type(first) is bytes:
            name = first.decode("latin-1")
        else:
            return None
        if _PAIR_KEY.fullmatch(name) is None:
            return None
        verdict = self._key_verdict(name)
        if verdict == _SAFE:
            return pair
        if verdict != _SENSITIVE:
            return None
        # the name is searched too: a credential's own text may look like a sensitive name
        name_scrubbed = self.scrub_string(name)
        if name_scrubbed is not name:
            paths.append(f"{path}[0]")
            first = name_scrubbed.encode("latin-1", "replace") if type(first) is bytes else name_scrubbed
        second = pair[1]
        if second is None or second is True or second is False or not second or second == SCRUBBED:
            replacement = second
        else:
            paths.append(f"{path}[1]")
            replacement = SCRUBBED.encode() if isinstance(second, _BYTES) else SCRUBBED
        if first is pair[0] and replacement is second:
            return pair
        return (first, replacement) if isinstance(pair, tuple) else [first, replacement]

    def _scrub_mapping(self, mapping: Mapping[Any, Any], path: str, paths: list[str], work: _Work) -> Any:
        changed: dict[Any, Any] | None = None
        verdicts = self._key_verdicts
        clean_strings = self._clean_strings
        for key, item in mapping.items():
            name = key if type(key) is str else key.decode("latin-1") if type(key) is bytes else str(key)
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
                if item in clean_strings:  # scrub_string's own first check, without the call
                    continue
                scrubbed = (
                    self.scrub_string(item) if len(item) <= MAX_MEMOISED_STRING_CHARS else self._scrub_long(item, work)
                )
                if scrubbed is item:
                    continue
                paths.append(f"{path}.{name}" if path else name)
            elif type(item) in _SCALARS:
                continue
            else:
                scrubbed = self.scrub_value(item, f"{path}.{name}" if path else name, paths, work)
                if scrubbed is item:
                    continue
            if changed is None:
                changed = dict(mapping)
            changed[key] = scrubbed
        return mapping if changed is None else changed
