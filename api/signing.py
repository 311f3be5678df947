"""HMAC-signed artifact URLs for stores that cannot presign (the local directory).

A URL carries ``expires`` (unix seconds) and ``signature`` = HMAC-SHA256(secret,
"artifact:<id>:<expires>") in hex, so whoever holds it may fetch that one artifact until it
expires, without credentials. Changing the secret invalidates every URL issued before.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Callable

_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class SignatureError(Exception):
    """The URL's signature is missing, malformed, wrong, or has expired (the message says which)."""


class URLSigner:
    def __init__(self, secret: str | bytes, clock: Callable[[], float] = time.time):
        self._key = secret.encode() if isinstance(secret, str) else secret
        if not self._key:
            raise ValueError("the signing secret is empty")
        self.clock = clock

    def signature(self, artifact_id: str, expires: int) -> str:
        message = f"artifact:{artifact_id}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, artifact_id: str, ttl_seconds: int) -> tuple[int, str]:
        """(expires, signature) for a URL valid ``ttl_seconds`` from now."""
        expires = int(self.clock()) + ttl_seconds
        return expires, self.signature(artifact_id, expires)

    def verify(self, artifact_id: str, expires: str | None, signature: str | None) -> None:
        """Raise SignatureError unless (expires, signature) was issued for this artifact and
        has not expired."""
        if not expires or not signature:
            raise SignatureError("the URL needs both expires and signature")
        if not _EXPIRES.fullmatch(expires) or not _SIGNATURE.fullmatch(signature):
            raise SignatureError("malformed expires or signature")
        if not hmac.compare_digest(self.signature(artifact_id, int(expires)), signature):
            raise SignatureError("bad signature")
        if int(expires) < self.clock():
            raise SignatureError("the URL has expired")
