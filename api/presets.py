"""/v1/presets: the ready-made job specs of ``presets/`` (the submit page starts from one).

The files ship with the package (``ganforge.resources``: the checkout's top-level ``presets/``,
or its copy inside an installed wheel); a deployment without them simply lists none.
"""

from __future__ import annotations

import json
import logging
from importlib.resources.abc import Traversable
from typing import Any

from flask import Blueprint, jsonify

from ganforge.api.validation import allow_query
from ganforge.resources import presets_dir

log = logging.getLogger(__name__)

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")

PRESETS_DIR = presets_dir()
# The ones people reach for first come first (the list); the rest follow by name.
FIRST = ("classic-mlp-mnist", "dcgan-mnist", "cgan-mlp-mnist", "ring8", "grid25-quality")


def load_presets(directory: Traversable = PRESETS_DIR) -> list[dict[str, Any]]:
    """[{"name": file stem, "spec": document}] for every readable ``*.json`` in ``directory``."""
    found: dict[str, Any] = {}
    entries = sorted((e for e in directory.iterdir() if e.name.endswith(".json")), key=lambda e: e.name) \
        if directory.is_dir() else ()
    for entry in entries:
        try:
            found[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # one broken file must not hide the others
            log.warning("preset %s cannot be read: %s", entry, exc)
    order = [name for name in FIRST if name in found] + [name for name in found if name not in FIRST]
    return [{"name": name, "spec": found[name]} for name in order]


@bp.get("")
def list_presets():
    allow_query(())
    # Read on each request: a handful of small files, and an edited preset shows up at once.
    return jsonify({"items": load_presets()})
