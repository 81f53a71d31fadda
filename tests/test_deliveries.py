"""Intake reads a payload's routing fields without parsing the rest: it must read them as the whole parse does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import deliveries

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
_PAYLOADS = st.fixed_dictionaries(
    {},
    optional={
        "action": _JSON,
        "installation": _JSON | st.fixed_dictionaries({}, optional={"id": _JSON | st.integers()}),
        "repository": _JSON | st.fixed_dictionaries({}, optional={"full_name": _JSON}),
        "comment": _JSON,
    },
)


@given(_PAYLOADS)
def test_the_routing_fields_read_alone_are_those_of_the_whole_payload(payload: dict[str, Any]) -> None:
    body = json.dumps(payload)
    assert deliveries.incoming_json("d-1", "issues", body) == deliveries.incoming("d-1", "issues", payload, body)


def test_an_installation_id_past_64_bits_is_no_installation() -> None:
    body = json.dumps({"action": "created", "installation": {"id": 2**64 + 1}})
    assert deliveries.incoming_json("d-1", "issue_comment", body).installation_id is None
    assert deliveries.incoming_json("d-1", "issue_comment", body.replace(str(2**64 + 1), "7")).installation_id == 7


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[1, 2]", "JSON object"),
        ("null", "JSON object"),
        ('{"action": "created"} trailing', "not valid JSON"),
        ('{"action": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
        ('{"a": "\\ud800"}', "not valid JSON"),
    ],
)
def test_a_body_that_is_no_json_object_is_refused_with_why(body: str, message: str) -> None:
    with pytest.raises(deliveries.NotAJsonObject, match=message):
        deliveries.incoming_json("d-1", "issues", body)
