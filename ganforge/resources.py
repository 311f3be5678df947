"""The data files ganforge ships beside its code: the Alembic migrations and the preset job specs.

Every reader finds them here, through ``importlib.resources`` on the ganforge package, so one lookup
serves every layout: a wheel install (pyproject's package-dir maps the top-level ``migrations/`` and
``presets/`` folders into ``ganforge/``), an editable install and a plain source checkout (where
``ganforge/migrations`` and ``ganforge/presets`` are symlinks to those folders). The working directory
never matters.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path


def _folder(name: str) -> Traversable:
    return files("ganforge") / name


def migrations_dir() -> Path:
    """Alembic's ``script_location``: a real directory, since Alembic loads ``env.py`` and
    ``versions/*.py`` by path (a zipped install could not work, and is refused with a clear error)."""
    folder = _folder("migrations")
    if not isinstance(folder, Path) or not (folder / "env.py").is_file():
        raise FileNotFoundError(f"migration scripts not found in {folder} (is ganforge installed from a "
                                "complete wheel or checkout?)")
    return folder.resolve()


def presets_dir() -> Traversable:
    """The folder of ready-made job specs, ``<name>.json`` each."""
    return _folder("presets")


def preset_names() -> list[str]:
    """Every preset's name (its file name without ``.json``), sorted."""
    folder = presets_dir()
    if not folder.is_dir():
        return []
    return sorted(entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def preset_text(name: str) -> str:
    """The JSON text of preset ``name``; FileNotFoundError naming the known ones when there is none."""
    entry = presets_dir() / f"{name}.json"
    if "/" in name or not entry.is_file():
        raise FileNotFoundError(f"no preset named {name!r}; known: {', '.join(preset_names()) or 'none'}")
    return entry.read_text(encoding="utf-8")


def sweep_preset_text(name: str) -> str | None:
    """The JSON text of the ready-made sweep ``name`` (presets/sweeps/NAME.json), None when there is none."""
    entry = presets_dir() / "sweeps" / f"{name}.json"
    if "/" in name or not entry.is_file():
        return None
    return entry.read_text(encoding="utf-8")
