"""deploy/prometheus/ checked by the real promtool (Debian's `prometheus` package) and amtool (Debian's
`prometheus-alertmanager`): the configs parse, and every collector alert fires and stays silent where
collector.rules.test.yml says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "collector.rules.yml"
RULES_TEST = PROMETHEUS_DIR / "collector.rules.test.yml"

pytestmark = pytest.mark.integration


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: install Debian's {package} package (apt-get install {package})")
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return tool("promtool", "prometheus")


def run(*command: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules(promtool):
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool):
    result = run(promtool, "test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(promtool, tmp_path):
    """A rule that pages at once instead of after 2 minutes down breaks the unit tests."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("for: 2m", "for: 0m", 1))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = run(promtool, "test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "PhonoglyphCollectorDown" in result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config_and_the_rules_it_loads(promtool):
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert RULES.name in result.stdout


def test_amtool_checks_the_alertmanager_config():
    amtool = tool("amtool", "prometheus-alertmanager")
    result = run(amtool, "check-config", str(ROOT / "deploy" / "alertmanager.yml"), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
