"""The ``diffuse`` command line: a thin layer over functions callable from Python.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from diffuse import __version__
from diffuse.allocator import keep_freed_memory
from diffuse.errors import DiffuseError, DiffuseWarning

# Modules of this package that define sub-commands, in the order --help lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "eval",
    "convert",
    "export",
    "nll",
    "neighbors",
    "reproduce",
    "sample",
    "sweep",
    "figures",
    "train",
    "train_classifier",
    "plot",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffuse",
        description="Train, sample, guide and evaluate Gaussian diffusion image models.",
    )
    parser.add_argument(
        "--version", action="version", version=f"diffuse {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help="the command to run"
    )
    for name in COMMAND_MODULES:
        importlib.import_module(f"diffuse.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # every command runs networks: their tensors reuse freed pages
    with warnings.catch_warnings():
        warnings.simplefilter("always", DiffuseWarning)
        show = warnings.showwarning

        def show_warning(message, category, *rest, **kwargs) -> None:
            """Our warnings as one line each, like our errors; others as Python shows them."""
            if issubclass(category, DiffuseWarning):
                print(f"diffuse {args.command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, *rest, **kwargs)

        warnings.showwarning = show_warning
        try:
            return int(args.func(args) or 0)
        except DiffuseError as error:
            print(f"diffuse {args.command}: error: {error}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
