"""Simulated users: members, guests who sign up midway, and guests who stay guests.

Some upload a bad file first, some run out of credits, some buy credits through the billing
webhook (signed as the billing provider signs it) and replay it. Bounded: N users, one overall
deadline, every job polled until it ends or the deadline passes.

``stems_only``: every user is a guest who uploads one track and asks for its stems, nothing else (the
demo's incident traffic, sent while a fault switch makes the worker fail separations). There a failed
separation is an answer; only a job that never ends is a problem. Guests never sign up, so this traffic
stays out of the signup funnel.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

from services.billing import SIGNATURE_HEADER, sign
from services.journeys.client import ApiClient, Response
from services.journeys.signals import BAD_UPLOADS, make_bad_upload, make_track

# what the API must answer for each bad upload: (status, error code)
EXPECTED_REFUSALS = {
    "wrong_content_type": (415, "unsupported_media_type"),
    "not_audio": (415, "not_audio"),
    "corrupt_audio": (422, "corrupt_audio"),
    "empty_file": (400, "empty_file"),
}
PERSONAS = ("member", "guest_converts", "guest")
STEMS_ONLY = "stems_only"
PERSONA_WEIGHTS = (4, 3, 3)
JOB_POLL_INTERVAL_S = 0.1
PURCHASE = {"credits": 20, "amount_cents": 999, "currency": "EUR"}


class UnexpectedAnswer(Exception):
    pass


@dataclass
class UserJourney:
    index: int
    persona: str
    user_id: str | None = None
    steps: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    problem: str | None = None

    def line(self) -> str:
        outcome = f"  PROBLEM: {self.problem}" if self.problem else ""
        return f"user {self.index:3d} {self.user_id or '-':20s} {self.persona:15s} {', '.join(self.steps)}{outcome}"


@dataclass
class JourneyReport:
    users: list[UserJourney]

    @property
    def problems(self) -> list[str]:
        return [f"user {user.index}: {user.problem}" for user in self.users if user.problem]

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for user in self.users:
            total.update(user.counts)
            total[f"persona.{user.persona}"] += 1
        return total

    def summary(self) -> str:
        totals = self.totals()
        return (
            "summary: "
            + ", ".join(f"{key}={totals[key]}" for key in sorted(totals))
            + (f", problems={len(self.problems)}")
        )


class _Journey:
    def __init__(
        self, client: ApiClient, rng: random.Random, user: UserJourney, billing_secret: str | None, deadline_s: float
    ) -> None:
        self.client = client
        self.rng = rng
        self.user = user
        self.billing_secret = billing_secret
        self.deadline_s = deadline_s
        self.headers: dict[str, str] = {}
        self.session_id: str | None = None

    def call(self, method: str, path: str, expect: tuple[int, ...], **kwargs: object) -> Response:
        answer = self.client.request(method, path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)
        if answer.status not in expect:
            raise UnexpectedAnswer(f"{method} {path} -> {answer.status} {answer.body[:200]!r}")
        return answer

    def run(self) -> None:
        user = self.user
        if user.persona == STEMS_ONLY:
            self.stems_only()
            return
        if user.persona == "member":
            self.sign_up()
        else:
            self.guest_session()
        project_id = self.call("POST", "/projects", (201,), json_body={"name": f"journey {user.index}"}).json()[
            "project_id"
        ]
        user.counts["projects"] += 1
        if self.rng.random() < 0.35:
            self.bad_upload(project_id)
        file_id = self.upload(project_id)
        if user.persona == "guest_converts":
            self.sign_up()
        jobs = [
            ("stems", self.call("POST", f"/files/{file_id}/stems", (202,)).json()["job_id"], "/stems/"),
            ("analysis", self.call("POST", f"/files/{file_id}/analysis", (202,)).json()["job_id"], "/analysis/"),
        ]
        renders = self.renders(file_id)
        for name, job_id, prefix in jobs + [("render", render_id, "/renders/") for render_id in renders]:
            status = self.wait_for(prefix + job_id)
            user.counts[f"{name}.{status}"] += 1
            if status != "completed":
                raise UnexpectedAnswer(f"{name} job {job_id} ended {status}")
        for render_id in renders[:1]:
            image = self.call("GET", f"/renders/{render_id}/image", (200,))
            if not image.body.startswith(b"\x89PNG"):
                raise UnexpectedAnswer("the render is not a PNG")
        user.steps.append(f"stems+analysis+{len(renders)} render(s) completed")

    def stems_only(self) -> None:
        """A guest: one project, one upload, one stem separation; completed or failed are both answers."""
        self.guest_session()
        project_id = self.call("POST", "/projects", (201,), json_body={"name": f"stems {self.user.index}"}).json()[
            "project_id"
        ]
        self.user.counts["projects"] += 1
        file_id = self.upload(project_id)
        job_id = self.call("POST", f"/files/{file_id}/stems", (202,)).json()["job_id"]
        status = self.wait_for(f"/stems/{job_id}")
        self.user.counts[f"stems.{status}"] += 1
        if status not in ("completed", "failed"):
            raise UnexpectedAnswer(f"stems job {job_id} ended {status}")
        self.user.steps.append(f"stems {status}")

    def guest_session(self) -> None:
        guest = self.call("POST", "/auth/guest", (201,)).json()
        self.user.user_id, self.session_id = guest["user_id"], guest["session_id"]
        self.headers = {"X-Guest-Session": guest["guest_token"]}
        self.user.steps.append("guest session")

    def sign_up(self) -> None:
        email = f"journey-{self.user.index}-{secrets.token_hex(4)}@example.test"
        answer = self.call("POST", "/auth/signup", (201,), json_body={"email": email}).json()
        if self.user.user_id not in (None, answer["user_id"]):
            raise UnexpectedAnswer("a guest who signed up got a new user id")
        self.user.user_id, self.session_id = answer["user_id"], answer["session_id"]
        self.headers = {"Authorization": f"Bearer {answer['token']}"}
        self.user.counts["signups"] += 1
        self.user.steps.append("signed up")

    def bad_upload(self, project_id: str) -> None:
        kind = self.rng.choice(BAD_UPLOADS)
        body, content_type = make_bad_upload(kind, self.rng)
        status, code = EXPECTED_REFUSALS[kind]
        answer = self.call(
            "POST", f"/projects/{project_id}/files", (status,), body=body, headers={"Content-Type": content_type}
        )
        if answer.error_code != code:
            raise UnexpectedAnswer(f"bad upload {kind}: error code {answer.error_code}, expected {code}")
        self.user.counts["uploads.refused"] += 1
        self.user.steps.append(f"bad upload refused ({status} {code})")

    def upload(self, project_id: str) -> str:
        body, tempo_bpm = make_track(self.rng)
        answer = self.call(
            "POST",
            f"/projects/{project_id}/files?filename=track.wav",
            (201,),
            body=body,
            headers={"Content-Type": "audio/wav"},
        ).json()
        self.user.counts["uploads.accepted"] += 1
        self.user.steps.append(f"uploaded {answer['duration_s']:.1f}s at {tempo_bpm:.0f} BPM")
        return answer["file_id"]

    def renders(self, file_id: str) -> list[str]:
        """Render until refused (402) or content; maybe buy credits after a refusal and render again."""
        started: list[str] = []
        wanted = self.rng.choice((1, 1, 3))
        while len(started) < wanted:
            answer = self.call("POST", f"/files/{file_id}/renders", (202, 402))
            if answer.status == 202:
                started.append(answer.json()["render_id"])
                self.user.counts["renders.started"] += 1
                continue
            self.user.counts["renders.refused_402"] += 1
            self.user.steps.append("out of credits (402)")
            if self.billing_secret is None or self.rng.random() < 0.3:
                break
            self.purchase()
            wanted = len(started) + 1
        return started

    def purchase(self) -> None:
        assert self.billing_secret is not None
        event = {
            "id": f"evt_{secrets.token_hex(8)}",
            "type": "credits.purchased",
            "data": {"user_id": self.user.user_id, "session_id": self.session_id, **PURCHASE},
        }
        body = json.dumps(event).encode()
        signed = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.billing_secret)}
        if self.call("POST", "/billing/webhook", (200,), body=body, headers=signed).json()["status"] != "credited":
            raise UnexpectedAnswer("the purchase was not credited")
        self.user.counts["purchases"] += 1
        self.user.steps.append(f"bought {PURCHASE['credits']} credits")
        if self.rng.random() < 0.5:  # the billing provider retries: no double credit
            if self.call("POST", "/billing/webhook", (200,), body=body, headers=signed).json()["status"] != "duplicate":
                raise UnexpectedAnswer("a replayed purchase was credited twice")
            self.user.counts["purchases.replayed"] += 1

    def wait_for(self, path: str) -> str:
        while True:
            status = self.call("GET", path, (200,)).json()["status"]
            if status in ("completed", "failed"):
                return status
            if time.monotonic() > self.deadline_s:
                return "timed_out"
            time.sleep(JOB_POLL_INTERVAL_S)


def run_journeys(
    base_url: str,
    *,
    users: int,
    seed: int = 0,
    billing_secret: str | None = None,
    deadline_s: float = 120.0,
    on_user: object = None,
    stems_only: bool = False,
) -> JourneyReport:
    """Run ``users`` journeys one after another; ``on_user(journey)`` is called after each.

    ``stems_only``: every user is a guest who only asks for one track's stems (module docstring)."""
    rng = random.Random(seed)
    client = ApiClient(base_url)
    deadline_at_s = time.monotonic() + deadline_s
    report = JourneyReport(users=[])
    for index in range(users):
        persona = STEMS_ONLY if stems_only else rng.choices(PERSONAS, PERSONA_WEIGHTS)[0]
        user = UserJourney(index=index, persona=persona)
        if time.monotonic() > deadline_at_s:
            user.problem = "not started: the deadline passed"
        else:
            try:
                _Journey(client, random.Random(rng.random()), user, billing_secret, deadline_at_s).run()
            except (UnexpectedAnswer, OSError) as exc:
                user.problem = str(exc)
        report.users.append(user)
        if callable(on_user):
            on_user(user)
    return report
