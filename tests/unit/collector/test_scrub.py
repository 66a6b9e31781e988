"""collector/processors/scrub.py: events' properties re-scrubbed in place with the shared policy."""

import pytest

from collector.processors.scrub import ScrubProcessor
from instrumentation.scrubbing import Scrubber, ScrubbingConfig

CASES = [
    {"url.full": "https://x/api?token=abc123456&page=2", "http.route": "/api"},
    {"password": "hunter2", "api_key": "", "cookie": True, "session.id": "s", "$session_id": "s"},
    {"user.email": "ann@example.com", "trace_id": "5b8e", "span_id": "eee1", "phonoglyph.file.id": "f@x.io"},
    {"nested": {"authorization": "Bearer abcdefghijklmnop", "ok": [1, "card 4111 1111 1111 1111"]}},
    {"audio.duration_s": 12.5, "audio.channels": 2, "note": "clean text"},
    {"phonoglyph.scrubbed": ["earlier.path"], "secret": "x"},
]


@pytest.mark.parametrize("properties", CASES)
def test_same_verdicts_as_the_shared_scrubber(properties):
    expected, paths = Scrubber(ScrubbingConfig()).scrub(dict(properties))
    processor = ScrubProcessor(ScrubbingConfig())
    for _ in range(2):  # the second pass runs on the memos
        events = [{"properties": dict(properties)}]
        changed = processor.process(events)
        result = events[0]["properties"]
        if not paths:
            assert changed == 0 and result == properties
            continue
        assert changed == 1
        previous = properties.get("phonoglyph.scrubbed", [])
        assert result == {**expected, "phonoglyph.scrubbed": previous + paths}


def test_counts_the_events_that_changed():
    events = [{"properties": {"password": "x"}}, {"properties": {"ok": "fine"}}, {"properties": {"token": "t"}}]
    assert ScrubProcessor(ScrubbingConfig()).process(events) == 2
    assert events[1]["properties"] == {"ok": "fine"}


def test_extra_patterns_from_config():
    processor = ScrubProcessor(ScrubbingConfig(extra_key_patterns=("^internal_",), extra_value_patterns=("ZZ-\\d+",)))
    events = [{"properties": {"internal_note": "x", "ref": "order ZZ-1234", "plain": "ok"}}]
    processor.process(events)
    assert events[0]["properties"] == {
        "internal_note": "[Scrubbed]",
        "ref": "order [Scrubbed]",
        "plain": "ok",
        "phonoglyph.scrubbed": ["internal_note", "ref"],
    }


def test_config_from_the_environment_by_default(monkeypatch):
    monkeypatch.setenv("PHONOGLYPH_SCRUB_KEYS", "^tenant$")
    events = [{"properties": {"tenant": "acme"}}]
    ScrubProcessor().process(events)
    assert events[0]["properties"] == {"tenant": "[Scrubbed]", "phonoglyph.scrubbed": ["tenant"]}


def test_long_strings_are_cut_before_scrubbing():
    events = [{"properties": {"blob": "a" * 100_000 + " ann@example.com"}}]
    ScrubProcessor(ScrubbingConfig()).process(events)
    assert events[0]["properties"] == {"blob": "a" * 4096 + "…", "phonoglyph.scrubbed": ["blob"]}


def test_importing_the_processor_loads_no_opentelemetry_sdk():
    import subprocess
    import sys

    code = "import sys, collector.processors.scrub; print('opentelemetry.sdk' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_nested_strings_are_cut_and_credential_formats_scrubbed():
    webhook = "https://hooks.slack.com/services/T0CANARY/B0CANARY/canaryhooksecret"
    events = [{"properties": {"tags": ["token " * 800, webhook], "notify": {"target": webhook}}}]
    ScrubProcessor(ScrubbingConfig()).process(events)
    properties = events[0]["properties"]
    assert properties["tags"][0] == ("token " * 800)[:4096] + "…"
    assert "canary" not in repr(properties)
    assert properties["phonoglyph.scrubbed"] == ["tags[0]", "tags[1]", "notify.target"]


def test_an_array_of_repeated_sensitive_words_costs_linear_work():
    # the shape that held the collector's GIL for tens of seconds: a tagged span with an 80 KB
    # array value of repeated sensitive words (a timeout would catch quadratic work, at 8 MB)
    processor = ScrubProcessor(ScrubbingConfig())
    values = ["password" * 1000] * 1000 + ["secret=" + "token" * 800] * 100
    events = [{"properties": {"tags": values, "blob": "tokentoken:" * 100_000}}]
    assert processor.process(events) == 1
    properties = events[0]["properties"]
    assert len(properties["tags"]) == 1100 and properties["tags"][0].endswith("…")
    # the event's budget is spent on the first values: the rest are replaced whole, their paths listed
    assert properties["blob"] == "[Scrubbed]" and properties["tags"][-1] == "[Scrubbed]"
    assert {"blob", "tags[1099]"} <= set(properties["phonoglyph.scrubbed"])
