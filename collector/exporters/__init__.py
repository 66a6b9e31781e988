"""Exporters: one delivery attempt of a batch of PostHog events, failures classified.

An exporter never retries and never waits: the delivery worker (collector.delivery.worker)
acts on the class of the failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["ExportError", "Exporter", "Rejected", "RetryLater", "TooLarge", "Unauthorized"]


class Exporter(Protocol):
    def export(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Deliver the batch once; return on success, raise an ExportError subclass otherwise."""

    def shutdown(self) -> None:
        """Release connections; export is not called afterwards."""


class ExportError(Exception):
    """Base of the classified delivery failures."""


class RetryLater(ExportError):
    """Transient (408, 429, 5xx, network, timeout): back off, at least retry_after_s."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Rejected(ExportError):
    """400: some event of the batch is invalid; the worker bisects and dead-letters single events."""


class TooLarge(ExportError):
    """413: the request (or an event in it) is too large; the worker splits the batch."""


class Unauthorized(ExportError):
    """401/403: the API key is rejected; keep everything, retry slowly, say so loudly."""
