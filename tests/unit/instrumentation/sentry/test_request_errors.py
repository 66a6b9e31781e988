"""instrumentation._internal.sentry.request_errors: the request data of an error event."""

from __future__ import annotations

from typing import Any

import pytest

from instrumentation._internal.sentry.request_errors import REQUEST_BODY_SCOPE_KEY, request_data


class _Client:
    def __init__(self, **options: Any) -> None:
        self.options = {"send_default_pii": False, "max_request_body_size": "medium", **options}


def _scope(headers: dict[str, str], body: bytes | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "server": ("10.0.0.5", 8000),
        "root_path": "",
        "path": "/v1/billing",
        "query_string": b"page=2",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    if body is not None:
        scope[REQUEST_BODY_SCOPE_KEY] = body
    return scope


def test_request_data_has_method_url_query_headers_and_a_json_body() -> None:
    body = b'{"card": "4111 1111 1111 1111", "plan": "pro"}'
    headers = {"host": "api.example", "content-type": "application/json", "content-length": str(len(body))}
    assert request_data(_scope(headers, body), _Client()) == {
        "method": "POST",
        "url": "https://api.example/v1/billing",
        "query_string": "page=2",
        "headers": headers,
        "data": {"card": "4111 1111 1111 1111", "plan": "pro"},  # before_send scrubs it
    }


def test_request_data_form_fields_and_cookies_only_with_send_default_pii() -> None:
    body = b"user=bob&password=pw_SEED&empty="
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8", "content-length": str(len(body)),
               "cookie": "sessionid=ck_SEED; theme=dark"}  # fmt: skip
    without_pii = request_data(_scope(headers, body), _Client())
    assert without_pii["url"] == "https://10.0.0.5:8000/v1/billing"  # no Host header: the server address
    assert without_pii["data"] == {"user": "bob", "password": "pw_SEED", "empty": ""}
    assert "cookies" not in without_pii
    with_pii = request_data(_scope(headers, body), _Client(send_default_pii=True))
    assert with_pii["cookies"] == {"sessionid": "ck_SEED", "theme": "dark"}


@pytest.mark.parametrize(
    ("headers", "body", "data"),
    [
        ({}, None, None),  # no body
        ({"content-length": "0"}, b"", None),
        ({"content-type": "application/json", "content-length": "12"}, None, "raw"),  # the app never read it
        ({"content-type": "audio/wav", "content-length": "4"}, b"RIFF", "raw"),
        ({"content-type": "application/json", "content-length": "5"}, b"{nope", "raw"),  # not JSON after all
        ({"content-type": "application/json", "content-length": "10001"}, b"{}", "over size"),
    ],
)
def test_request_data_annotates_a_body_it_does_not_show(
    headers: dict[str, str], body: bytes | None, data: str | None
) -> None:
    from sentry_sdk.utils import AnnotatedValue

    found = request_data(_scope(headers, body), _Client()).get("data")
    expected = {
        None: None,
        "raw": AnnotatedValue.removed_because_raw_data(),
        "over size": AnnotatedValue.removed_because_over_size_limit(),
    }[data]
    if expected is None:
        assert found is None
    else:
        assert (found.value, found.metadata) == (expected.value, expected.metadata)
