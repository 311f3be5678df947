"""Per-app objects the views share, kept in ``app.extensions`` (no module-level globals)."""

from __future__ import annotations

from flask import current_app

from api.generation import GenerationRuntime
from api.signing import URLSigner
from jobs.services import Services

SERVICES = "ganforge"
SIGNER = "ganforge.signer"
GENERATION = "ganforge.generation"


def services() -> Services:
    return current_app.extensions[SERVICES]


def signer() -> URLSigner:
    return current_app.extensions[SIGNER]


def generation() -> GenerationRuntime:
    return current_app.extensions[GENERATION]
