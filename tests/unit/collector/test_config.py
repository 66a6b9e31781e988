import json
import logging
from pathlib import Path

import pytest

from collector.config import SETTINGS, CollectorConfig, ConfigError, LimitsConfig, parse_endpoint


def test_defaults():
    config = CollectorConfig.from_env({})
    assert (config.host, config.port) == ("127.0.0.1", 4318)
    assert config.data_dir == Path(".stack/collector")
    assert config.posthog_host == "https://us.i.posthog.com"
    assert config.auth_token is None and config.posthog_api_key is None
    assert config.limits == LimitsConfig()
    assert config.outbox_path == Path(".stack/collector/outbox.db")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.0.0.0:4318", ("0.0.0.0", 4318)), ("[::1]:9000", ("::1", 9000)), ("http://localhost:1/", ("localhost", 1))],
)
def test_endpoints(value, expected):
    assert parse_endpoint(value) == expected


def _error(env: dict) -> str:
    with pytest.raises(ConfigError) as info:
        CollectorConfig.from_env(env)
    return str(info.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COLLECTOR_AUTH_TOKEN": " t"}, "COLLECTOR_AUTH_TOKEN: must be printable with no surrounding whitespace"),
        (
            {"COLLECTOR_CONFIG": "/nonexistent/c.yaml"},
            "COLLECTOR_CONFIG: cannot read '/nonexistent/c.yaml': No such file or directory",
        ),
    ],
)
def test_environment_errors_that_refuse_to_start_name_the_key(env, message):
    assert _error(env) == message


@pytest.mark.parametrize(
    ("env", "name", "message"),
    [
        ({"COLLECTOR_ENDPOINT": "4318"}, "host", "COLLECTOR_ENDPOINT: '4318': expected host:port, e.g. 127.0.0.1:4318"),
        (
            {"COLLECTOR_ENDPOINT": "localhost:99999"},
            "port",
            "COLLECTOR_ENDPOINT: 'localhost:99999': port must be a number from 0 to 65535",
        ),
        ({"POSTHOG_HOST": "ftp://x"}, "posthog_host", "POSTHOG_HOST: 'ftp://x' is not an http(s) URL"),
        ({"POSTHOG_API_KEY": "phc abc"}, "posthog_api_key", "POSTHOG_API_KEY: must not contain whitespace"),
        ({"COLLECTOR_ALERT_SLACK_URL": "slack"}, "alert_slack_url", "COLLECTOR_ALERT_SLACK_URL: 'slack' is not"),
    ],
)
def test_a_bad_environment_value_warns_naming_the_variable_and_uses_the_default(caplog, env, name, message):
    with caplog.at_level(logging.WARNING, logger="collector.config"):
        config = CollectorConfig.from_env(env)
    assert getattr(config, name) == getattr(CollectorConfig(), name)
    [warning] = caplog.messages
    assert warning.startswith(message) and "using the default" in warning


def test_alert_destinations_come_from_the_environment():
    config = CollectorConfig.from_env(
        {
            "COLLECTOR_ALERT_WEBHOOK_URL": "http://hooks.example/alert",
            "COLLECTOR_ALERT_SLACK_URL": "https://hooks.slack.example/T/B/x",
            "COLLECTOR_ALERTMANAGER_URL": "http://alertmanager:9093/",
        }
    )
    assert config.alert_webhook_url == "http://hooks.example/alert"
    assert config.alert_slack_url == "https://hooks.slack.example/T/B/x"
    assert config.alertmanager_url == "http://alertmanager:9093"
    assert CollectorConfig.from_env({}).alert_webhook_url is None


def test_the_alerts_section_is_kept_as_written(tmp_path):
    path = tmp_path / "collector.yaml"
    rule = {"name": "x", "when": "stalled", "operation": "render", "after_s": 60, "severity": "critical"}
    path.write_text(f"alerts:\n  rules: [{json.dumps(rule)}]\n")
    assert CollectorConfig.from_env({"COLLECTOR_CONFIG": str(path)}).alerts_raw == {"rules": [rule]}
    assert CollectorConfig.from_env({}).alerts_raw is None


def test_a_bad_alert_rule_refuses_to_start_with_its_key(tmp_path):
    path = tmp_path / "collector.yaml"
    path.write_text("alerts:\n  rules: [{name: x, when: failure_rate, operation: render, window_s: -5, above: 0.2}]\n")
    with pytest.raises(ConfigError) as error:
        CollectorConfig.from_env({"COLLECTOR_CONFIG": str(path)})
    assert "alerts.rules[0]" in str(error.value)


def test_every_setting_is_one_documented_row():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    assert all(setting.doc and (setting.env or setting.yaml) for setting in SETTINGS)
    envs = [setting.env for setting in SETTINGS if setting.env]
    assert len(envs) == len(set(envs))


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("- a\n", "COLLECTOR_CONFIG: {path} must hold a mapping at the top level"),
        ("mapping: [\n", None),
        ("mappings: {}\n", "mappings: unknown key (expected one of: mapping, limits, drain_timeout_s, alerts)"),
        ("limits: {max_request_bytes: -1}\n", "limits.max_request_bytes: must be at least 1, got -1"),
        ("limits: {max_request_bytes: big}\n", "limits.max_request_bytes: must be an integer, got 'big'"),
        (
            "limits: {max_body: 1}\n",
            "limits.max_body: unknown key (expected one of: max_request_bytes, "
            "max_decompressed_bytes, max_inflight_requests, outbox_max_bytes, dead_letter_max_rows, "
            "dead_letter_max_bytes, retry_after_s, body_timeout_s)",
        ),
        ("drain_timeout_s: soon\n", "drain_timeout_s: must be a number, got 'soon'"),
        (
            "mapping: {rename_events: {a: 'bad name!'}}\n",
            "mapping.rename_events.a: 'bad name!' is not a valid event name",
        ),
        ("mapping: {drop_properties: x}\n", "mapping.drop_properties: must be a list of non-empty strings"),
        (
            "mapping: {include_spans: [{operation: x}]}\n",
            "mapping.include_spans[0]: needs exactly one of span_name or http_route",
        ),
        (
            "mapping: {include_spans: [{span_name: a, http_route: b, operation: x}]}\n",
            "mapping.include_spans[0]: needs exactly one of span_name or http_route",
        ),
        (
            "mapping: {include_spans: [{span_name: a}]}\n",
            "mapping.include_spans[0].operation: None is not a valid event name",
        ),
    ],
)
def test_yaml_errors_name_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "collector.yaml"
    path.write_text(yaml_text)
    error = _error({"COLLECTOR_CONFIG": str(path)})
    if message is None:
        assert error.startswith(f"COLLECTOR_CONFIG: {str(path)!r} is not valid YAML")
    else:
        assert error == message.format(path=repr(str(path)))


def test_yaml_rules_and_limits(tmp_path):
    path = tmp_path / "collector.yaml"
    path.write_text(
        "mapping:\n"
        "  rename_events: {file_uploaded: upload_finished}\n"
        "  drop_properties: [file.size]\n"
        "  allow_properties: [audio.duration_s]\n"
        "  include_spans:\n"
        "    - {span_name: 'POST /api/projects', operation: project_api}\n"
        "    - {http_route: '/api/renders/{id}', operation: render_api}\n"
        "limits: {max_request_bytes: 1024, retry_after_s: 3}\n"
        "drain_timeout_s: 2.5\n"
    )
    config = CollectorConfig.from_env({"COLLECTOR_CONFIG": str(path), "COLLECTOR_DATA_DIR": str(tmp_path / "d")})
    rules = config.mapping
    assert rules.rename_events == {"file_uploaded": "upload_finished"}
    assert rules.drop_properties == {"file.size"} and rules.allow_properties == {"audio.duration_s"}
    assert rules.span_names == {"POST /api/projects": "project_api"}
    assert rules.http_routes == {"/api/renders/{id}": "render_api"}
    assert config.limits == LimitsConfig(max_request_bytes=1024, retry_after_s=3)
    assert config.drain_timeout_s == 2.5


def test_data_dir_that_is_a_file(tmp_path):
    file = tmp_path / "f"
    file.write_text("")
    assert (
        _error({"COLLECTOR_DATA_DIR": str(file)}) == f"COLLECTOR_DATA_DIR: {str(file)!r} exists and is not a directory"
    )


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [(None, False), ("true", True), ("[http.user_agent, url.path]", frozenset({"http.user_agent", "url.path"}))],
)
def test_keep_request_attributes(tmp_path, yaml_value, expected):
    path = tmp_path / "collector.yaml"
    path.write_text("mapping: {}\n" if yaml_value is None else f"mapping: {{keep_request_attributes: {yaml_value}}}\n")
    config = CollectorConfig.from_env({"COLLECTOR_CONFIG": str(path), "COLLECTOR_DATA_DIR": str(tmp_path / "d")})
    assert config.mapping.keep_request_attributes == expected
    path.write_text("mapping: {keep_request_attributes: 3}\n")
    assert _error({"COLLECTOR_CONFIG": str(path)}) == (
        "mapping.keep_request_attributes: must be a list of non-empty strings"
    )
