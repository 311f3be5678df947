#!/usr/bin/env python
"""Install api/, jobs/ and worker/ under the ganforge package: rewrite a tree so that they are
imported, named and shipped as ``ganforge.api``, ``ganforge.jobs`` and ``ganforge.worker``.

    python scripts/namespace_rewrite.py [ROOT]        # ROOT: the checkout (default: this script's)
    python scripts/namespace_rewrite.py --check [ROOT]  # exit 1 and list the files it would change

Idempotent: a second run changes nothing, so it can be run again after merging branches that still
use the old names. The folders stay where they are (top level); what it does:

- pyproject.toml: the three packages are listed as ``ganforge.X`` (and ``ganforge.X.sub``), mapped to
  their folders through ``package-dir``, with their package-data under the new keys;
- ``ganforge/api``, ``ganforge/jobs``, ``ganforge/worker``: symlinks to the folders, so that a plain
  checkout (``python -m pytest``, PYTHONPATH) resolves the same names an install does;
- each folder's ``__init__.py`` refuses to be imported under its bare name (``import jobs`` would load
  a second copy of every module next to ``ganforge.jobs``: two SQLAlchemy metadata, two settings);
- Python sources (tokenized, so code that merely has a variable called ``jobs`` is left alone):
  ``from jobs.x import y`` -> ``from ganforge.jobs.x import y``, ``import jobs`` -> ``from ganforge
  import jobs``; in strings and comments a dotted name whose second part is a real module of the
  folder (``"jobs.lifecycle.time"`` for mock.patch, ``"worker.tasks"`` for Celery's include, logger
  names, ``python -m worker.launched``) and ``"api:create_app()"`` get the prefix; Flask endpoint
  names (``url_for("jobs.job_logs")``) are left alone;
- docs and scripts (Markdown, shell, Dockerfile, compose, ini, toml): the same dotted names.

gan_core stays a top-level package (see README, "Install").
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tokenize
from pathlib import Path

PACKAGES = ("api", "jobs", "worker")
NAMESPACE = "ganforge"
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "runs", "dist", "build", ".mypy_cache",
             ".pytest_cache", ".ruff_cache", "vendor"}
TEXT_SUFFIXES = {".md", ".toml", ".ini", ".cfg", ".sh", ".yml", ".yaml", ".mako"}
TEXT_NAMES = {"Dockerfile"}  # and every extensionless file starting with #! (scripts/*, .ci/run)
GUARD_MARK = "# namespace guard"
# This script and its test hold the old names on purpose.
SKIP_FILES = {"namespace_rewrite.py", "test_namespace_rewrite.py"}


def submodules(root: Path) -> dict[str, set[str]]:
    """{"jobs": {"lifecycle", "models", ...}}: the names a dotted reference may continue with."""
    found = {}
    for package in PACKAGES:
        folder = root / package
        names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        names |= {d.name for d in folder.iterdir() if (d / "__init__.py").is_file()}
        found[package] = names
    return found


def dotted_pattern(mods: dict[str, set[str]]) -> re.Pattern:
    # X.module (not preceded by a word, '.', '/', ':' or '-': a path, a URL, an attribute or an
    # already-prefixed name), or X:attr / X.module:attr (gunicorn's and Celery's "module:object").
    alternatives = [rf"{pkg}\.(?:{'|'.join(sorted(names, key=len, reverse=True))})(?![\w])"
                    for pkg, names in mods.items() if names]
    alternatives += [rf"{pkg}(?=:[A-Za-z_])" for pkg in PACKAGES]
    # (after a "\n" escape too: code quoted in a Python string)
    # (not after ":" or "/": URLs; but gunicorn's "-c python:api.gunicorn_hooks" is a module path)
    return re.compile(rf"(?:(?<=\\n)|(?<=python:)|(?<![\w./:\-]))(?:{'|'.join(alternatives)})")


_NAMES = "|".join(PACKAGES)
# Import statements quoted in strings (code run in a subprocess) and docs.
FROM_IN_TEXT = re.compile(rf"(?:(?<=\\n)|(?<![\w.]))from ({_NAMES})(?=\.\w|\s+import\b)")
IMPORT_IN_TEXT = re.compile(rf"(?:(?<=\\n)|(?<![\w.]))(?<!from {NAMESPACE} )import ({_NAMES})(?![\w.])")


def rewrite_text(text: str, pattern: re.Pattern, code: bool = False) -> str:
    """``code``: a Python string literal, which may hold code run elsewhere (``import jobs``)."""
    text = FROM_IN_TEXT.sub(rf"from {NAMESPACE}.\1", text)
    if code:
        text = IMPORT_IN_TEXT.sub(rf"from {NAMESPACE} import \1", text)
    return pattern.sub(lambda m: f"{NAMESPACE}.{m.group(0)}", text)


def _offsets(source: str) -> list[int]:
    starts, total = [0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def rewrite_python(source: str, pattern: re.Pattern, path: Path, warnings: list[str]) -> str:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        warnings.append(f"{path}: not tokenizable ({exc}); left as it is")
        return source
    starts = _offsets(source)
    at = lambda pos: starts[pos[0] - 1] + pos[1]  # noqa: E731  (row, col) -> index
    edits: list[tuple[int, int, str]] = []
    significant = [t for t in tokens if t.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    stmt_start = True
    for i, tok in enumerate(significant):
        if tok.type == tokenize.STRING:
            prev = significant[i - 2:i]
            if len(prev) == 2 and prev[1].string == "(" and prev[0].string == "url_for":
                continue  # a Flask endpoint ("jobs.job_logs"), named after the blueprint, not the module
            new = rewrite_text(tok.string, pattern, code=True)
            if new != tok.string:
                edits.append((at(tok.start), at(tok.end), new))
        if stmt_start and tok.type == tokenize.NAME and tok.string in ("from", "import"):
            _rewrite_import(significant, i, at, edits, path, warnings)
        stmt_start = tok.type in (tokenize.NEWLINE, tokenize.ENCODING) or tok.string == ";"
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            new = rewrite_text(tok.string, pattern)
            if new != tok.string:
                edits.append((at(tok.start), at(tok.end), new))
    for begin, end, new in sorted(edits, reverse=True):
        source = source[:begin] + new + source[end:]
    return source


def _rewrite_import(toks, i, at, edits, path, warnings) -> None:
    head = toks[i]
    if head.string == "from":
        first = toks[i + 1]
        if first.type == tokenize.NAME and first.string in PACKAGES:
            edits.append((at(first.start), at(first.start), f"{NAMESPACE}."))
        return
    # import a.b as c, d ... : collect the statement's tokens
    j, names = i + 1, []
    while j < len(toks) and toks[j].type != tokenize.NEWLINE and toks[j].string != ";":
        names.append(toks[j])
        j += 1
    parts = " ".join(t.string for t in names).replace(" . ", ".").split(" , ")
    if not any(p.split(".")[0].split(" ")[0] in PACKAGES for p in parts):
        return
    if len(parts) != 1:
        warnings.append(f"{path}:{head.start[0]}: `import {', '.join(parts)}` needs a hand")
        return
    dotted, _, alias = parts[0].partition(" as ")
    if "." in dotted and not alias:
        warnings.append(f"{path}:{head.start[0]}: `import {dotted}` needs a hand (write `from ganforge.… import …`)")
        return
    if "." in dotted:
        new = f"import {NAMESPACE}.{dotted} as {alias}"
    else:
        new = f"from {NAMESPACE} import {dotted}" + (f" as {alias}" if alias else "")
    edits.append((at(head.start), at(names[-1].end), new))


def add_guard(init: Path, package: str) -> bool:
    text = init.read_text()
    if GUARD_MARK in text:
        return False
    full = f"{NAMESPACE}.{package}"
    guard = (f'if __name__ != "{full}":  {GUARD_MARK}: one name per module, never two copies\n'
             f'    raise ImportError(f"import {full}, not {{__name__}}: {package}/ is installed as part of the '
             f'{NAMESPACE} package")\n')
    tree_lines = text.splitlines(keepends=True)
    # after the docstring and any `from __future__` import (both must stay first)
    insert_at = 0
    try:
        import ast

        body = ast.parse(text).body
        for node in body:
            is_doc = isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str) and node is body[0]
            is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            if is_doc or is_future:
                insert_at = node.end_lineno
            else:
                break
    except SyntaxError:
        pass
    prefix = "".join(tree_lines[:insert_at])
    rest = "".join(tree_lines[insert_at:])
    sep = "\n" if prefix and not prefix.endswith("\n\n") else ""
    init.write_text(prefix + sep + guard + ("\n" if rest and not rest.startswith("\n") else "") + rest)
    return True


def rewrite_pyproject(text: str) -> str:
    block = re.search(r"^packages = \[\n?(.*?)\]", text, re.S | re.M)
    if block:
        inner = re.sub(rf'"((?:{"|".join(PACKAGES)})(?:\.[\w.]+)?)"', rf'"{NAMESPACE}.\1"', block.group(1))
        text = text[:block.start(1)] + inner + text[block.end(1):]
    # package-data keys
    text = re.sub(rf'^((?:{"|".join(PACKAGES)})(?:\.[\w.]+)?) = \[', rf'"{NAMESPACE}.\1" = [', text, flags=re.M)
    text = re.sub(rf'^"((?:{"|".join(PACKAGES)})(?:\.[\w.]+)?)" = \[', rf'"{NAMESPACE}.\1" = [', text, flags=re.M)
    header = "[tool.setuptools.package-dir]\n"
    missing = [p for p in PACKAGES if f'"{NAMESPACE}.{p}" = "{p}"' not in text]
    if missing and header in text:
        lines = "".join(f'"{NAMESPACE}.{p}" = "{p}"\n' for p in missing)
        note = ("# api/, jobs/, worker/ install as ganforge.api, ganforge.jobs, ganforge.worker: no generic\n"
                "# top-level names in site-packages (scripts/namespace_rewrite.py; in a checkout ganforge/api\n"
                "# etc. are symlinks to the folders).\n")
        text = text.replace(header, header + (note if note not in text else "") + lines, 1)
    return text


def link(root: Path, package: str) -> bool:
    target = root / NAMESPACE / package
    if target.is_symlink() or target.exists():
        return False
    target.symlink_to(Path("..") / package)
    return True


def _is_script(path: Path) -> bool:
    if path.suffix:
        return False
    with path.open("rb") as handle:
        return handle.read(2) == b"#!"


def files(root: Path):
    stack = [root]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name not in SKIP_DIRS and not entry.name.endswith(".egg-info"):
                    stack.append(entry)
            elif entry.name not in SKIP_FILES:
                yield entry


def run(root: Path, check: bool) -> int:
    mods = submodules(root)
    pattern = dotted_pattern(mods)
    changed, warnings = [], []
    for path in files(root):
        rel = path.relative_to(root)
        if path.suffix == ".py":
            old = path.read_text()
            new = rewrite_python(old, pattern, rel, warnings)
        elif path.name == "pyproject.toml":
            old = path.read_text()
            new = rewrite_pyproject(rewrite_text(old, pattern))
        elif path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES or _is_script(path):
            try:
                old = path.read_text()
            except UnicodeDecodeError:
                continue
            new = rewrite_text(old, pattern)
        else:
            continue
        if new != old:
            changed.append(str(rel))
            if not check:
                path.write_text(new)
    for package in PACKAGES:
        if check:
            if not (root / NAMESPACE / package).is_symlink():
                changed.append(f"{NAMESPACE}/{package} (symlink)")
            if GUARD_MARK not in (root / package / "__init__.py").read_text():
                changed.append(f"{package}/__init__.py (guard)")
            continue
        if link(root, package):
            changed.append(f"{NAMESPACE}/{package} -> ../{package}")
        if add_guard(root / package / "__init__.py", package):
            changed.append(f"{package}/__init__.py (guard)")
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(("would change" if check else "changed") + f" {len(changed)} file(s)")
    for name in changed:
        print(f"  {name}")
    return 1 if (check and changed) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when something would change")
    args = parser.parse_args()
    return run(Path(args.root).resolve(), args.check)


if __name__ == "__main__":
    sys.exit(main())
