import json

from collector.events import StoredEvent, encode_event, encode_event_bytes

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


def test_encode_event_writes_what_json_dumps_writes():
    values = [
        "plain",
        'é ü 音 \U0001f3b5 \u2028 \x00 " \\ \n',
        0,
        -(2**63),
        2**70,
        1.5,
        1e-300,
        -0.0,
        123456789.123456789,
        True,
        False,
        None,
        [],
        {},
        [1, "two", [3.0, {"four": None}]],
        {"nested": {"deeper": ["x", {"k": "v"}]}, "": "empty key"},
        ("a", "tuple"),
    ]
    for value in values:
        event = {"event": "e", "properties": {"value": value, "uuid-like": "00000000-0000-4000-8000-000000000001"}}
        assert encode_event(event) == json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def test_what_orjson_refuses_is_encoded_as_json_dumps_writes_it():
    for properties in ({1: "int key", None: "none key", 2.5: "float key"}, {"big": 2**64, "nan": float("nan")}):
        event = {"event": "e", "properties": properties}
        encoded = encode_event_bytes(event)
        assert encoded.decode() == encode_event(event)
        assert json.loads(encoded) == json.loads(json.dumps(event, separators=(",", ":")).replace("NaN", "null"))


def test_encode_event_bytes_is_encode_event_in_utf8():
    assert encode_event_bytes(EVENT) == encode_event(EVENT).encode()
    stored = StoredEvent.of(EVENT)
    assert encode_event_bytes(stored) is stored.payload
