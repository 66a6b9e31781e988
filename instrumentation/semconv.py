"""Every attribute key and event name Phonoglyph's telemetry uses, defined once.

OpenTelemetry's own semantic-convention names are used where they exist (``user.id``,
``session.id``, ``error.type``, ``service.name``); ``phonoglyph.*`` keys are ours. The
instrumentation, the collector's PostHog mapping and the services all import from here.
"""

from __future__ import annotations

from typing import Final

# -- the analytics tag and the end of an operation ------------------------------------------
OPERATION: Final = "phonoglyph.operation"
"""Span attribute that tags an operation; the collector turns tagged spans into PostHog events."""
OUTCOME: Final = "phonoglyph.outcome"
"""``completed`` or ``failed``, set when the operation ends; ``abandoned`` when its work passed to another
attempt (no analytics outcome: that attempt reports it)."""
OUTCOME_COMPLETED: Final = "completed"
OUTCOME_FAILED: Final = "failed"
OUTCOME_ABANDONED: Final = "abandoned"
ERROR_TYPE: Final = "error.type"
"""Exception class name or machine-readable error code."""
DURATION_MS: Final = "phonoglyph.operation.duration_ms"
"""On an outcome event record (an unsampled operation): the operation's duration."""

# -- ids of what is processed ---------------------------------------------------------------
FILE_ID: Final = "phonoglyph.file.id"
PROJECT_ID: Final = "phonoglyph.project.id"
JOB_ID: Final = "phonoglyph.job.id"
RENDER_ID: Final = "phonoglyph.render.id"

# -- audio metadata -------------------------------------------------------------------------
AUDIO_DURATION_S: Final = "audio.duration_s"
AUDIO_SAMPLE_RATE_HZ: Final = "audio.sample_rate_hz"
AUDIO_CHANNELS: Final = "audio.channels"
FILE_SIZE: Final = "file.size"
AUDIO_ATTRIBUTES: Final = (AUDIO_DURATION_S, AUDIO_SAMPLE_RATE_HZ, AUDIO_CHANNELS, FILE_SIZE)

# -- credits and revenue (PostHog revenue analytics reads amount + currency) -------------------
CREDITS: Final = "phonoglyph.credits"
"""Credits bought (``credits_purchased``)."""
CREDITS_SPENT: Final = "phonoglyph.credits.spent"
"""Credits a render cost (``render_started``)."""
AMOUNT: Final = "amount"
"""What a purchase cost, in the currency's major unit (9.99, not 999)."""
CURRENCY: Final = "currency"
"""ISO 4217 code of ``amount``."""

# -- identity (OTel semconv names; carried in W3C baggage across processes) -----------------
USER_ID: Final = "user.id"
SESSION_ID: Final = "session.id"
USER_GUEST: Final = "phonoglyph.user.guest"

# -- product events -------------------------------------------------------------------------
EVENT_ID: Final = "phonoglyph.event.id"
"""A UUID fixed when a product event is emitted: the PostHog idempotency key."""

# -- resource -------------------------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
DEPLOYMENT_ENVIRONMENT: Final = "deployment.environment"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"
"""The newer name of ``deployment.environment``; read from ``OTEL_RESOURCE_ATTRIBUTES`` too."""

# -- HTTP server spans (OTel semconv names) ---------------------------------------------------
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_ROUTE: Final = "http.route"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
URL_QUERY: Final = "url.query"
URL_SCHEME: Final = "url.scheme"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# -- names ----------------------------------------------------------------------------------
OPERATIONS: Final = ("file_upload", "stem_separation", "audio_analysis", "render")
PRODUCT_EVENTS: Final = (
    "user_signed_up",
    "project_created",
    "file_uploaded",
    "render_started",
    "credits_purchased",
)
STARTED_SUFFIX: Final = "_started"
COMPLETED_SUFFIX: Final = "_completed"
FAILED_SUFFIX: Final = "_failed"
