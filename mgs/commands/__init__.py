"""Subcommands of the `mgs` CLI. Each module here registers one with `@COMMANDS.register(name)` on a class that has
`help: str`, `add_arguments(parser)` and `run(args) -> int`; `mgs.cli` discovers them, so a new subcommand is a new
module."""

from mgs.registry import Registry

COMMANDS: Registry[type] = Registry("command")
