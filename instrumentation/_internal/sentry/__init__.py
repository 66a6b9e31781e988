"""Sentry in process: errors linked to the OTel trace, scrubbed, with audio context; spans over OTLP.

One module per concept:

- ``client``: :func:`~.client.setup_sentry` / :func:`~.client.shutdown_sentry`, which wire the rest;
- ``scopes``: each request's own Sentry scopes, forked on first use;
- ``propagation``: the ``sentry-trace`` header (one parser, one formatter, the propagator);
- ``spans``: the span path to Sentry's OTLP endpoint;
- ``request_errors``: reporting an exception that leaves an instrumented app, with its request data;
- ``exceptions``: stamping an exception with the span (and identity) it left;
- ``events``: ``before_send`` / ``before_breadcrumb`` (scrubbing, operation and audio context).

See docs/architecture.md, "Sentry".
"""
