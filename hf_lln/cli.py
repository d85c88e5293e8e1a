"""The ``hf-lln`` command: one entry point, one sub-command per module.

Each sub-command lives in the module that implements it and exposes ``add_parser(subparsers)``,
which registers its arguments and sets ``func`` on the parsed namespace. Modules are imported when
the command starts, so ``hf-lln --help`` lists every sub-command.

A user error (a ``ValueError``, an ``OSError`` or a config validation error: a bad value, a missing or existing file or folder, a
model that cannot be loaded) ends the command with one ``hf-lln <command>: error: ...`` line on stderr
and exit status 2, as argparse does for a bad flag; ``HF_LLN_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from huggingface_hub.errors import StrictDataclassError

SUBCOMMAND_MODULES = (
    "hf_lln.convert",
    "hf_lln.experiments.analysis.cli",
    "hf_lln.experiments.bench.cli",
)
USAGE_ERROR = 2  # argparse's exit status for a bad command line
TRACEBACK_ENV = "HF_LLN_TRACEBACK"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-lln", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, StrictDataclassError) as error:  # a config value the LLN config refuses
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"hf-lln {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
