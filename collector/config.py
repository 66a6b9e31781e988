"""Collector configuration: the environment (12-factor) plus an optional YAML file of rules and limits.

Environment: ``COLLECTOR_ENDPOINT`` (listen ``host:port``, default ``127.0.0.1:4318``),
``COLLECTOR_DATA_DIR`` (default ``./.stack/collector``, relative to the working directory),
``COLLECTOR_AUTH_TOKEN`` (bearer token required on ``/v1/*`` when set), ``POSTHOG_API_KEY`` (deliver
to PostHog; unset: the local event store), ``POSTHOG_HOST`` (default ``https://us.i.posthog.com``),
``COLLECTOR_CONFIG`` (path of the YAML file below). A bad value raises ``ConfigError`` naming the key.

YAML (every section optional; unknown keys are errors, so a typo never passes silently)::

    mapping:
      rename_events: {file_uploaded: upload_finished}
      drop_properties: [file.size]
      allow_properties: [audio.duration_s, phonoglyph.file.id]   # only these attribute properties
      include_spans:                                             # opt extra spans in
        - {span_name: "POST /api/projects", operation: project_api}
        - {http_route: "/api/renders/{render_id}", operation: render_api}
    limits:
      max_request_bytes: 4194304          # compressed body
      max_decompressed_bytes: 33554432    # after gzip
      max_inflight_requests: 32           # beyond: 429 + Retry-After
      outbox_max_bytes: 268435456         # outbox full: 429 + Retry-After
      retry_after_s: 1
      body_timeout_s: 30                  # a body not received whole in this long: 408 (slow senders)
    drain_timeout_s: 10                   # SIGTERM: flush deliveries for at most this long
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from collector.processors.mapping import MappingRules

DEFAULT_ENDPOINT = "127.0.0.1:4318"
DEFAULT_DATA_DIR = "./.stack/collector"
DEFAULT_POSTHOG_HOST = "https://us.i.posthog.com"
DEFAULT_OUTBOX_MAX_BYTES = 256 * 2**20
OUTBOX_FILE = "outbox.db"
EVENTS_FILE = "events.db"

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_ .:$-]{0,199}$")


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``str()`` names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class LimitsConfig:
    max_request_bytes: int = 4 * 2**20
    max_decompressed_bytes: int = 32 * 2**20
    max_inflight_requests: int = 32
    outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES
    retry_after_s: int = 1
    body_timeout_s: int = 30


@dataclass(frozen=True)
class CollectorConfig:
    host: str = "127.0.0.1"
    port: int = 4318
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    auth_token: str | None = None
    posthog_api_key: str | None = None
    posthog_host: str = DEFAULT_POSTHOG_HOST
    mapping: MappingRules = field(default_factory=MappingRules)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    drain_timeout_s: float = 10.0

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / OUTBOX_FILE

    @property
    def events_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CollectorConfig:
        env = os.environ if environ is None else environ
        host, port = parse_endpoint(env.get("COLLECTOR_ENDPOINT") or DEFAULT_ENDPOINT)
        data_dir = Path(env.get("COLLECTOR_DATA_DIR") or DEFAULT_DATA_DIR)
        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError("COLLECTOR_DATA_DIR", f"{str(data_dir)!r} exists and is not a directory")
        auth_token = env.get("COLLECTOR_AUTH_TOKEN") or None
        if auth_token is not None and (auth_token != auth_token.strip() or not auth_token.isprintable()):
            raise ConfigError("COLLECTOR_AUTH_TOKEN", "must be printable with no surrounding whitespace")
        posthog_api_key = env.get("POSTHOG_API_KEY") or None
        if posthog_api_key is not None and (posthog_api_key != posthog_api_key.strip() or " " in posthog_api_key):
            raise ConfigError("POSTHOG_API_KEY", "must not contain whitespace")
        posthog_host = (env.get("POSTHOG_HOST") or DEFAULT_POSTHOG_HOST).rstrip("/")
        parts = urlsplit(posthog_host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("POSTHOG_HOST", f"{posthog_host!r} is not an http(s) URL")
        sections: dict[str, Any] = {}
        if env.get("COLLECTOR_CONFIG"):
            sections = _load_yaml(env["COLLECTOR_CONFIG"])
        return cls(
            host=host,
            port=port,
            data_dir=data_dir,
            auth_token=auth_token,
            posthog_api_key=posthog_api_key,
            posthog_host=posthog_host,
            mapping=_mapping_rules(sections.get("mapping")),
            limits=_limits(sections.get("limits")),
            drain_timeout_s=_number(sections, "drain_timeout_s", 10.0, "drain_timeout_s", minimum=0),
        )


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
    _known(document, ("mapping", "limits", "drain_timeout_s"), "")
    return document


def _known(section: dict, keys: tuple[str, ...], prefix: str) -> None:
    for key in section:
        if key not in keys:
            raise ConfigError(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(keys)})")


def _section(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping")
    return value


def _number(section: dict, name: str, default: float, key: str, *, minimum: float, integer: bool = False):
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(key, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value!r}")
    return value


def _limits(value: Any) -> LimitsConfig:
    section = _section(value, "limits")
    fields = tuple(LimitsConfig.__dataclass_fields__)
    _known(section, fields, "limits.")
    defaults = LimitsConfig()
    return LimitsConfig(
        **{
            name: _number(section, name, getattr(defaults, name), f"limits.{name}", minimum=1, integer=True)
            for name in fields
        }
    )


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
    _known(section, ("rename_events", "drop_properties", "allow_properties", "include_spans"), "mapping.")
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
    for index, rule in enumerate(rules):
        key = f"mapping.include_spans[{index}]"
        rule = _section(rule, key)
        _known(rule, ("span_name", "http_route", "operation"), f"{key}.")
        matchers = [name for name in ("span_name", "http_route") if name in rule]
        if len(matchers) != 1:
            raise ConfigError(key, "needs exactly one of span_name or http_route")
        match = rule[matchers[0]]
        if not isinstance(match, str) or not match:
            raise ConfigError(f"{key}.{matchers[0]}", "must be a non-empty string")
        operation = _event_name(rule.get("operation"), f"{key}.operation")
        (span_names if matchers[0] == "span_name" else http_routes)[match] = operation
    return MappingRules(
        rename_events=rename_events,
        drop_properties=frozenset() if drop is None else _string_list(drop, "mapping.drop_properties"),
        allow_properties=None if allow is None else _string_list(allow, "mapping.allow_properties"),
        span_names=span_names,
        http_routes=http_routes,
    )
