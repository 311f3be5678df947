"""Presets by name: ``ganforge presets`` lists them, and every command that takes a spec file
(train, validate, submit, up --submit) also takes a preset's name (``ganforge submit ring8``).

A preset is a spec file in the presets folder (``ganforge.resources``), named by its file stem;
its ``description`` field's first line is its summary.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any

from gan_core.cli import CLIError, add_command
from ganforge.resources import preset_names, presets_dir


def preset_paths() -> dict[str, Path]:
    """{name: file} of every preset (ganforge.resources finds the folder in any install)."""
    folder = presets_dir()
    if not isinstance(folder, Path) or not folder.is_dir():  # a zipped install has no paths to hand out
        return {}
    return {name: folder / f"{name}.json" for name in preset_names()}


def summary(doc: Any) -> str:
    text = doc.get("description") if isinstance(doc, dict) else None
    return text.strip().splitlines()[0] if isinstance(text, str) and text.strip() else ""


def resolve(ref: str) -> str:
    """A spec file's path as given, or the path of the preset named ``ref``; an error naming
    the closest presets when it is neither."""
    if Path(ref).exists():
        return ref
    paths = preset_paths()
    if ref in paths:
        return str(paths[ref])
    if "/" in ref or ref.endswith(".json"):
        return ref  # a path: read_spec says it cannot be read
    close = difflib.get_close_matches(ref, paths, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(f'`{name}`' for name in close)}?" if close else ""
    raise CLIError(f"{ref}: no such spec file and no preset of that name{hint} (`ganforge presets` lists them)", 2)


def with_presets(command):
    """Wrap a command whose ``args.spec`` is a spec file so that it takes a preset name too."""

    def run(args: argparse.Namespace) -> int:
        args.spec = resolve(args.spec)
        return command(args)

    return run


def cmd_presets(args: argparse.Namespace) -> int:
    items = []
    for name, path in preset_paths().items():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            items.append({"name": name, "description": f"(unreadable: {exc})", "path": str(path)})
            continue
        items.append({"name": name, "description": summary(doc), "path": str(path)})
    if args.json:
        print(json.dumps({"items": items}, indent=2))
    elif not items:
        print("no presets found")
    else:
        width = max(len(item["name"]) for item in items)
        print("\n".join(f"{item['name']:<{width}}  {item['description']}" for item in items))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "presets", "list the ready-made job specs, one line each; any command that takes a spec file "
                    "also takes a preset's name", ["ganforge presets", "ganforge train ring8 --out runs/ring8",
                                                   "ganforge submit classic-mlp-mnist --wait"])
    p.add_argument("--json", action="store_true", help="JSON on stdout: name, description and file of each preset")
    p.set_defaults(func=cmd_presets)
    for name in ("train", "validate"):
        command = sub.choices[name]
        command.set_defaults(func=with_presets(command.get_default("func")))
        for action in command._actions:
            if action.dest == "spec":
                action.help = "job spec JSON file, or a preset's name (`ganforge presets` lists them)"
