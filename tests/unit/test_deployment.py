"""What can be checked of the Docker deployment without a Docker engine.

docker-compose.yml against the Compose Specification schema (the copy check-jsonschema ships), the
OpenTelemetry Collector configs' wiring (every pipeline component declared, every declared component used),
and consistency with the code: ports, module names, and environment variables the code really reads.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

import instrumentation.semconv as semconv

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("instrumentation", "collector", "services")
COLLECTOR_CONFIGS = ("otel-collector.yaml", "otel-collector-gateway.yaml", "otel-collector-replica.yaml")
PYTHON_SERVICES = ("api", "worker", "collector")
OTLP_HTTP_PORT = 4318
ENV_REFERENCE = re.compile(r"\$\{env:([A-Z0-9_]+)\}")


def load_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml("docker-compose.yml")


@pytest.fixture(scope="module")
def sources_text() -> str:
    return "\n".join(path.read_text() for package in SOURCE_PACKAGES for path in sorted((ROOT / package).rglob("*.py")))


def port_of(address: str) -> int:
    """The port of ``host:port`` or of a URL."""
    if "://" in address:
        return urlsplit(address).port
    return int(address.rsplit(":", 1)[1])


def command_port(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


# -- docker-compose.yml ---------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose):
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda error: list(error.path))
    assert [f"{list(error.path)}: {error.message}" for error in errors] == []


def test_compose_schema_check_rejects_a_broken_file(compose):
    """The schema check can fail: a misspelt key is an error."""
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["healthchek"] = broken["services"]["api"].pop("healthcheck")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def test_compose_runs_every_part_and_pins_the_collector_image(compose):
    services = compose["services"]
    assert set(PYTHON_SERVICES) | {"otel-collector"} <= set(services)
    image = services["otel-collector"]["image"]
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:\d+\.\d+\.\d+", image), image
    for name in PYTHON_SERVICES:
        assert "healthcheck" in services[name], name


def test_collector_outbox_and_sidecar_queue_live_on_volumes(compose):
    services = compose["services"]
    data_dir = services["collector"]["environment"]["COLLECTOR_DATA_DIR"]
    mounts = dict(volume.rsplit(":", 1)[::-1] for volume in services["collector"]["volumes"])
    assert mounts[data_dir] in compose["volumes"]
    storage = load_yaml("otel-collector.yaml")["extensions"]["file_storage"]["directory"]
    sidecar_mounts = [volume.split(":") for volume in services["otel-collector"]["volumes"]]
    assert any(source in compose["volumes"] and storage.startswith(target) for source, target, *_ in sidecar_mounts)


def test_every_compose_command_names_a_real_module_or_script(compose):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in PYTHON_SERVICES:
        command = compose["services"][name]["command"]
        assert command[0] == "python" and command[1] == "-m", command
        assert_runnable_module(command[2])
    assert scripts["phonoglyph-collector"].split(":")[0] == "collector.cli"


def test_dockerfile_cmd_names_a_real_module_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+$", dockerfile, re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd[:2] == ["python", "-m"]
    assert_runnable_module(cmd[2])
    exposed = {int(port) for port in re.search(r"^EXPOSE (.+)$", dockerfile, re.M).group(1).split()}
    assert command_port(cmd) in exposed and OTLP_HTTP_PORT in exposed


def assert_runnable_module(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:  # a package runs through its __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_api_port_is_the_same_everywhere(compose):
    api = compose["services"]["api"]
    port = command_port(api["command"])
    assert f"{port}:{port}" in api["ports"]
    assert f"127.0.0.1:{port}/health" in " ".join(api["healthcheck"]["test"])


def test_otlp_endpoints_agree_with_the_code_defaults(compose):
    from instrumentation._internal.config import DEFAULT_OTLP_ENDPOINT

    sidecar = load_yaml("otel-collector.yaml")
    receiver_port = port_of(sidecar["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    assert receiver_port == OTLP_HTTP_PORT == port_of(DEFAULT_OTLP_ENDPOINT)
    for name in ("api", "worker"):
        endpoint = compose["services"][name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert urlsplit(endpoint).hostname == "otel-collector" and port_of(endpoint) == receiver_port


def test_collector_endpoint_agrees_with_its_default_and_the_sidecar(compose):
    from collector.config import DEFAULT_ENDPOINT

    collector = compose["services"]["collector"]
    listen_port = port_of(collector["environment"]["COLLECTOR_ENDPOINT"])
    assert listen_port == port_of(DEFAULT_ENDPOINT) == OTLP_HTTP_PORT
    assert f"127.0.0.1:{listen_port}/readyz" in " ".join(collector["healthcheck"]["test"])
    url = compose["services"]["otel-collector"]["environment"]["PHONOGLYPH_COLLECTOR_URL"]
    assert urlsplit(url).hostname == "collector" and port_of(url) == listen_port
    replica = load_yaml("otel-collector-replica.yaml")["exporters"]["otlp_http/phonoglyph"]["endpoint"]
    assert urlsplit(replica).hostname == DEFAULT_ENDPOINT.rsplit(":", 1)[0]
    assert port_of(replica) == port_of(DEFAULT_ENDPOINT)


def standard_otel_variables() -> set[str]:
    import opentelemetry.sdk.environment_variables as sdk_variables

    names = {value for value in vars(sdk_variables).values() if isinstance(value, str)}
    return {name for name in names if name.startswith("OTEL_")}


def test_every_variable_compose_gives_the_python_services_is_read_by_the_code(compose, sources_text):
    standard = standard_otel_variables()
    for name in PYTHON_SERVICES:
        for variable in compose["services"][name]["environment"]:
            if variable in standard:
                continue
            assert f'"{variable}"' in sources_text, f"{name}: no code reads {variable}"


def test_the_variable_check_can_fail(sources_text):
    assert '"PHONOGLYPH_NO_SUCH_VARIABLE"' not in sources_text
    assert "OTEL_NO_SUCH_VARIABLE" not in standard_otel_variables()


def test_sidecar_variables_match_its_config(compose):
    referenced = set(ENV_REFERENCE.findall((ROOT / "otel-collector.yaml").read_text()))
    assert set(compose["services"]["otel-collector"]["environment"]) == referenced


def test_every_compose_variable_is_documented(compose):
    header = (ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)[:?}-]", header))
    documented = set(re.findall(r"^#   ([A-Z0-9_]+) ", header, re.M))
    assert interpolated <= documented, interpolated - documented
    deployment_doc = (ROOT / "docs" / "deployment.md").read_text()
    for service in compose["services"].values():
        for variable in service.get("environment", {}):
            assert f"`{variable}`" in deployment_doc, variable


# -- alerting: Alertmanager, Prometheus and the collector's rules (deploy/) ------------------

RULES_FILE = "deploy/prometheus/collector.rules.yml"
RULES_TEST_FILE = "deploy/prometheus/collector.rules.test.yml"


def mounts_of(service: dict) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (``./host:/container[:ro]``)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source[2:]
    return mounts


def flag(command: list[str], name: str) -> str:
    (value,) = [item.split("=", 1)[1] for item in command if item.startswith(f"--{name}=")]
    return value


@pytest.fixture(scope="module")
def collector_rules() -> list[dict]:
    return [rule for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"]]


def test_alertmanager_and_prometheus_are_pinned_official_images_with_mounted_configs(compose):
    services = compose["services"]
    alertmanager, prometheus = services["alertmanager"], services["prometheus"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", alertmanager["image"]), alertmanager["image"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"]), prometheus["image"]
    assert mounts_of(alertmanager)[flag(alertmanager["command"], "config.file")] == "deploy/alertmanager.yml"
    assert flag(alertmanager["command"], "cluster.listen-address") == ""  # one instance: no gossip port
    prometheus_mounts = mounts_of(prometheus)
    config_path = flag(prometheus["command"], "config.file")
    assert prometheus_mounts[config_path] == "deploy/prometheus/prometheus.yml"
    config_dir = config_path.rsplit("/", 1)[0]
    for rule_file in load_yaml("deploy/prometheus/prometheus.yml")["rule_files"]:
        assert prometheus_mounts[f"{config_dir}/{rule_file}"] == f"deploy/prometheus/{rule_file}"
    for name in ("alertmanager", "prometheus"):
        for host_path in mounts_of(services[name]).values():
            assert (ROOT / host_path).is_file(), host_path
        (published,) = services[name]["ports"]
        assert published.startswith("127.0.0.1:"), f"{name} answers on the host's loopback only"
        listen_port = port_of(flag(services[name]["command"], "web.listen-address"))
        assert published.endswith(f":{listen_port}") and f"127.0.0.1:{listen_port}/-/ready" in " ".join(
            services[name]["healthcheck"]["test"]
        )
        data_volume = [volume.split(":")[0] for volume in services[name]["volumes"] if not volume.startswith("./")]
        assert data_volume and set(data_volume) <= set(compose["volumes"])


def test_collector_pushes_its_alerts_to_the_compose_alertmanager(compose):
    from collector.config import CollectorConfig

    alertmanager_port = port_of(flag(compose["services"]["alertmanager"]["command"], "web.listen-address"))
    url = compose["services"]["collector"]["environment"]["COLLECTOR_ALERTMANAGER_URL"]
    assert urlsplit(url).hostname == "alertmanager" and port_of(url) == alertmanager_port
    assert urlsplit(url).path == ""  # the notifier appends /api/v2/alerts
    assert CollectorConfig.from_env({"COLLECTOR_ALERTMANAGER_URL": url}).alertmanager_url == url


def test_prometheus_scrapes_the_collector_and_sends_to_alertmanager(compose, collector_rules):
    config = load_yaml("deploy/prometheus/prometheus.yml")
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    (target,) = alertmanagers["static_configs"][0]["targets"]
    alertmanager_port = port_of(flag(compose["services"]["alertmanager"]["command"], "web.listen-address"))
    assert target == f"alertmanager:{alertmanager_port}"
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    collector_port = port_of(compose["services"]["collector"]["environment"]["COLLECTOR_ENDPOINT"])
    (down,) = [rule for rule in collector_rules if rule["alert"] == "PhonoglyphCollectorDown"]
    job = re.fullmatch(r'up\{job="([^"]+)"\} == 0', down["expr"]).group(1)
    assert jobs[job] == [f"collector:{collector_port}"]
    assert jobs["otel-collector"] == ["otel-collector:8889"]
    assert "8889:8889" in compose["services"]["otel-collector"]["ports"]


def test_every_collector_rule_is_labelled_annotated_and_unit_tested(collector_rules):
    tested = {
        case["alertname"] for test in load_yaml(RULES_TEST_FILE)["tests"] for case in test.get("alert_rule_test", [])
    }
    for rule in collector_rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool unit test"


def test_collector_rules_use_real_metric_names_and_label_values(collector_rules):
    """Metric names are the collector's; kind and reason values are string literals of its code, statuses
    HTTP statuses it names (a 5.. pattern: any 5xx)."""
    from collector.metrics import HELP, PREFIX

    collector_text = "\n".join(path.read_text() for path in sorted((ROOT / "collector").rglob("*.py")))
    for rule in collector_rules:
        for name in re.findall(rf"{PREFIX}(\w+)", rule["expr"]):
            assert name in HELP, f"{rule['alert']}: no metric {PREFIX}{name}"
        for label, values in re.findall(r'(kind|reason|status)=~?"([^"]+)"', rule["expr"]):
            for value in values.split("|"):
                if label == "status":
                    assert re.fullmatch(r"[45]\d\d|5\.\.", value), value
                    assert value.endswith("..") or re.search(rf"\b{value}\b", collector_text), value
                else:
                    assert f'"{value}"' in collector_text, f"{rule['alert']}: no {label} {value}"


def test_alertmanager_groups_by_alertname_and_severity_and_sends_resolved():
    config = load_yaml("deploy/alertmanager.yml")
    route = config["route"]
    assert route["group_by"] == ["alertname", "severity"]
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    for receiver_name in [route["receiver"]] + [child["receiver"] for child in route.get("routes", [])]:
        (webhook,) = receivers[receiver_name]["webhook_configs"]
        assert webhook["send_resolved"] is True


# -- OpenTelemetry Collector configs --------------------------------------------------------


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_pipelines_use_declared_components_and_declare_only_used_ones(name):
    config = load_yaml(name)
    service = config["service"]
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_id, pipeline in service["pipelines"].items():
        assert pipeline_id.split("/")[0] in {"traces", "metrics", "logs"}, pipeline_id
        assert pipeline["receivers"] and pipeline["exporters"], pipeline_id
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{pipeline_id} uses undeclared {kind[:-1]} {component}"
                used[kind].add(component)
    for kind, components in used.items():
        assert set(config.get(kind, {})) == components, f"declared but unused {kind}"
    assert set(service.get("extensions", [])) == set(config.get("extensions", {}))


# Component types of the pinned contrib release that these configs may use, as registered by that
# release (its distribution manifest lists the modules; the names are the components' type strings).
CONTRIB_VERSION = "0.159.0"
CONTRIB_TYPES = {
    "extensions": {"health_check", "file_storage"},
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "redaction", "filter", "batch"},
    "exporters": {"otlp_http", "prometheus", "loadbalancing"},
}


def test_sidecar_image_is_the_release_the_component_names_were_checked_against(compose):
    assert compose["services"]["otel-collector"]["image"].endswith(f":{CONTRIB_VERSION}")


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_components_are_types_of_the_pinned_release(name):
    config = load_yaml(name)
    for kind, types in CONTRIB_TYPES.items():
        for component_id in config.get(kind, {}):
            assert component_id.split("/")[0] in types, f"{name}: unknown {kind[:-1]} type {component_id}"


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_memory_limiter_comes_first(name):
    for pipeline_id, pipeline in load_yaml(name)["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", pipeline_id


def test_sidecar_routes_each_signal_where_the_design_says():
    config = load_yaml("otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    exporters = {pipeline_id: pipeline["exporters"] for pipeline_id, pipeline in pipelines.items()}
    assert exporters == {
        "traces/sentry": ["otlp_http/sentry"],
        "traces/analytics": ["otlp_http/phonoglyph"],
        "logs/analytics": ["otlp_http/phonoglyph"],
        "metrics": ["prometheus"],
    }
    for pipeline_id in ("traces/analytics", "logs/analytics"):
        assert "filter/analytics" in pipelines[pipeline_id]["processors"]
    for pipeline_id in ("traces/sentry", "traces/analytics", "logs/analytics"):
        assert "redaction" in pipelines[pipeline_id]["processors"]
    sentry = config["exporters"]["otlp_http/sentry"]
    assert sentry["headers"]["x-sentry-auth"] == "${env:SENTRY_OTLP_AUTH}"
    phonoglyph = config["exporters"]["otlp_http/phonoglyph"]
    assert phonoglyph["headers"]["authorization"] == "Bearer ${env:COLLECTOR_AUTH_TOKEN}"
    for exporter in (sentry, phonoglyph):
        assert exporter["sending_queue"]["storage"] == "file_storage"
        assert exporter["sending_queue"]["enabled"] is True


def test_analytics_filter_keeps_only_tagged_spans_and_named_events():
    analytics = load_yaml("otel-collector.yaml")["processors"]["filter/analytics"]
    assert analytics["traces"]["span"] == [f'attributes["{semconv.OPERATION}"] == nil']
    (log_condition,) = analytics["logs"]["log_record"]
    assert log_condition.startswith('event_name == ""')


def test_gateway_routes_by_trace_id_to_replicas_that_each_keep_their_own_outbox():
    gateway = load_yaml("otel-collector-gateway.yaml")["exporters"]["loadbalancing"]
    assert gateway["routing_key"] == "traceID"
    replica = load_yaml("otel-collector-replica.yaml")
    assert port_of(replica["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == int(
        gateway["resolver"]["dns"]["port"]
    )
    assert replica["exporters"]["otlp_http/phonoglyph"]["sending_queue"] == {"enabled": False}


# -- the redaction processor's patterns (RE2 syntax that Python's re also reads) -------------

SECRETS = {
    "bearer": "Authorization: Bearer s3cr3t-T0ken.value_123",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    "card": "paid with 4111 1111 1111 1111 today",
    "email": "contact: jane.doe@example.com",
    "query": "/api/files?token=abc123secret&x=1",
}
HARMLESS = {
    "uuid": "0b8f5c3e-4c1a-4e0e-9d3a-2f1b7c6d5e4f",
    "route": "/api/projects/{project_id}/renders",
    "timestamp": "2026-11-28T04:36:12.123456Z",
    "duration": "1834.5",
}


@pytest.fixture(scope="module")
def redaction() -> dict:
    return load_yaml("otel-collector.yaml")["processors"]["redaction"]


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_redaction_masks_seeded_secrets(redaction, kind):
    assert any(re.search(pattern, SECRETS[kind]) for pattern in redaction["blocked_values"]), kind


@pytest.mark.parametrize("kind", sorted(HARMLESS))
def test_redaction_leaves_ordinary_values(redaction, kind):
    assert not any(re.search(pattern, HARMLESS[kind]) for pattern in redaction["blocked_values"]), kind


def test_redaction_masks_secret_keys_and_keeps_the_analytics_keys(redaction):
    assert redaction["allow_all_keys"] is True
    (key_pattern,) = redaction["blocked_key_patterns"]
    for key in ("http.request.header.authorization", "api_key", "user.password", "session_token"):
        assert re.fullmatch(key_pattern, key), key
    keys = [semconv.OPERATION, semconv.OUTCOME, semconv.USER_ID, semconv.SESSION_ID, semconv.EVENT_ID]
    for key in keys + list(semconv.AUDIO_ATTRIBUTES):
        assert not re.fullmatch(key_pattern, key), key
