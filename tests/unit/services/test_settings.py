from pathlib import Path

from services.settings import ServiceSettings


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
