"""``ganforge``: gan_core's local commands (train, generate, validate, schema), the service's
commands (``serve``: up, api, worker, reconcile, keys, db) and the HTTP client's
(``client_commands``, with ``follow`` for the progress bar), on one parser."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from gan_core import cli as local
from ganforge import __version__
from ganforge.cli import client_commands, datasets, download, export, presets, serve, sweeps


def build_parser() -> argparse.ArgumentParser:
    parser = local.CLIParser(
        prog="ganforge", description="GAN training: locally, or as a service. `ganforge COMMAND --help` says more.",
        epilog="examples:\n  ganforge presets\n  ganforge train ring8 --out runs/ring8\n  ganforge up\n"
               "  ganforge submit ring8 --wait\n  ganforge list --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    local.add_commands(sub)
    presets.add_commands(sub)
    serve.add_commands(sub)
    client_commands.add_commands(sub)
    sweeps.add_commands(sub)
    datasets.add_commands(sub)
    download.add_commands(sub)
    export.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return local.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
