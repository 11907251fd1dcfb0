"""The one ``deltanet`` command: subcommands for the jobs users do.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds an
argparse sub-parser whose ``func(args) -> int`` does the work. Options are checked before the
work starts (:mod:`deltanet.options`); every error a user can cause ends the command with one
line on stderr, ``deltanet COMMAND: error: ...``, and a non-zero exit code (2: bad input; 1: the
run itself failed), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..options import CliError, Parser, one_line
from ..progress import quiet

__all__ = ["COMMAND_MODULES", "CliError", "build_parser", "main"]

#: Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = [
    "deltanet.cli.eval",
    "deltanet.cli.train",
    "deltanet.cli.import_",
    "deltanet.cli.prune",
    "deltanet.cli.quantize",
    "deltanet.cli.calibrate",
    "deltanet.cli.sweep",
    "deltanet.cli.compress",
    "deltanet.cli.generate",
    "deltanet.cli.verify",
    "deltanet.cli.simulate",
    "deltanet.cli.synth",
    "deltanet.cli.build",
    "deltanet.cli.run",
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deltanet",
        description="RL policies as sparse delta networks: train, prune, quantize, calibrate, "
                    "evaluate, generate Verilog, simulate, verify and build "
                    "bitstreams for boards.",
    )
    parser.add_argument("--version", action="version", version=f"deltanet {__version__}")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or status lines (for scripts and logs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _error(command: str, e: BaseException) -> None:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = one_line(e) or type(e).__name__
    print(f"deltanet {command}: error: {text}", file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error, already printed as one line (--help: exit 0)
        if e.code in (0, None):
            raise
        return e.code if isinstance(e.code, int) else 2
    try:
        if args.quiet:
            with quiet():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except CliError as e:
        _error(args.command, e)
        return e.exit_code
    except (ValueError, OSError) as e:
        _error(args.command, e)
        return 2
    except KeyboardInterrupt:
        print(f"deltanet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
