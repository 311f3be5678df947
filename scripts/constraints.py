#!/usr/bin/env python
"""Print constraints.txt: the installed version of every distribution ganforge needs, with all its
extras, down to the last transitive dependency (read from the running environment's metadata).

    .venv/bin/python scripts/constraints.py > constraints.txt

Run it in the venv scripts/setup made (every extra installed, tests passing): the file then pins what
CI tested. Local version labels are dropped (torch 2.13.0+cpu → torch==2.13.0) so that the CPU and
the CUDA builds of one release both satisfy it.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# Versions the test suite ran with, for reproducible installs:
#   pip install -c constraints.txt 'ganforge[service]'
# Used by scripts/setup (and so CI's .ci/run) and the Dockerfile. Regenerate after changing a
# dependency, in the venv scripts/setup made:
#   .venv/bin/python scripts/constraints.py > constraints.txt
"""


def wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(roots: list[tuple[Requirement, set[str]]]) -> dict[str, str]:
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(roots)
    while todo:
        requirement, parent_extras = todo.pop()
        if not wanted(requirement, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen or name == "ganforge":
            continue
        seen.add(key)
        try:
            dist = md.distribution(requirement.name)
        except md.PackageNotFoundError:
            sys.exit(f"{requirement.name} is not installed: run scripts/setup first")
        pinned[name] = dist.version.split("+")[0]
        todo += [(Requirement(r), set(requirement.extras)) for r in dist.requires or []]
    return pinned


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    roots = [(Requirement(r), set()) for r in project["dependencies"]]
    roots += [(Requirement(r), set()) for reqs in extras.values() for r in reqs]
    pins = closure(roots)
    sys.stdout.write(HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))


if __name__ == "__main__":
    main()
