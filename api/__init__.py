"""The ganforge HTTP API (Flask), versioned under /v1.

    create_app()                                  # settings from the environment
    create_app(services=Services(settings, db, storage, queue))   # tests, embedding

No app exists at import time; gunicorn serves ``ganforge.api:create_app()``.
"""

from __future__ import annotations

if __name__ != "ganforge.api":  # namespace guard: one name per module, never two copies
    raise ImportError(f"import ganforge.api, not {__name__}: api/ is installed as part of the ganforge package")

from flask import Flask

from ganforge.jobs.services import Services
from ganforge.jobs.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """A configured app. Without ``services`` they are built from ``settings`` (default: the
    environment); with ``services``, their settings are used and ``settings`` must be None or
    the same object."""
    from ganforge.api import artifacts, auth, bundle, dashboard, datasets, headers, health, job_media, jobs, openapi, presets, sweeps
    from ganforge.api import logging as api_logging
    from ganforge.api import metrics as api_metrics
    from ganforge.api.errors import register_error_handlers
    from ganforge.api.finished_views import FinishedViews
    from ganforge.api.generation import GenerationRuntime
    from ganforge.api.jsonio import OrjsonProvider
    from ganforge.api.signing import URLSigner
    from ganforge.api.state import FINISHED_VIEWS, GENERATION, SERVICES, SIGNER
    from ganforge.api.validation import buffer_chunked_body

    if services is not None and settings is not None and settings is not services.settings:
        raise ValueError("pass settings or services (which carry their own settings), not both")
    if services is None:
        settings = settings or Settings.from_env()
    else:
        settings = services.settings
    secret = settings.resolve_signing_secret()  # before anything connects: production without one stops here
    if services is None:
        services = Services.from_settings(settings)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = OrjsonProvider(app)  # keeps fields in the order the schemas write them, compact
    app.extensions[SERVICES] = services
    app.extensions[SIGNER] = URLSigner(secret)
    app.extensions[FINISHED_VIEWS] = FinishedViews(settings.finished_view_cache, settings.finished_view_seconds)
    runtime = GenerationRuntime()
    app.extensions[GENERATION] = runtime

    api_logging.init_app(app, settings.log_json)
    api_metrics.init_app(app)  # before authentication: a refused request is timed and counted too
    app.before_request(buffer_chunked_body)  # 413 past the body limit however the body is sent
    headers.init_app(app)
    auth.init_app(app, settings.auth_required, auth.KeyCache(services.db, settings.auth_cache_seconds))  # after the request id
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(artifacts.bp)
    app.register_blueprint(job_media.bp)
    app.register_blueprint(bundle.bp)
    app.register_blueprint(presets.bp)
    app.register_blueprint(sweeps.bp)
    app.register_blueprint(datasets.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(openapi.bp)
    return app
