"""``ganforge``: gan_core's local commands (train, generate, validate, schema), the service's
commands (``serve``: up, api, worker, reconcile, keys, db) and the HTTP client's
(``client_commands``, with ``follow`` for the progress bar), on one parser."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from gan_core import cli as local
from ganforge.cli import client_commands, download, export, serve, sweeps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge", description="GAN training: locally, or as a service")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    local.add_commands(sub)
    serve.add_commands(sub)
    client_commands.add_commands(sub)
    sweeps.add_commands(sub)
    download.add_commands(sub)
    export.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return local.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
