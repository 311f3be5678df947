"""The orjson response provider: same documents as the standard library, order kept, and a
fallback for what orjson cannot encode."""

from __future__ import annotations

import json


def test_responses_keep_field_order_and_compact_form(api):
    provider = api.app.json
    assert provider.dumps({"b": 1, "a": [1.5, None, "é"]}) == '{"b":1,"a":[1.5,null,"é"]}'
    with api.app.test_request_context():
        response = provider.response({"z": 1, "y": {"x": True}})
    assert response.mimetype == "application/json" and response.get_data() == b'{"z":1,"y":{"x":true}}'


def test_integers_beyond_64_bits_fall_back_to_the_standard_library(api):
    huge = 2**70
    assert json.loads(api.app.json.dumps({"n": huge})) == {"n": huge}
    with api.app.test_request_context():
        assert json.loads(api.app.json.response({"n": huge}).get_data()) == {"n": huge}
