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
