"""The API over real HTTP (uvicorn on loopback) with the instrumentation pipeline captured in memory."""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from instrumentation import semconv
from instrumentation.testing import capture
from services.api import create_app
from services.audio import wav
from services.billing import SIGNATURE_HEADER, sign
from services.settings import ServiceSettings
from tests.integration.services.conftest import BILLING_SECRET, Api, api_client, wav_body

pytestmark = pytest.mark.integration


def _server_span(api: Api, method: str, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The one server span of that request (it ends just after the response is sent: poll for it)."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        matches = [
            span for span in api.spans(**{"http.request.method": method, "url.path": path}) if span["kind"] == "SERVER"
        ]
        if matches or time.monotonic() > deadline_s:
            break
        time.sleep(0.02)
    assert len(matches) == 1, matches
    return matches[0]


# -- identity -------------------------------------------------------------------------------------
def test_a_guest_who_signs_up_stays_one_person(api: Api) -> None:
    guest = api.guest()
    guest_me = api.client.get("/users/me", headers=guest).json()
    project_id = api.project(guest)
    signed_up = api.client.post("/auth/signup", json={"email": "grace@example.test"}, headers=guest)
    assert signed_up.status_code == 201
    member = signed_up.json()
    assert (member["user_id"], member["session_id"]) == (guest_me["user_id"], guest_me["session_id"])
    me = api.client.get("/users/me", headers={"Authorization": f"Bearer {member['token']}"}).json()
    assert (me["guest"], me["credits"]) == (False, api.settings.guest_credits + api.settings.signup_credits)
    assert (
        api.client.get(f"/projects/{project_id}", headers={"Authorization": f"Bearer {member['token']}"}).status_code
        == 200
    )

    (created,) = api.events("project_created")
    (signup,) = api.events("user_signed_up")
    identity = (semconv.USER_ID, semconv.SESSION_ID)
    assert [created["attributes"][key] for key in identity] == [me["user_id"], me["session_id"]]
    assert [signup["attributes"][key] for key in identity] == [me["user_id"], me["session_id"]]
    assert created["attributes"][semconv.USER_GUEST] is True
    assert signup["attributes"][semconv.USER_GUEST] is False
    assert created["attributes"][semconv.PROJECT_ID] == project_id


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("GET", "/users/me", {}, None, 401, "unauthorized"),
        ("GET", "/users/me", {"Authorization": "Bearer pg_not-a-token"}, None, 401, "unauthorized"),
        ("GET", "/users/me", {"X-Guest-Session": "pgs_not-a-session"}, None, 401, "unauthorized"),
        ("POST", "/auth/signup", {}, {"email": "not-an-email"}, 422, "invalid_request"),
        ("GET", "/nowhere", {}, None, 404, "not_found"),
        ("DELETE", "/projects", {}, None, 405, "method_not_allowed"),
    ],
)
def test_request_errors_have_the_error_shape(
    api: Api, method: str, path: str, headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    answer = api.client.request(method, path, headers=headers, json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert isinstance(answer.json()["error"]["message"], str)


def test_ownership_email_and_guest_limits(api: Api) -> None:
    ada, _ = api.member("ada@example.test")
    bob, _ = api.member("bob@example.test")
    project_id = api.project(ada)
    file_id = api.upload(ada, project_id).json()["file_id"]
    assert api.client.get(f"/projects/{project_id}", headers=bob).json()["error"]["code"] == "project_not_found"
    assert api.client.get(f"/files/{file_id}", headers=bob).json()["error"]["code"] == "file_not_found"
    assert api.upload(bob, project_id).json()["error"]["code"] == "project_not_found"
    taken = api.client.post("/auth/signup", json={"email": "ada@example.test"})
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "email_taken")
    guest_token = api.client.post("/auth/tokens", headers=api.guest())
    assert (guest_token.status_code, guest_token.json()["error"]["code"]) == (403, "guest_not_allowed")
    second = api.client.post("/auth/tokens", headers=ada)
    assert second.status_code == 201
    assert api.client.get("/users/me", headers={"Authorization": f"Bearer {second.json()['token']}"}).status_code == 200


# -- uploads --------------------------------------------------------------------------------------
def _wav_with_format(format_tag: int, bits: int) -> bytes:
    fmt = struct.pack("<HHIIHH", format_tag, 1, 8000, 8000 * bits // 8, bits // 8 or 1, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 64) + b"\x00" * 64
    return b"RIFF" + struct.pack("<I", len(body)) + body


BAD_UPLOADS = {
    "unsupported_media_type": (wav_body(1.0), "text/plain", 415),
    "file_too_large": (b"RIFF" + b"\x00" * 400_001, "audio/wav", 413),
    "duration_too_long": (wav_body(6.0, sample_rate_hz=8000), "audio/wav", 422),
    "not_audio": (b"%PDF-1.7 " * 50, "audio/wav", 415),
    "corrupt_audio": (wav_body(1.0)[:10_000], "audio/x-wav", 422),
    "unsupported_encoding": (_wav_with_format(2, 4), "audio/wav", 422),
    "empty_audio": (wav.encode(np.zeros(0), 8000)[:44], "audio/wav", 422),
    "empty_file": (b"", "audio/wav", 400),
}


@pytest.mark.parametrize("code", sorted(BAD_UPLOADS))
def test_a_bad_upload_gets_its_exact_error_and_leaves_nothing(api: Api, code: str) -> None:
    body, content_type, status = BAD_UPLOADS[code]
    headers, _ = api.member()
    project_id = api.project(headers)
    answer = api.client.post(
        f"/projects/{project_id}/files", content=body, headers={**headers, "Content-Type": content_type}
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)

    (upload,) = api.spans(**{semconv.OPERATION: "file_upload"})
    assert upload["attributes"][semconv.OUTCOME] == semconv.OUTCOME_FAILED
    assert upload["attributes"][semconv.ERROR_TYPE] == code
    assert upload["attributes"][semconv.PROJECT_ID] == project_id
    assert upload["trace_id"] == _server_span(api, "POST", f"/projects/{project_id}/files")["trace_id"]
    assert api.events("file_uploaded") == []
    assert [path for path in api.settings.data_dir.rglob("*") if path.is_file()] == []
    assert api.db.read().execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0


def test_an_oversized_streamed_upload_is_cut_off_at_the_limit(api: Api) -> None:
    headers, _ = api.member()
    project_id = api.project(headers)
    chunks = (b"\x00" * 65_536 for _ in range(10))  # chunked: no Content-Length to check up front
    answer = api.client.post(
        f"/projects/{project_id}/files", content=chunks, headers={**headers, "Content-Type": "audio/wav"}
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "file_too_large")
    assert [path for path in api.settings.data_dir.rglob("*") if path.is_file()] == []


@pytest.mark.parametrize("bits_per_sample", [16, 24, 32])
def test_a_good_upload_is_stored_with_its_audio_metadata(api: Api, bits_per_sample: int) -> None:
    headers, _ = api.member()
    project_id = api.project(headers)
    body = wav_body(2.0, bits_per_sample=bits_per_sample)
    answer = api.upload(headers, project_id, body)
    assert answer.status_code == 201
    stored = answer.json()
    assert (stored["duration_s"], stored["sample_rate_hz"], stored["channels"], stored["size_bytes"]) == (
        2.0,
        22050,
        1,
        len(body),
    )
    (upload,) = api.spans(**{semconv.OPERATION: "file_upload"})
    assert upload["attributes"][semconv.OUTCOME] == semconv.OUTCOME_COMPLETED
    assert upload["attributes"][semconv.FILE_ID] == stored["file_id"]
    assert upload["attributes"][semconv.AUDIO_DURATION_S] == 2.0
    (uploaded,) = api.events("file_uploaded")
    assert uploaded["attributes"][semconv.FILE_SIZE] == len(body)
    assert uploaded["span_id"] == upload["span_id"]
    files = [path for path in api.settings.data_dir.rglob("*") if path.is_file()]
    assert [path.name for path in files] == [f"{stored['file_id']}.wav"]
    assert files[0].read_bytes() == body


# -- jobs: the worker joins the request's trace ---------------------------------------------------
def test_jobs_run_in_the_trace_of_the_request_that_queued_them(api: Api) -> None:
    headers, member = api.member()
    project_id = api.project(headers)
    file_id = api.upload(headers, project_id).json()["file_id"]
    stems = api.client.post(f"/files/{file_id}/stems", headers=headers)
    analysis = api.client.post(f"/files/{file_id}/analysis", headers=headers)
    render = api.client.post(f"/files/{file_id}/renders", headers=headers)
    assert [stems.status_code, analysis.status_code, render.status_code] == [202, 202, 202]
    assert render.json()["credits_balance"] == api.settings.signup_credits - api.settings.render_cost_credits
    assert api.run_worker() == 3

    for operation, path, job_id in [
        ("stem_separation", f"/files/{file_id}/stems", stems.json()["job_id"]),
        ("audio_analysis", f"/files/{file_id}/analysis", analysis.json()["job_id"]),
        ("render", f"/files/{file_id}/renders", render.json()["render_id"]),
    ]:
        request_span = _server_span(api, "POST", path)
        (job_span,) = api.spans(**{semconv.OPERATION: operation})
        assert job_span["trace_id"] == request_span["trace_id"]
        assert job_span["parent_span_id"] == request_span["span_id"]
        attributes = job_span["attributes"]
        assert attributes[semconv.OUTCOME] == semconv.OUTCOME_COMPLETED
        assert (attributes[semconv.JOB_ID], attributes[semconv.FILE_ID]) == (job_id, file_id)
        assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == (
            member["user_id"],
            member["session_id"],
        )
        assert attributes[semconv.AUDIO_SAMPLE_RATE_HZ] == 22050

    stem_job = api.client.get(f"/stems/{stems.json()['job_id']}", headers=headers).json()
    assert stem_job["status"] == "completed"
    assert set(stem_job["result"]["stems"]) == {"harmonic", "percussive"}
    assert "path" not in json.dumps(stem_job)  # server paths stay private
    harmonic = api.client.get(f"/stems/{stems.json()['job_id']}/harmonic.wav", headers=headers)
    assert wav.decode(harmonic.content).duration_s == pytest.approx(2.0)
    result = api.client.get(f"/files/{file_id}/analysis", headers=headers).json()["result"]
    assert result["tempo_bpm"] == pytest.approx(120.0, abs=2.0)
    again = api.client.post(f"/files/{file_id}/analysis", headers=headers)
    assert (again.status_code, again.json()["cached"]) == (200, True)
    image = api.client.get(f"/renders/{render.json()['render_id']}/image", headers=headers)
    assert (image.headers["content-type"], Image.open(io.BytesIO(image.content)).format) == ("image/png", "PNG")
    # one render_started per render: the api's product event (credits spent); the worker's render
    # operation leaves its start to it
    (product,) = api.events("render_started")
    assert semconv.OPERATION not in product["attributes"]
    assert product["attributes"][semconv.RENDER_ID] == render.json()["render_id"]
    assert product["attributes"][semconv.CREDITS_SPENT] == api.settings.render_cost_credits
    (render_span,) = api.spans(**{semconv.OPERATION: "render"})
    assert render_span["attributes"][semconv.RENDER_ID] == render.json()["render_id"]


def test_a_job_on_corrupt_stored_audio_is_a_failed_operation(api: Api) -> None:
    headers, _ = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    job_id = api.client.post(f"/files/{file_id}/stems", headers=headers).json()["job_id"]
    render_id = api.client.post(f"/files/{file_id}/renders", headers=headers).json()["render_id"]
    (stored,) = (api.settings.data_dir / "files").iterdir()
    stored.write_bytes(stored.read_bytes()[:1000])  # the disk lost the end of it
    assert api.run_worker() == 2
    job = api.client.get(f"/stems/{job_id}", headers=headers).json()
    assert (job["status"], job["error"]["code"]) == ("failed", "corrupt_audio")
    (span,) = api.spans(**{semconv.OPERATION: "stem_separation"})
    assert (span["attributes"][semconv.OUTCOME], span["attributes"][semconv.ERROR_TYPE]) == ("failed", "corrupt_audio")
    assert api.client.get(f"/renders/{render_id}", headers=headers).json()["status"] == "failed"
    assert api.client.get("/credits", headers=headers).json()["balance"] == api.settings.signup_credits  # refunded
    assert api.client.get(f"/renders/{render_id}/image", headers=headers).json()["error"]["code"] == "render_not_ready"


def test_render_without_enough_credits_is_402_and_a_failed_render(api: Api) -> None:
    guest = api.guest()
    file_id = api.upload(guest, api.project(guest)).json()["file_id"]
    answer = api.client.post(f"/files/{file_id}/renders", headers=guest)
    assert (answer.status_code, answer.json()["error"]["code"]) == (402, "insufficient_credits")
    (span,) = api.spans(**{semconv.OPERATION: "render"})
    assert (span["attributes"][semconv.OUTCOME], span["attributes"][semconv.ERROR_TYPE]) == (
        "failed",
        "insufficient_credits",
    )
    assert span["attributes"][semconv.FILE_ID] == file_id
    assert api.events("render_started") == []  # refused: render_failed alone, no start
    assert api.client.get("/credits", headers=guest).json()["balance"] == api.settings.guest_credits
    assert api.db.read().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


# -- billing webhook ------------------------------------------------------------------------------
def _purchase(user_id: str, event_id: str = "evt_1", session_id: str | None = "s_checkout") -> bytes:
    data = {"user_id": user_id, "session_id": session_id, "credits": 20, "amount_cents": 999, "currency": "EUR"}
    return json.dumps({"id": event_id, "type": "credits.purchased", "data": data}).encode()


def _post_webhook(api: Api, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return api.client.post("/billing/webhook", content=body, headers=headers)


def test_a_signed_purchase_credits_once_and_emits_credits_purchased(api: Api) -> None:
    headers, member = api.member()
    body = _purchase(member["user_id"], session_id=member["session_id"])
    first = _post_webhook(api, body, sign(body, BILLING_SECRET))
    replay = _post_webhook(api, body, sign(body, BILLING_SECRET))
    assert (first.status_code, first.json()["status"]) == (200, "credited")
    assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert api.client.get("/credits", headers=headers).json()["balance"] == api.settings.signup_credits + 20
    (purchased,) = api.events("credits_purchased")
    attributes = purchased["attributes"]
    assert (attributes["amount"], attributes["currency"], attributes["phonoglyph.credits"]) == (9.99, "EUR", 20)
    assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == (member["user_id"], member["session_id"])
    assert attributes[semconv.USER_GUEST] is False


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong_secret", 401, "invalid_signature"),
        ("no_signature", 401, "invalid_signature"),
        ("body_changed_after_signing", 401, "invalid_signature"),
        ("not_json", 400, "invalid_payload"),
        ("unknown_user", 404, "user_not_found"),
        ("too_large", 413, "payload_too_large"),
    ],
)
def test_a_bad_webhook_gets_its_exact_error_and_credits_nothing(api: Api, case: str, status: int, code: str) -> None:
    headers, member = api.member()
    body = _purchase(member["user_id"])
    signature: str | None = sign(body, BILLING_SECRET)
    if case == "wrong_secret":
        signature = sign(body, "not-the-secret")
    elif case == "no_signature":
        signature = None
    elif case == "body_changed_after_signing":
        body = body.replace(b'"credits": 20', b'"credits": 2000')
    elif case == "not_json":
        body = b"credits please"
        signature = sign(body, BILLING_SECRET)
    elif case == "unknown_user":
        body = _purchase("u_nobody")
        signature = sign(body, BILLING_SECRET)
    elif case == "too_large":
        body = body + b" " * 70_000
        signature = sign(body, BILLING_SECRET)
    answer = _post_webhook(api, body, signature)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert api.client.get("/credits", headers=headers).json()["balance"] == api.settings.signup_credits
    assert api.events("credits_purchased") == []


@pytest.fixture
def unsampled_api(settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    with capture(service_name="phonoglyph-api") as captured:
        app = create_app(settings)
        with api_client(app) as client:
            yield Api(client, captured, settings, app.state.db)


def test_with_no_trace_sampled_every_outcome_still_arrives_as_an_event(unsampled_api: Api) -> None:
    api = unsampled_api
    headers, member = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    api.client.post(f"/files/{file_id}/stems", headers=headers)
    refused = api.upload(headers, api.project(headers), b"not a wav file")
    assert refused.json()["error"]["code"] == "not_audio"
    assert api.run_worker() == 1
    assert api.captured.spans() == []
    records = [(event["event_name"], event["attributes"]) for event in api.captured.events()]
    assert [name for name, _attributes in records] == [
        "user_signed_up",
        "project_created",
        "file_upload_started",
        "file_uploaded",
        "file_upload_completed",
        "project_created",
        "file_upload_started",
        "file_upload_failed",
        "stem_separation_started",
        "stem_separation_completed",
    ]
    assert {attributes[semconv.USER_ID] for _name, attributes in records} == {member["user_id"]}
    failed = dict(records)["file_upload_failed"]
    assert (failed[semconv.ERROR_TYPE], failed[semconv.OUTCOME]) == ("not_audio", "failed")
    completed = dict(records)["stem_separation_completed"]
    assert completed[semconv.FILE_ID] == file_id and completed[semconv.DURATION_MS] > 0
