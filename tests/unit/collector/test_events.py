import json

from collector.events import StoredEvent, encode_event

EVENT = {"event": "e", "distinct_id": "d", "properties": {"x": 1.5, "s": "é"}, "timestamp": "t", "uuid": "u"}


def test_encode_event_is_compact_utf8_json_without_non_finite_numbers():
    assert (
        encode_event(EVENT)
        == '{"event":"e","distinct_id":"d","properties":{"x":1.5,"s":"é"},"timestamp":"t","uuid":"u"}'
    )
    encoded = encode_event({**EVENT, "properties": {"a": float("nan"), "b": [float("inf")]}})
    assert json.loads(encoded)["properties"] == {"a": None, "b": [None]}


def test_a_stored_event_keeps_its_payload_and_reads_like_the_event():
    stored = StoredEvent("u", encode_event(EVENT).encode(), 10, "t")
    assert encode_event(stored) == encode_event(EVENT)
    assert (stored["uuid"], stored["timestamp"], stored["properties"]["x"]) == ("u", "t", 1.5)
    assert dict(stored) == EVENT and len(stored) == 5
    assert StoredEvent.of(EVENT).payload == encode_event(EVENT).encode()
