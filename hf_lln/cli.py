"""The ``hf-lln`` command: one entry point, one sub-command per module.

Each sub-command lives in the module that implements it and exposes ``add_parser(subparsers)``,
which registers its arguments and sets ``func`` on the parsed namespace. Modules are imported when
the command starts, so ``hf-lln --help`` lists every sub-command.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMAND_MODULES = (
    "hf_lln.convert",
    "hf_lln.experiments.analysis.cli",
    "hf_lln.experiments.benchmark",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-lln", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
