"""The one ``deltanet`` command: subcommands for the jobs users do.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds an
argparse sub-parser whose ``func(args) -> int`` does the work.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = [
    "deltanet.cmd_eval",
    "deltanet.cmd_train",
    "deltanet.cmd_prune",
    "deltanet.cmd_quantize",
    "deltanet.cmd_calibrate",
    "deltanet.cmd_sweep",
    "deltanet.cmd_generate",
    "deltanet.cmd_verify",
    "deltanet.cmd_simulate",
    "deltanet.cmd_synth",
]


class CliError(Exception):
    """A user error: printed as ``deltanet: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltanet",
        description="RL policies as sparse delta networks: train, prune, quantize, calibrate, "
                    "evaluate, generate Verilog, simulate and verify.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"deltanet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"deltanet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deltanet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
