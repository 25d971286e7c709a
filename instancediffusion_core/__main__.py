"""``python -m instancediffusion_core <command> ...``: ``convert`` (weights) and ``preview`` (draw a layout).

Each subcommand owns its arguments (its module's ``cli_main(argv) -> int``) and is imported only when used, so
``--help`` works even if a subcommand's module is missing or broken.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

COMMANDS = {
    "convert": "convert official / logtd add-on weights to one small .safetensors (no code from the file runs)",
    "preview": "draw a layout JSON (official InstanceDiffusion format) to a PNG",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m instancediffusion_core",
        description="InstanceDiffusion core tools. Run '<command> --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "convert":
        from .weights.convert import cli_main
        return cli_main(argv[1:])
    if argv and argv[0] == "preview":
        try:
            from .layout.preview import cli_main
        except ImportError as exc:
            print(f"error: the preview command is unavailable ({exc})", file=sys.stderr)
            return 1
        return cli_main(argv[1:])
    parser = _parser()
    if not argv:
        parser.print_help()
        return 2
    parser.parse_args(argv)   # prints help for -h / an error for an unknown command, and exits
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
