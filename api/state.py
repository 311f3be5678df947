"""Per-app objects the views share, kept in ``app.extensions`` (no module-level globals)."""

from __future__ import annotations

from flask import current_app

from ganforge.api.finished_views import FinishedViews
from ganforge.api.generation import GenerationRuntime
from ganforge.api.signing import URLSigner
from ganforge.jobs.services import Services

SERVICES = "ganforge"
SIGNER = "ganforge.signer"
GENERATION = "ganforge.generation"
FINISHED_VIEWS = "ganforge.finished_views"


def services() -> Services:
    return current_app.extensions[SERVICES]


def signer() -> URLSigner:
    return current_app.extensions[SIGNER]


def generation() -> GenerationRuntime:
    return current_app.extensions[GENERATION]


def finished_views() -> FinishedViews:
    return current_app.extensions[FINISHED_VIEWS]
