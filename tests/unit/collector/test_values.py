from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.processors.values import any_value, attributes_dict, iso_timestamp
from tests.unit.collector.otlp_builders import T0, attributes


def test_iso_timestamp_is_exact_to_the_microsecond():
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert iso_timestamp(T0 + 999) == "2025-11-28T03:20:00.000000Z"
    assert iso_timestamp(T0 + 1_000) == "2025-11-28T03:20:00.000001Z"


def test_values_are_json_ready():
    assert attributes_dict(attributes({"n": 2**40, "b": b"\x01\xff", "l": [1, "x"], "d": {"k": 0.5}})) == {
        "n": 2**40,
        "b": "01ff",
        "l": [1, "x"],
        "d": {"k": 0.5},
    }
    assert any_value(AnyValue(double_value=float("nan"))) == "nan"
    assert any_value(AnyValue()) is None


def test_nested_strings_are_cut_and_collections_bounded():
    from collector.processors.values import CUT, MAX_COLLECTION_ITEMS, MAX_STRING_CHARS, MAX_VALUE_DEPTH

    long = "x" * (MAX_STRING_CHARS + 10)
    value = attributes_dict(
        attributes(
            {
                "top": long,
                "list": [long, "short", b"\x01" * MAX_STRING_CHARS],
                "map": {"k": long, "inner": [[long]]},
                "many": list(range(MAX_COLLECTION_ITEMS + 50)),
                "wide": {f"k{i}": i for i in range(MAX_COLLECTION_ITEMS + 5)},
            }
        )
    )
    cut = "x" * MAX_STRING_CHARS + CUT
    assert value["top"] == long  # the scrubber cuts top-level strings and records it
    assert value["list"] == [cut, "short", "01" * (MAX_STRING_CHARS // 2) + CUT]
    assert value["map"] == {"k": cut, "inner": [[cut]]}
    assert value["many"] == list(range(MAX_COLLECTION_ITEMS))
    assert len(value["wide"]) == MAX_COLLECTION_ITEMS
    deep: object = "bottom"
    for _ in range(MAX_VALUE_DEPTH + 3):
        deep = [deep]
    kept = attributes_dict(attributes({"deep": deep}))["deep"]
    for _ in range(MAX_VALUE_DEPTH):
        kept = kept[0]
    assert kept == CUT


def test_a_repeated_key_keeps_its_first_value():
    assert attributes_dict(attributes({"a": 1}) + attributes({"a": 2})) == {"a": 1}
    assert any_value(attributes({"m": {"k": 1}})[0].value) == {"k": 1}
    nested = attributes({"m": {"k": 1}})[0].value
    nested.kvlist_value.values.extend(attributes({"k": 2}))
    assert any_value(nested) == {"k": 1}
