"""/v1/presets: the ready-made job specs of ``presets/`` (the submit page starts from one).

The files sit beside the packages in the checkout (and in the Docker image, which copies
``presets/``); a deployment without them simply lists none.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify

from api.validation import allow_query

log = logging.getLogger(__name__)

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
# The ones people reach for first come first (the list); the rest follow by name.
FIRST = ("classic-mlp-mnist", "dcgan-mnist", "cgan-mlp-mnist", "ring8", "grid25-quality")


def load_presets(directory: Path = PRESETS_DIR) -> list[dict[str, Any]]:
    """[{"name": file stem, "spec": document}] for every readable ``*.json`` in ``directory``."""
    found: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            found[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # one broken file must not hide the others
            log.warning("preset %s cannot be read: %s", path, exc)
    order = [name for name in FIRST if name in found] + [name for name in found if name not in FIRST]
    return [{"name": name, "spec": found[name]} for name in order]


@bp.get("")
def list_presets():
    allow_query(())
    # Read on each request: a handful of small files, and an edited preset shows up at once.
    return jsonify({"items": load_presets()})
