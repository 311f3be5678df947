"""The browser dashboard under ``/``: jobs list, one job's page, the submit page, sweeps list and
one sweep's page.

The pages are thin HTML shells; their scripts (api/static/) read everything through the /v1
JSON API with fetch(), sending ``Authorization: Bearer <key>`` when the user has stored a key.
So the dashboard sees exactly what an API client with the same key sees (another tenant's job
is the API's 404), and images come through the API's signed URLs, never from the object store
directly.
"""

from __future__ import annotations

import re

from flask import Blueprint, render_template

# Templates and scripts are the app's own folders (api/templates, api/static served at /static):
# the app is Flask("api"), so they need no blueprint folders of their own.
bp = Blueprint("dashboard", __name__)

_ID = re.compile(r"[0-9a-f]{32}")


@bp.get("/")
def jobs_page():
    return render_template("jobs.html", page="jobs")


def _item_page(page: str, item_id: str):
    # The page cannot know whose job (or sweep) this is (the key lives in the browser): its script
    # asks the API and shows "not found" on a 404. A malformed id gets that page with a 404 at once.
    status = 200 if _ID.fullmatch(item_id) else 404
    return render_template(f"{page}.html", page=page, **{f"{page}_id": item_id}), status


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    return _item_page("job", job_id)


@bp.get("/submit")
def submit_page():
    return render_template("submit.html", page="submit")


@bp.get("/sweeps")
def sweeps_page():
    return render_template("sweeps.html", page="sweeps")


@bp.get("/sweeps/<sweep_id>")
def sweep_page(sweep_id: str):
    return _item_page("sweep", sweep_id)
