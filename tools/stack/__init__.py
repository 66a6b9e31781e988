"""The local stack: collector, api and worker as processes on loopback (``make demo``, ``make up``).

``python -m tools.stack demo`` starts the three processes on free ports with embedded defaults (no
PostHog key: the collector's local event store; Sentry only if ``SENTRY_DSN`` is set), drives the api with
the journeys, waits until every event is delivered, prints a summary and stops everything; it exits 0 only
if every step worked. ``python -m tools.stack up`` starts the same processes and keeps them running until
Ctrl-C or SIGTERM, then stops them in order (services first, so that their telemetry is flushed; the
collector last, once its outbox is drained).

Modules: ``supervisor`` (the processes: start, readiness, drain, stop), ``summary`` (what the demo prints
about the events in the collector's local store), ``commands`` (``demo``, ``up`` and the argument parser).
"""
