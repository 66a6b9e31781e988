import random

import pytest

from services.audio import wav
from services.billing import sign, verify
from services.journeys.driver import EXPECTED_REFUSALS, JourneyReport, UserJourney
from services.journeys.signals import BAD_UPLOADS, make_bad_upload, make_track


def test_generated_tracks_are_valid_wav_of_a_few_seconds() -> None:
    rng = random.Random(1)
    for _ in range(5):
        data, tempo_bpm = make_track(rng)
        audio = wav.decode(data)
        assert 2.0 <= audio.duration_s <= 4.0
        assert audio.channels in (1, 2) and 60 <= tempo_bpm <= 200


def test_the_same_seed_makes_the_same_track() -> None:
    assert make_track(random.Random(7)) == make_track(random.Random(7))


@pytest.mark.parametrize("kind", BAD_UPLOADS)
def test_each_bad_upload_kind_has_an_expected_refusal(kind: str) -> None:
    body, content_type = make_bad_upload(kind, random.Random(3))
    status, code = EXPECTED_REFUSALS[kind]
    if content_type == "audio/wav" and body:
        with pytest.raises(wav.AudioError) as caught:
            wav.decode(body)
        assert caught.value.code == code
    assert 400 <= status < 500


def test_signatures_verify_only_the_signed_body_with_the_secret() -> None:
    signature = sign(b'{"id": "evt_1"}', "secret")
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(b'{"id": "evt_1"}', "secret", signature)
    assert not verify(b'{"id": "evt_2"}', "secret", signature)
    assert not verify(b'{"id": "evt_1"}', "other", signature)
    assert not verify(b'{"id": "evt_1"}', "secret", None)


def test_the_report_summarises_counts_and_problems() -> None:
    ok = UserJourney(index=0, persona="member", user_id="u_1", steps=["signed up"])
    ok.counts.update({"uploads.accepted": 1, "signups": 1})
    broken = UserJourney(index=1, persona="guest", problem="POST /projects -> 500")
    report = JourneyReport(users=[ok, broken])
    assert report.problems == ["user 1: POST /projects -> 500"]
    assert report.summary() == ("summary: persona.guest=1, persona.member=1, signups=1, uploads.accepted=1, problems=1")
    assert ok.line().split() == ["user", "0", "u_1", "member", "signed", "up"]
