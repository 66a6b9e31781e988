from pathlib import Path

import pytest

from services.settings import FaultSettings, ServiceSettings


def test_defaults_live_under_dot_stack() -> None:
    settings = ServiceSettings.from_env({})
    assert (settings.db_path, settings.data_dir) == (Path(".stack/phonoglyph.db"), Path(".stack/data"))
    assert settings.billing_secret is None
    assert (settings.max_upload_bytes, settings.max_duration_s) == (20 * 1024 * 1024, 600.0)


def test_environment_overrides() -> None:
    settings = ServiceSettings.from_env(
        {
            "PHONOGLYPH_DB": "/tmp/x.db",
            "PHONOGLYPH_DATA_DIR": "/tmp/data",
            "PHONOGLYPH_BILLING_SECRET": "s",
            "PHONOGLYPH_MAX_UPLOAD_BYTES": "1000",
            "PHONOGLYPH_MAX_DURATION_S": "2.5",
            "PHONOGLYPH_JOB_LEASE_S": "9",
            "PHONOGLYPH_WORKER_POLL_INTERVAL_S": "0.05",
        }
    )
    assert (settings.db_path, settings.data_dir, settings.billing_secret) == (Path("/tmp/x.db"), Path("/tmp/data"), "s")
    assert (settings.max_upload_bytes, settings.max_duration_s, settings.job_lease_s) == (1000, 2.5, 9.0)
    assert settings.worker_poll_interval_s == 0.05


def test_an_empty_billing_secret_means_none() -> None:
    assert ServiceSettings.from_env({"PHONOGLYPH_BILLING_SECRET": ""}).billing_secret is None


def test_every_fault_switch_is_off_by_default() -> None:
    faults = ServiceSettings.from_env({}).faults
    assert faults == FaultSettings()
    assert (faults.separation_failure_rate, faults.http_5xx_rate, faults.operation, faults.operation_delay_s) == (
        0.0,
        0.0,
        None,
        0.0,
    )
    assert not faults.any_on


def test_fault_switches_from_the_environment() -> None:
    faults = ServiceSettings.from_env(
        {
            "PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE": "0.5",
            "PHONOGLYPH_FAULT_OPERATION": "render",
            "PHONOGLYPH_FAULT_OPERATION_DELAY_S": "2.5",
            "PHONOGLYPH_FAULT_HTTP_5XX_RATE": "1",
            "PHONOGLYPH_FAULT_HTTP_5XX_ROUTE": "/files",
        }
    ).faults
    assert faults == FaultSettings(
        separation_failure_rate=0.5,
        operation="render",
        operation_delay_s=2.5,
        http_5xx_rate=1.0,
        http_5xx_route="/files",
    )
    assert faults.any_on


@pytest.mark.parametrize("name", ["PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE", "PHONOGLYPH_FAULT_HTTP_5XX_RATE"])
def test_a_failure_rate_outside_0_to_1_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ServiceSettings.from_env({name: "1.5"})


def test_store_retry_settings_from_the_environment() -> None:
    settings = ServiceSettings.from_env({"PHONOGLYPH_DB_BUSY_TIMEOUT_S": "0.5", "PHONOGLYPH_STORE_RETRY_BUDGET_S": "3"})
    assert (settings.db_busy_timeout_s, settings.store_retry_budget_s) == (0.5, 3.0)


def test_token_lifetimes_default_to_30_days_and_7_for_guests_and_come_from_the_environment() -> None:
    defaults = ServiceSettings.from_env({})
    assert (defaults.api_token_ttl_s, defaults.guest_token_ttl_s) == (30 * 86400.0, 7 * 86400.0)
    settings = ServiceSettings.from_env({"PHONOGLYPH_API_TOKEN_TTL_S": "3600", "PHONOGLYPH_GUEST_TOKEN_TTL_S": "600"})
    assert (settings.api_token_ttl_s, settings.guest_token_ttl_s) == (3600.0, 600.0)


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_a_token_lifetime_that_is_not_positive_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="PHONOGLYPH_API_TOKEN_TTL_S"):
        ServiceSettings.from_env({"PHONOGLYPH_API_TOKEN_TTL_S": value})
