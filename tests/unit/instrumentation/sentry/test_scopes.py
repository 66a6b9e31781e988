"""A request's own Sentry scopes, forked on first use (instrumentation/_internal/sentry/scopes.py)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk import scope as sentry_scope
from sentry_sdk.envelope import Envelope
from sentry_sdk.scope import Scope, ScopeType
from sentry_sdk.transport import Transport

from instrumentation._internal.sentry.scopes import ForkOnUse, RequestScope


class CapturingTransport(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.events.extend(item.payload.json for item in envelope.items if item.type == "event")


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    transport = CapturingTransport()
    sentry_sdk.init(dsn="http://publickey@127.0.0.1:9/1", transport=transport, default_integrations=False)
    try:
        yield transport.events
    finally:
        sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[Scope]:
    """Every scope Scope.fork() makes."""
    made: list[Scope] = []
    original = Scope.fork

    def fork(self: Scope) -> Scope:
        made.append(original(self))
        return made[-1]

    monkeypatch.setattr(Scope, "fork", fork)
    return made


def run_in_own_context(function: Any) -> Any:
    """Run ``function`` in a context of its own, with new scopes (the process's, for this test only)."""

    def run() -> Any:
        sentry_scope._isolation_scope.set(Scope(ty=ScopeType.ISOLATION))
        sentry_scope._current_scope.set(Scope(ty=ScopeType.CURRENT))
        return function()

    return contextvars.copy_context().run(run)


def test_a_request_that_uses_no_scope_forks_nothing(events: list[dict[str, Any]], forks: list[Scope]) -> None:
    def request() -> None:
        outer = (sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope())
        with RequestScope():
            assert sentry_sdk.get_isolation_scope() is not outer[0]
            assert sentry_sdk.get_current_scope() is not outer[1]
            assert sentry_sdk.get_client().is_active()  # the client is held: reading it forks nothing
        assert (sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()) == outer

    run_in_own_context(request)
    assert forks == []


def test_what_a_request_writes_stays_in_its_scopes_and_reaches_its_events(
    events: list[dict[str, Any]], forks: list[Scope]
) -> None:
    def request() -> None:
        sentry_sdk.set_tag("region", "eu")  # the process's own, before any request
        sentry_sdk.add_breadcrumb(message="started")
        outer_isolation, outer_current = sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()
        with RequestScope():
            sentry_sdk.add_breadcrumb(message="this request's own")
            sentry_sdk.set_tag("request", "r_1")
            sentry_sdk.get_current_scope().set_tag("current", "c_1")
            sentry_sdk.get_isolation_scope().set_level("warning")
            sentry_sdk.capture_message("boom")
        with RequestScope():
            sentry_sdk.capture_message("other")
        assert "request" not in outer_isolation._tags and "current" not in outer_current._tags
        assert [crumb["message"] for crumb in outer_isolation._breadcrumbs] == ["started"]
        assert outer_isolation._level is None

    run_in_own_context(request)
    sentry_sdk.flush()
    first, second = events
    assert first["tags"] == {"region": "eu", "request": "r_1", "current": "c_1"}
    assert [crumb["message"] for crumb in first["breadcrumbs"]["values"]] == ["started", "this request's own"]
    assert first["level"] == "warning"
    assert second["tags"] == {"region": "eu"}
    assert [crumb["message"] for crumb in second["breadcrumbs"]["values"]] == ["started"]
    assert second["level"] == "info"
    assert len(forks) == 4  # an event reads both scopes of its request


def test_a_write_before_any_read_lands_in_the_fork(events: list[dict[str, Any]]) -> None:
    def request() -> tuple[Scope, Scope]:
        outer = sentry_sdk.get_isolation_scope()
        with RequestScope() as isolation:
            isolation.set_level("fatal")  # sets a slot without reading one first
            return outer, sentry_sdk.get_isolation_scope()

    outer, inner = run_in_own_context(request)
    assert inner._level == "fatal" and outer._level is None


def test_a_reference_taken_before_the_fork_still_writes_to_it(events: list[dict[str, Any]]) -> None:
    def request() -> None:
        with RequestScope():
            held = sentry_sdk.get_isolation_scope()
            assert isinstance(held, ForkOnUse)
            sentry_sdk.add_breadcrumb(message="first use")  # forks, and the context now holds the fork
            assert sentry_sdk.get_isolation_scope() is not held
            held.set_tag("late", "1")
            assert sentry_sdk.get_isolation_scope()._tags == {"late": "1"}
            assert held._tags is sentry_sdk.get_isolation_scope()._tags

    run_in_own_context(request)


def test_other_contexts_of_the_request_share_its_fork(events: list[dict[str, Any]], forks: list[Scope]) -> None:
    """A thread pool or a child task runs in a copy of the request's context: what it writes is the
    request's, though the fork is made there."""

    async def request() -> dict[str, Any]:
        with RequestScope():
            await asyncio.get_running_loop().run_in_executor(
                None, contextvars.copy_context().run, sentry_sdk.set_tag, "thread", "t"
            )
            await asyncio.create_task(asyncio.sleep(0, sentry_sdk.set_tag("task", "k")))
            return dict(sentry_sdk.get_isolation_scope()._tags)

    assert run_in_own_context(lambda: asyncio.run(request())) == {"thread": "t", "task": "k"}
    assert len(forks) == 1


def test_threads_using_a_fresh_fork_at_once_make_one_fork(events: list[dict[str, Any]], forks: list[Scope]) -> None:
    threads_count = 8
    barrier = threading.Barrier(threads_count)

    def request() -> dict[str, Any]:
        with RequestScope() as isolation:

            def write(index: int) -> None:
                barrier.wait(timeout=10)
                isolation.set_tag(f"t{index}", index)

            threads = [threading.Thread(target=write, args=(index,)) for index in range(threads_count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=10)
            return dict(sentry_sdk.get_isolation_scope()._tags)

    assert run_in_own_context(request) == {f"t{index}": index for index in range(threads_count)}
    assert len(forks) == 1


def test_a_copy_of_a_fork_on_use_is_a_plain_scope_of_its_own(events: list[dict[str, Any]]) -> None:
    def request() -> None:
        with RequestScope() as isolation:
            isolation.set_tag("request", "r_1")
            copied = isolation.fork()
            assert type(copied) is Scope and copied._tags == {"request": "r_1"}
            copied.set_tag("copy", "only")
            assert isolation._tags == {"request": "r_1"}
            with sentry_sdk.isolation_scope() as nested:
                nested.set_tag("nested", "only")
            assert sentry_sdk.get_isolation_scope()._tags == {"request": "r_1"}

    run_in_own_context(request)


def test_setting_the_client_of_a_fork_on_use_sets_the_forks(events: list[dict[str, Any]]) -> None:
    def request() -> None:
        with RequestScope():
            current = sentry_sdk.get_current_scope()
            client = sentry_sdk.get_client()
            current.set_client(None)
            assert not current.client.is_active()
            assert not sentry_sdk.get_current_scope().client.is_active()
            current.set_client(client)

    run_in_own_context(request)
