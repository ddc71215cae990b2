"""A line a stdio server cannot read as one JSON-RPC message is refused as /mcp refuses such a body:
JSON-RPC's -32600 `[invalid_request] rule`, with `{"code": "invalid_request", "field", "rule"}` as
its data (docs/user-guide.md#errors); only the field differs, the `line` where /mcp has the `body`."""

from __future__ import annotations

import pytest

from vibe_ensemble.cli.stdin_lines import bad_id, refusal


@pytest.mark.parametrize(
    ("line", "request_id", "field", "rule"),
    [
        ("[1,2]", None, "line", "a batch (an array) is not accepted: write one message per line"),
        ('[{"jsonrpc":"2.0","id":1,"method":"ping"}]', None, "line", "a batch (an array) is not accepted"),
        ("null", None, "line", "each line must be one JSON-RPC 2.0 message"),
        ('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":"x"}', 5, "line", '"params" (an object)'),
        ('{"jsonrpc":"2.0","id":"a","method":42}', "a", "line", 'a "method" (a string)'),
        ('{"jsonrpc":"2.0","id":6,"method":"ping","params":{"a":"\\ud800"}}', 6, "line", "valid Unicode"),
    ],
    ids=["batch of numbers", "batch of a request", "null", "params", "method", "lone surrogate"],
)
def test_an_unreadable_line_is_an_invalid_request_as_over_http(
    line: str, request_id: object, field: str, rule: str
) -> None:
    answer = refusal(ValueError("the transport could not read it"), line)
    assert answer is not None
    error = answer.error
    assert answer.id == request_id and error.code == -32600
    assert error.message.startswith("[invalid_request] ") and rule in error.message, error.message
    assert error.data == {
        "code": "invalid_request",
        "field": field,
        "rule": error.message.removeprefix("[invalid_request] "),
    }


def test_a_request_whose_id_is_no_string_or_integer_is_an_invalid_request_naming_id() -> None:
    import mcp_types as types

    line = '{"jsonrpc":"2.0","id":true,"method":"ping"}'
    answer = bad_id(types.JSONRPCNotification(jsonrpc="2.0", method="ping"), line)
    assert answer is not None and answer.id is None and answer.error.code == -32600
    assert answer.error.message.startswith("[invalid_request] a request's id must be a string or an integer")
    assert answer.error.data == {
        "code": "invalid_request",
        "field": "id",
        "rule": answer.error.message.removeprefix("[invalid_request] "),
    }


def test_a_blank_line_and_a_readable_message_get_no_refusal() -> None:
    assert refusal(ValueError("blank"), "  \n") is None
    assert refusal(object(), '{"jsonrpc":"2.0","id":1,"method":"ping"}') is None
