"""The foundation: packages import, and each semantic-convention key is defined once."""

import instrumentation.semconv as semconv


def test_every_key_is_defined_once():
    keys = {
        name: value
        for name, value in vars(semconv).items()
        if name.isupper() and isinstance(value, str) and ("." in value)
    }
    assert len(set(keys.values())) == len(keys), keys


def test_operations_and_events_follow_design():
    assert semconv.OPERATION == "phonoglyph.operation"
    assert "stem_separation" in semconv.OPERATIONS
    assert "credits_purchased" in semconv.PRODUCT_EVENTS
