"""Collector configuration: every setting is one row of ``SETTINGS`` (docs/architecture.md "Configuration").

A row names the setting, where its value comes from (an environment variable, 12-factor, or a key of the
optional YAML file named by ``COLLECTOR_CONFIG``), its default, the function that checks and converts a
value, and what it means. Nothing else in the collector reads the environment.

A bad environment value logs a warning naming the variable and the default is used, as the OTel SDK does,
except where the default would change what the collector protects or where it keeps data
(``COLLECTOR_AUTH_TOKEN``, ``COLLECTOR_DATA_DIR``, ``COLLECTOR_CONFIG``): those raise ``ConfigError``. A bad
YAML file always raises ``ConfigError`` naming the key, and the collector refuses to start.

YAML (every section optional; unknown keys are errors, so a typo never passes silently)::

    mapping:
      rename_events: {file_uploaded: upload_finished}
      drop_properties: [file.size]
      allow_properties: [audio.duration_s, phonoglyph.file.id]   # only these attribute properties
      include_spans:                                             # opt extra spans in
        - {span_name: "POST /api/projects", operation: project_api}
        - {http_route: "/api/renders/{render_id}", operation: render_api}
      keep_request_attributes: false   # true, or a list: keep request dumps (URLs, headers...) as properties
    limits:
      max_request_bytes: 4194304          # compressed body
      max_decompressed_bytes: 33554432    # after gzip
      max_inflight_requests: 32           # beyond: 429 + Retry-After
      outbox_max_bytes: 268435456         # outbox full: 429 + Retry-After
      dead_letter_max_rows: 10000         # beyond either bound the oldest dead letters are dropped (counted)
      dead_letter_max_bytes: 67108864
      retry_after_s: 1
      body_timeout_s: 30                  # a body not received whole in this long: 408 (slow senders)
    drain_timeout_s: 10                   # SIGTERM: flush deliveries for at most this long
    alerts: ...                           # alert rules (collector.alerting.config)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from collector.defaults import (
    DEFAULT_DATA_DIR,
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    DEFAULT_DEAD_LETTER_MAX_ROWS,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_ENDPOINT,
    DEFAULT_OUTBOX_MAX_BYTES,
    DEFAULT_POSTHOG_HOST,
)
from collector.processors.mapping import DEFAULT_RULES, MappingRules

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_DRAIN_TIMEOUT_S",
    "DEFAULT_ENDPOINT",
    "DEFAULT_OUTBOX_MAX_BYTES",
    "DEFAULT_POSTHOG_HOST",
    "SETTINGS",
    "CollectorConfig",
    "ConfigError",
    "LimitsConfig",
    "Setting",
    "parse_endpoint",
]

logger = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
EVENTS_FILE = "events.db"

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_ .:$-]{0,199}$")


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``str()`` names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


# -- value checks: a value from the environment (text) or the YAML file → the setting's value --------
# Each raises ValueError (or ConfigError for a nested key) with the problem.


def parse_endpoint(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:4318`` for IPv6; an ``http://`` prefix is tolerated) → (host, port)."""
    text = value.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "http" or parts.path not in ("", "/"):
            raise ConfigError("COLLECTOR_ENDPOINT", f"{value!r}: expected host:port")
        text = parts.netloc
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError("COLLECTOR_ENDPOINT", f"{value!r}: expected host:port, e.g. 127.0.0.1:4318")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError("COLLECTOR_ENDPOINT", f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def _endpoint(value: str) -> tuple[str, int]:
    try:
        return parse_endpoint(value)
    except ConfigError as exc:
        raise ValueError(exc.problem) from None


def _directory(value: str) -> Path:
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{value!r} exists and is not a directory")
    return path


def _token(value: str) -> str:
    if value != value.strip() or not value.isprintable():
        raise ValueError("must be printable with no surrounding whitespace")
    return value


def _api_key(value: str) -> str:
    if value != value.strip() or " " in value:
        raise ValueError("must not contain whitespace")
    return value


def _http_url(value: str) -> str:
    url = value.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


def _text(value: str) -> str:
    return value


def _integer_at_least(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value!r}")
        return value

    return check


def _number_at_least(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value!r}")
        return value

    return check


def _alerts_section(value: Any) -> Any:
    """The ``alerts:`` section as written, once ``parse_alerts`` accepts it: a bad rule refuses to start."""
    from collector.alerting.config import parse_alerts  # imported here: alerting imports ConfigError from here

    parse_alerts(value)
    return value


def _known(section: Mapping[str, Any], keys: tuple[str, ...], prefix: str) -> None:
    for key in section:
        if key not in keys:
            raise ConfigError(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(keys)})")


def _section(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping")
    return value


def _event_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _EVENT_NAME.match(value):
        raise ConfigError(key, f"{value!r} is not a valid event name")
    return value


def _string_list(value: Any, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(key, "must be a list of non-empty strings")
    return frozenset(value)


def _mapping_rules(value: Any) -> MappingRules:
    section = _section(value, "mapping")
    _known(
        section,
        ("rename_events", "drop_properties", "allow_properties", "include_spans", "keep_request_attributes"),
        "mapping.",
    )
    rename = _section(section.get("rename_events"), "mapping.rename_events")
    rename_events = {
        _event_name(old, "mapping.rename_events"): _event_name(new, f"mapping.rename_events.{old}")
        for old, new in rename.items()
    }
    drop = section.get("drop_properties")
    allow = section.get("allow_properties")
    span_names: dict[str, str] = {}
    http_routes: dict[str, str] = {}
    rules = section.get("include_spans") or []
    if not isinstance(rules, list):
        raise ConfigError("mapping.include_spans", "must be a list")
    for index, item in enumerate(rules):
        key = f"mapping.include_spans[{index}]"
        rule = _section(item, key)
        _known(rule, ("span_name", "http_route", "operation"), f"{key}.")
        matchers = [name for name in ("span_name", "http_route") if name in rule]
        if len(matchers) != 1:
            raise ConfigError(key, "needs exactly one of span_name or http_route")
        match = rule[matchers[0]]
        if not isinstance(match, str) or not match:
            raise ConfigError(f"{key}.{matchers[0]}", "must be a non-empty string")
        operation = _event_name(rule.get("operation"), f"{key}.operation")
        (span_names if matchers[0] == "span_name" else http_routes)[match] = operation
    keep = section.get("keep_request_attributes", False)
    if not isinstance(keep, bool):
        keep = _string_list(keep, "mapping.keep_request_attributes")
    return MappingRules(
        keep_request_attributes=keep,
        rename_events=rename_events,
        drop_properties=frozenset() if drop is None else _string_list(drop, "mapping.drop_properties"),
        allow_properties=None if allow is None else _string_list(allow, "mapping.allow_properties"),
        span_names=span_names,
        http_routes=http_routes,
    )


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting. ``default`` is given in the form of a source value and goes through ``type`` too
    (``None``: unset, never converted)."""

    name: str
    """The attribute on ``CollectorConfig`` (or on its ``limits``, for ``limits.*`` keys)."""
    default: Any
    type: Callable[[Any], Any]
    """Checks a value and converts it; raises ValueError with the problem."""
    doc: str
    env: str | None = None
    """The environment variable it is read from."""
    yaml: str | None = None
    """Its dotted key in the ``COLLECTOR_CONFIG`` file."""
    strict: bool = False
    """A bad environment value refuses to start instead of falling back to the default."""

    @property
    def key(self) -> str:
        return self.env or self.yaml or self.name


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "endpoint",
        env="COLLECTOR_ENDPOINT",
        default=DEFAULT_ENDPOINT,
        type=_endpoint,
        doc="Listen address, host:port ([::1]:4318 for IPv6; port 0 picks a free one).",
    ),
    Setting(
        "data_dir",
        env="COLLECTOR_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        type=_directory,
        strict=True,
        doc="Where outbox.db (outbox and dead letters) and events.db (the local store) live.",
    ),
    Setting(
        "auth_token",
        env="COLLECTOR_AUTH_TOKEN",
        default=None,
        type=_token,
        strict=True,
        doc="When set, /v1/* needs Authorization: Bearer <token>; health and metrics stay open.",
    ),
    Setting(
        "posthog_api_key",
        env="POSTHOG_API_KEY",
        default=None,
        type=_api_key,
        doc="Deliver to PostHog with this project key; unset: the embedded local event store.",
    ),
    Setting(
        "posthog_host",
        env="POSTHOG_HOST",
        default=DEFAULT_POSTHOG_HOST,
        type=_http_url,
        doc="The PostHog host events are delivered to.",
    ),
    Setting(
        "config_file",
        env="COLLECTOR_CONFIG",
        default=None,
        type=_text,
        strict=True,
        doc="Path of the YAML file of mapping rules, limits, drain deadline and alerts.",
    ),
    Setting(
        "alert_webhook_url",
        env="COLLECTOR_ALERT_WEBHOOK_URL",
        default=None,
        type=_http_url,
        doc="Alerts are POSTed as JSON to this URL.",
    ),
    Setting(
        "alert_slack_url",
        env="COLLECTOR_ALERT_SLACK_URL",
        default=None,
        type=_http_url,
        doc="Slack incoming-webhook URL alerts are posted to.",
    ),
    Setting(
        "alertmanager_url",
        env="COLLECTOR_ALERTMANAGER_URL",
        default=None,
        type=_http_url,
        doc="Prometheus Alertmanager base URL alerts are sent to.",
    ),
    Setting(
        "mapping",
        yaml="mapping",
        default={},
        type=_mapping_rules,
        doc="Rename events, drop or allow properties, opt extra spans in (docs/architecture.md 'PostHog mapping').",
    ),
    Setting(
        "max_request_bytes",
        yaml="limits.max_request_bytes",
        default=4 * 2**20,
        type=_integer_at_least(1),
        doc="Compressed body limit: 413 above.",
    ),
    Setting(
        "max_decompressed_bytes",
        yaml="limits.max_decompressed_bytes",
        default=32 * 2**20,
        type=_integer_at_least(1),
        doc="Body limit after gzip, inflated incrementally: 413 above (bombs stop early).",
    ),
    Setting(
        "max_inflight_requests",
        yaml="limits.max_inflight_requests",
        default=32,
        type=_integer_at_least(1),
        doc="Requests processed at once: 429 with Retry-After above.",
    ),
    Setting(
        "outbox_max_bytes",
        yaml="limits.outbox_max_bytes",
        default=DEFAULT_OUTBOX_MAX_BYTES,
        type=_integer_at_least(1),
        doc="Outbox size: when full, 429 with Retry-After (backpressure, never a drop).",
    ),
    Setting(
        "dead_letter_max_rows",
        yaml="limits.dead_letter_max_rows",
        default=DEFAULT_DEAD_LETTER_MAX_ROWS,
        type=_integer_at_least(1),
        doc="Dead letters kept: beyond it the oldest are deleted (dead_letters_dropped_total).",
    ),
    Setting(
        "dead_letter_max_bytes",
        yaml="limits.dead_letter_max_bytes",
        default=DEFAULT_DEAD_LETTER_MAX_BYTES,
        type=_integer_at_least(1),
        doc="Payload bytes of dead letters kept: beyond it the oldest are deleted (dead_letters_dropped_total).",
    ),
    Setting(
        "retry_after_s",
        yaml="limits.retry_after_s",
        default=1,
        type=_integer_at_least(1),
        doc="The Retry-After of 429 and 503 answers.",
    ),
    Setting(
        "body_timeout_s",
        yaml="limits.body_timeout_s",
        default=30,
        type=_integer_at_least(1),
        doc="A body not received whole in this long: 408 (a slow sender cannot hold a slot).",
    ),
    Setting(
        "drain_timeout_s",
        yaml="drain_timeout_s",
        default=DEFAULT_DRAIN_TIMEOUT_S,
        type=_number_at_least(0),
        doc="On SIGTERM/SIGINT, deliveries are flushed for at most this long; the rest stays in the outbox.",
    ),
    Setting(
        "alerts_raw",
        yaml="alerts",
        default=None,
        type=_alerts_section,
        doc="Alert rules (collector.alerting.config): absent, the default rules; `{rules: []}`, none.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}
_LIMITS = tuple(setting for setting in SETTINGS if setting.yaml and setting.yaml.startswith("limits."))
_TOP_LEVEL_KEYS = tuple(dict.fromkeys(setting.yaml.split(".")[0] for setting in SETTINGS if setting.yaml))


def _default(name: str) -> Any:
    setting = _BY_NAME[name]
    return None if setting.default is None else setting.type(setting.default)


# -- the configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitsConfig:
    max_request_bytes: int = _default("max_request_bytes")
    max_decompressed_bytes: int = _default("max_decompressed_bytes")
    max_inflight_requests: int = _default("max_inflight_requests")
    outbox_max_bytes: int = _default("outbox_max_bytes")
    dead_letter_max_rows: int = _default("dead_letter_max_rows")
    dead_letter_max_bytes: int = _default("dead_letter_max_bytes")
    retry_after_s: int = _default("retry_after_s")
    body_timeout_s: int = _default("body_timeout_s")


_DEFAULT_HOST, _DEFAULT_PORT = _default("endpoint")


@dataclass(frozen=True)
class CollectorConfig:
    host: str = _DEFAULT_HOST
    port: int = _DEFAULT_PORT
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    auth_token: str | None = None
    posthog_api_key: str | None = None
    posthog_host: str = DEFAULT_POSTHOG_HOST
    mapping: MappingRules = DEFAULT_RULES
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    alerts_raw: Any = None
    """The YAML ``alerts:`` section as written (``collector.alerting.config.parse_alerts`` reads it)."""
    alert_webhook_url: str | None = None
    alert_slack_url: str | None = None
    alertmanager_url: str | None = None

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / OUTBOX_FILE

    @property
    def events_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CollectorConfig:
        """The configuration from the environment (``os.environ`` by default) and the YAML file it names."""
        env = os.environ if environ is None else environ
        values = {setting.name: _from_env(setting, env) for setting in SETTINGS if setting.env}
        document = _load_yaml(values.pop("config_file")) if values.get("config_file") else {}
        for setting in SETTINGS:
            if setting.yaml:
                values[setting.name] = _from_yaml(setting, document)
        values["host"], values["port"] = values.pop("endpoint")
        values["limits"] = LimitsConfig(**{setting.name: values.pop(setting.name) for setting in _LIMITS})
        values.pop("config_file", None)
        return cls(**values)


def _from_env(setting: Setting, env: Mapping[str, str]) -> Any:
    assert setting.env is not None
    raw = env.get(setting.env) or None  # set but empty: unset
    if raw is None and setting.default is None:
        return None
    try:
        return setting.type(setting.default if raw is None else raw)
    except ValueError as exc:
        problem = exc.problem if isinstance(exc, ConfigError) else str(exc)
        if raw is None or setting.strict:
            raise ConfigError(setting.env, problem) from None
        logger.warning("%s: %s; using the default (%s)", setting.env, problem, setting.default)
    return _default(setting.name)


def _from_yaml(setting: Setting, document: Mapping[str, Any]) -> Any:
    assert setting.yaml is not None
    section: Mapping[str, Any] = document
    *parents, leaf = setting.yaml.split(".")
    for parent in parents:
        section = _section(section.get(parent), parent)
    if leaf not in section:
        return _default(setting.name)
    try:
        return setting.type(section[leaf])
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(setting.yaml, str(exc)) from None


def _load_yaml(path_text: str) -> dict[str, Any]:
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("COLLECTOR_CONFIG", f"cannot read {path_text!r}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("COLLECTOR_CONFIG", f"{path_text!r} is not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError("COLLECTOR_CONFIG", f"{path_text!r} must hold a mapping at the top level")
    _known(document, _TOP_LEVEL_KEYS, "")
    limits = _section(document.get("limits"), "limits")
    _known(limits, tuple(setting.yaml.split(".", 1)[1] for setting in _LIMITS if setting.yaml), "limits.")
    return document
