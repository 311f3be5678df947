"""Security headers on every response.

* ``X-Content-Type-Options: nosniff`` everywhere: a browser never reads an artifact, a JSON body
  or a script as anything but its declared type (an image cannot be sniffed into HTML).
* ``Referrer-Policy: no-referrer`` everywhere: pages and API answers hold signed download URLs,
  which must not leave in a Referer header.
* ``X-Frame-Options: DENY`` and a Content-Security-Policy with ``frame-ancestors 'none'``: nothing
  is framed (clickjacking). HTML pages (the dashboard, /docs) get a policy that runs only the
  app's own script and style files (no inline code, no other origin); images may also be ``blob:``
  (the dashboard fetches grids with the API key and shows them as object URLs). Everything else
  (JSON, artifact content, static files) gets ``default-src 'none'``: it is never a document.
"""

from __future__ import annotations

from flask import Flask, Response

PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
RESOURCE_POLICY = "default-src 'none'; frame-ancestors 'none'"


def _add_headers(response: Response) -> Response:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
    headers["Content-Security-Policy"] = PAGE_POLICY if response.mimetype == "text/html" else RESOURCE_POLICY
    return response


def init_app(app: Flask) -> None:
    app.after_request(_add_headers)
