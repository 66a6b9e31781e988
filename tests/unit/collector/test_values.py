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
