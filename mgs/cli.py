"""The `mgs` command line: `mgs train | eval | report | ...`, one module per subcommand in `mgs.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import mgs
from mgs.commands import COMMANDS


def _load_commands() -> None:
    import mgs.commands as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="mgs", description=mgs.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mgs {mgs.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        command = COMMANDS.get(name)
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_command", None) is None:
        parser.print_help()
        return 2
    return int(args._command.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
