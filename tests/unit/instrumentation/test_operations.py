from __future__ import annotations

import asyncio

import pytest

from instrumentation import OperationAbandoned, identify, operation, semconv
from instrumentation._internal.operations import EXCEPTION_CONTEXT_ATTR
from instrumentation.testing import Captured


class RenderError(Exception):
    pass


def test_operation_is_a_tagged_span_with_a_started_event_and_an_outcome(captured: Captured) -> None:
    with operation("render", {semconv.FILE_ID: "f_1"}, **{semconv.RENDER_ID: "r_1"}) as span:
        span.set_attribute(semconv.AUDIO_DURATION_S, 12.5)

    [span_dict] = captured.spans()
    assert span_dict["name"] == "render"
    assert span_dict["status"] == "UNSET"
    assert span_dict["attributes"] == {
        semconv.OPERATION: "render",
        semconv.FILE_ID: "f_1",
        semconv.RENDER_ID: "r_1",
        semconv.AUDIO_DURATION_S: 12.5,
        semconv.OUTCOME: "completed",
    }
    [started] = captured.events()
    assert started["event_name"] == "render_started"
    assert (started["trace_id"], started["span_id"]) == (span_dict["trace_id"], span_dict["span_id"])
    assert started["attributes"][semconv.OPERATION] == "render"
    assert started["attributes"][semconv.FILE_ID] == "f_1"
    assert len(started["attributes"][semconv.EVENT_ID]) == 36


def test_failed_operation_records_the_exception_and_reraises_it_unchanged(captured: Captured) -> None:
    error = RenderError("codec exploded")
    with identify(user_id="u_1", session_id="s_1"):
        with pytest.raises(RenderError) as raised:
            with operation("render", {semconv.FILE_ID: "f_1"}) as span:
                span.set_attribute(semconv.AUDIO_SAMPLE_RATE_HZ, 44100)
                raise error
    assert raised.value is error

    [span_dict] = captured.spans()
    assert span_dict["status"] == "ERROR"
    assert span_dict["attributes"][semconv.OUTCOME] == "failed"
    assert span_dict["attributes"][semconv.ERROR_TYPE] == "RenderError"
    assert [event["name"] for event in span_dict["events"]] == ["exception"]
    assert getattr(error, EXCEPTION_CONTEXT_ATTR) == {
        "operation": "render",
        "trace_id": span_dict["trace_id"],
        "span_id": span_dict["span_id"],
        semconv.USER_ID: "u_1",
        semconv.SESSION_ID: "s_1",
        semconv.USER_GUEST: False,
        semconv.OPERATION: "render",
        semconv.OUTCOME: "failed",
        semconv.FILE_ID: "f_1",
        semconv.AUDIO_SAMPLE_RATE_HZ: 44100,
    }


def test_innermost_operation_sets_the_exception_context(captured: Captured) -> None:
    with pytest.raises(RenderError) as raised:
        with operation("render"):
            with operation("stem_separation"):
                raise RenderError
    assert getattr(raised.value, EXCEPTION_CONTEXT_ATTR)["operation"] == "stem_separation"
    spans = {span["name"]: span for span in captured.spans()}
    assert spans["stem_separation"]["parent_span_id"] == spans["render"]["span_id"]
    assert spans["render"]["attributes"][semconv.OUTCOME] == "failed"


def test_decorator_form_sync_and_async(captured: Captured) -> None:
    @operation("audio_analysis", {semconv.JOB_ID: "j_1"})
    def analyse(x: int) -> int:
        return x * 2

    @operation("stem_separation")
    async def separate(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert analyse(2) == 4
    assert analyse(3) == 6
    assert asyncio.run(separate(1)) == 2
    names = sorted(span["name"] for span in captured.spans())
    assert names == ["audio_analysis", "audio_analysis", "stem_separation"]
    assert {span["span_id"] for span in captured.spans()}.__len__() == 3


async def test_async_context_manager_form(captured: Captured) -> None:
    async with operation("file_upload", file_size=10) as span:
        span.set_attribute(semconv.FILE_SIZE, 2048)
    [span_dict] = captured.spans()
    assert span_dict["attributes"][semconv.FILE_SIZE] == 2048


def test_duration_histogram_by_operation_and_outcome(captured: Captured) -> None:
    with operation("render"):
        pass
    with pytest.raises(RenderError):
        with operation("render"):
            raise RenderError
    points = captured.histogram_points("phonoglyph.operation.duration")
    assert sorted((p["attributes"][semconv.OUTCOME], p["count"]) for p in points) == [("completed", 1), ("failed", 1)]
    assert all(p["attributes"][semconv.OPERATION] == "render" for p in points)


def test_unsampled_operation_emits_its_outcome_as_an_event_record(unsampled: Captured) -> None:
    with identify(user_id="u_9"):
        with operation("stem_separation", {semconv.FILE_ID: "f_2"}) as span:
            span.set_attribute(semconv.AUDIO_CHANNELS, 2)
        with pytest.raises(RenderError) as raised:
            with operation("render"):
                raise RenderError

    assert unsampled.spans() == []
    events = unsampled.events()
    assert [e["event_name"] for e in events] == [
        "stem_separation_started",
        "stem_separation_completed",
        "render_started",
        "render_failed",
    ]
    started, completed, _, failed = events
    assert completed["span_id"] == started["span_id"] and completed["trace_id"] == started["trace_id"]
    assert completed["span_id"] is not None
    duration_ms = completed["attributes"].pop(semconv.DURATION_MS)
    assert duration_ms >= 0
    assert completed["attributes"] == {
        semconv.OPERATION: "stem_separation",
        semconv.OUTCOME: "completed",
        semconv.FILE_ID: "f_2",
        semconv.AUDIO_CHANNELS: 2,
        semconv.USER_ID: "u_9",
        semconv.USER_GUEST: False,
    }
    assert semconv.EVENT_ID not in completed["attributes"]
    assert failed["attributes"][semconv.ERROR_TYPE] == "RenderError"
    assert getattr(raised.value, EXCEPTION_CONTEXT_ATTR)["span_id"] == failed["span_id"]


def test_sampled_operation_emits_no_outcome_event_record(captured: Captured) -> None:
    with operation("render"):
        pass
    assert [e["event_name"] for e in captured.events()] == ["render_started"]


@pytest.mark.parametrize("sampled", [True, False])
def test_started_event_can_be_left_to_a_product_event(sampled: bool, request: pytest.FixtureRequest) -> None:
    capture: Captured = request.getfixturevalue("captured" if sampled else "unsampled")

    @operation("render", started_event=False)
    def render() -> None:
        pass

    render()
    with operation("render", {semconv.RENDER_ID: "r_2"}, started_event=False) as span:
        span.set_attribute(semconv.AUDIO_CHANNELS, 1)
    names = [e["event_name"] for e in capture.events()]
    assert "render_started" not in names
    outcomes = names if not sampled else [s["attributes"][semconv.OUTCOME] for s in capture.spans()]
    assert outcomes == (["render_completed"] * 2 if not sampled else ["completed"] * 2)


def test_operation_works_before_configure() -> None:
    with operation("render") as span:
        span.set_attribute(semconv.FILE_ID, "f")
    assert not span.is_recording()


def test_an_abandoned_operation_has_no_outcome_and_is_no_error(captured: Captured) -> None:
    """Its work passed to another attempt, which reports the one outcome: the span says abandoned (the
    collector maps it to nothing), not failed, and the exception is re-raised unchanged."""
    error = OperationAbandoned("attempt 1 lost its lease")
    with pytest.raises(OperationAbandoned) as raised:
        with operation("stem_separation"):
            raise error
    assert raised.value is error
    [span] = captured.spans()
    assert span["attributes"][semconv.OUTCOME] == "abandoned"
    assert span["status"] != "ERROR" and semconv.ERROR_TYPE not in span["attributes"]
    assert [e["event_name"] for e in captured.events()] == ["stem_separation_started"]
    assert getattr(error, EXCEPTION_CONTEXT_ATTR, None) is None


def test_an_unsampled_abandoned_operation_emits_no_outcome_record(unsampled: Captured) -> None:
    with pytest.raises(OperationAbandoned):
        with operation("render", started_event=False):
            raise OperationAbandoned("lost")
    assert unsampled.spans() == [] and unsampled.events() == []
