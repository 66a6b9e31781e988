"""``before_send`` and ``before_breadcrumb``: every Sentry event and breadcrumb is scrubbed whole.

``before_send`` also adds what the exception carries from the operation it left: tag ``operation``,
context ``audio_processing``, the user id and the OTel trace id. An event that cannot be scrubbed is
dropped and counted, never sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from instrumentation import semconv
from instrumentation._internal.sentry.exceptions import current_details, exception_details
from instrumentation._internal.sentry.request_errors import REQUEST_SCOPE_HINT, is_client_error, request_secrets
from instrumentation._internal.stats import STATS
from instrumentation.scrubbing import SCRUBBED, SCRUBBED_ATTRIBUTE, Scrubber

_logger = logging.getLogger("instrumentation")

OPERATION_TAG: Final = "operation"
AUDIO_CONTEXT: Final = "audio_processing"


def annotate(event: dict[str, Any], details: Mapping[str, Any]) -> None:
    """Put ``details`` on ``event``: the trace context, tag ``operation``, context ``audio_processing``
    (the operation's audio attributes and ids) and the user id."""
    contexts = event.setdefault("contexts", {})
    trace_id = details.get("trace_id")
    if trace_id and contexts.get("trace", {}).get("trace_id") != trace_id:
        contexts["trace"] = {"trace_id": trace_id, "span_id": details.get("span_id")}
    operation = details.get("operation")
    if operation:
        event.setdefault("tags", {})[OPERATION_TAG] = operation
        audio = {"operation": operation}
        for key, value in details.items():
            if key in semconv.AUDIO_ATTRIBUTES or (key.startswith("phonoglyph.") and key.endswith(".id")):
                audio[key] = value
        contexts[AUDIO_CONTEXT] = audio
    user_id = details.get(semconv.USER_ID)
    if user_id:
        user = event.get("user")
        if not isinstance(user, dict):
            user = {}
        user["id"] = user_id
        event["user"] = user


def before_send(scrubber: Scrubber, event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """The event scrubbed (paths in ``extra["phonoglyph.scrubbed"]``) and annotated; None drops it:
    a client error (an ``HTTPException`` below 500), or an event scrubbing failed on."""
    exc_info = hint.get("exc_info")
    if exc_info and is_client_error(exc_info[1]):  # e.g. uvicorn logging a 4xx that left the app
        return None
    try:
        meta = event.pop("_meta", None)  # Sentry's annotations: lengths and remarks, never values
        # installed packages and their versions: names such as pwdlib or tokenizers are no secrets
        modules = event.pop("modules", None)
        scrubbed, paths = scrubber.scrub(event)
        scope = hint.get(REQUEST_SCOPE_HINT)
        if isinstance(scope, Mapping):
            scrubbed = _scrub_known(scrubbed, request_secrets(scope, scrubber.is_sensitive_key), paths)
        if meta is not None:
            scrubbed["_meta"] = meta
        if isinstance(modules, dict):
            scrubbed["modules"] = {
                name: scrubber.scrub_string(version) if isinstance(version, str) else version
                for name, version in modules.items()
            }
        if paths:
            scrubbed.setdefault("extra", {})[SCRUBBED_ATTRIBUTE] = paths
        annotate(scrubbed, {**current_details(), **exception_details(hint)})
        return scrubbed
    except Exception:
        STATS.increment("sentry_events_dropped_unscrubbed")
        _logger.exception("instrumentation error: a Sentry event was dropped because scrubbing failed")
        return None


def _scrub_known(event: dict[str, Any], secrets: set[str], paths: list[str]) -> dict[str, Any]:
    """Replace every occurrence of ``secrets`` (the request's own) in the event's strings."""
    if not secrets:
        return event
    pattern = re.compile("|".join(re.escape(secret) for secret in sorted(secrets, key=len, reverse=True)))

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):
            scrubbed = pattern.sub(SCRUBBED, value)
            if scrubbed != value:
                paths.append(path)
                return scrubbed
            return value
        if isinstance(value, dict):
            return {key: walk(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return value

    result: dict[str, Any] = walk(event, "")
    return result


def before_breadcrumb(scrubber: Scrubber, crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """The breadcrumb scrubbed (the same object when clean); None drops one scrubbing failed on."""
    try:
        return scrubber.scrub(crumb)[0]
    except Exception:
        STATS.increment("sentry_breadcrumbs_dropped_unscrubbed")
        return None
