"""Fixtures shared by the collector's integration tests."""

import pytest

from tests.fakes.posthog import FakePostHog


@pytest.fixture
def posthog():
    """A strict fake PostHog on 127.0.0.1 that accepts the project key ``phc_test``."""
    fake = FakePostHog(api_keys=("phc_test",)).start()
    try:
        yield fake
    finally:
        fake.stop()
