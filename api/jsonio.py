"""Flask's JSON provider with orjson for responses: the API's answers are mostly JSON, and the job
view is the most polled endpoint; orjson encodes them several times faster than the standard
library. What orjson cannot encode (an integer beyond 64 bits echoed in an error) goes through
the standard library as before. Parsing stays the standard library's."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider


class OrjsonProvider(DefaultJSONProvider):
    sort_keys = False  # fields in the order the schemas write them
    compact = True

    def _encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return super().dumps(obj).encode()

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._encode(obj).decode() if not kwargs else super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any):
        return self._app.response_class(self._encode(self._prepare_response_obj(args, kwargs)), mimetype=self.mimetype)
