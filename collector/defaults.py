"""Defaults that more than one module needs, defined once (a leaf module: it imports nothing).

``collector.config.SETTINGS`` is where each setting is described; the components use these for their own
keyword defaults, so that an ``Outbox`` or a ``PostHogExporter`` built without a configuration agrees with it.
"""

DEFAULT_ENDPOINT = "127.0.0.1:4318"
DEFAULT_DATA_DIR = "./.stack/collector"
DEFAULT_POSTHOG_HOST = "https://us.i.posthog.com"
DEFAULT_OUTBOX_MAX_BYTES = 256 * 2**20
DEFAULT_DEAD_LETTER_MAX_ROWS = 10_000
DEFAULT_DEAD_LETTER_MAX_BYTES = 64 * 2**20
DEFAULT_DRAIN_TIMEOUT_S = 10.0
