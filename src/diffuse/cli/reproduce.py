"""``diffuse reproduce [NAME ...]``: the papers' claims as experiments on this CPU.

Each claim (--list names them, with their estimated cost and whether they ran) trains
its models, draws its samples, measures them and checks the paper's trend; the results
(small JSON and PNG files) go under --root with REPRODUCTION.md, the report generated
from them. Everything finished is kept and reused: the command can be stopped at any time
(SIGINT or SIGTERM save the model being trained; a sample set or score being made is made
again) and run again to continue. --commit commits each claim's results to git as it
finishes. Without NAME every claim runs, in order. After a fix to sampling or measuring,
--remeasure draws the named claims' samples and measures their scores again (the kept
sample sets do not know the code that drew them); their trained models are kept. See
REPRODUCTION.md (or diffuse.reproduce.report) for running it in the background.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diffuse.cli.common import add_command, add_progress_option
from diffuse.errors import ConfigError
from diffuse.reproduce.claims import CLAIMS, MODELS
from diffuse.reproduce.costs import estimate
from diffuse.reproduce.plan import check_scale
from diffuse.reproduce.report import write_report
from diffuse.reproduce.runner import Suite, SuiteInterrupted
from diffuse.reproduce.store import Store
from diffuse.sample.interrupt import exit_status, signal_name, sigterm_interrupts


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "reproduce", "run the papers' claims as experiments (REPRODUCTION.md)", __doc__
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="claims to run (default: all)")
    parser.add_argument(
        "--list", action="store_true", help="list the claims, their estimated cost and status"
    )
    parser.add_argument("--root", type=Path, default=Path("reproduction"), help="results folder")
    parser.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="train every model this fraction of its steps (sample counts stay)",
    )
    parser.add_argument(
        "--commit", action="store_true", help="git-commit each claim's results as it finishes"
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="delete the claims' sample sets, scores and figures first and make them again "
        "(models kept); to continue after a stop, run again without it",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="regenerate REPRODUCTION.md, run nothing"
    )
    add_progress_option(parser)
    parser.set_defaults(func=run)


def chosen_claims(names: list[str]) -> list:
    """The claims named (all, in order, when none is), or a ConfigError naming the valid ones."""
    unknown = [name for name in names if name not in CLAIMS]
    if unknown:
        raise ConfigError(
            f"unknown claim {', '.join(map(repr, unknown))}; the claims are: {', '.join(CLAIMS)}"
        )
    return [CLAIMS[name] for name in dict.fromkeys(names)] or list(CLAIMS.values())


def run(args) -> int:
    claims = chosen_claims(args.names)
    check_scale(args.budget_scale)
    store = Store(args.root)
    if args.list:
        return _list(claims, store, args.budget_scale)
    if args.report_only:
        print(f"wrote {write_report(list(CLAIMS.values()), MODELS, store, args.budget_scale)}")
        return 0
    if args.commit:
        _check_git(args.root)
    suite = Suite(args.root, MODELS, scale=args.budget_scale, progress=not args.no_progress)
    suite.check(claims)
    for claim in claims:
        minutes = round(estimate([claim], MODELS, args.budget_scale).total, 1)
        if args.remeasure:
            suite.forget_measurements(claim)
        try:
            with sigterm_interrupts():
                result = suite.run(claim, minutes)
        except SuiteInterrupted as stop:
            return _stopped(suite, store, args, claim.name, stop.signal)
        except KeyboardInterrupt as stop:
            return _stopped(suite, store, args, claim.name, signal_name(stop))
        verdict = result["verdict"]["summary"]
        _finish(suite, store, args, f"reproduce: claim {claim.number} ({claim.name}) {verdict}")
    print(f"results in {args.root}; report: {store.report}")
    return 0


def _stopped(suite: Suite, store: Store, args, claim: str, name: str) -> int:
    """A signal stopped the work on ``claim``: keep (and commit) what was finished, say how
    to continue, exit with 128 + the signal's number."""
    _finish(suite, store, args, f"reproduce: partial work on {claim} ({name})")
    again = "without --remeasure" if args.remeasure else "the same command"
    print(
        f"diffuse reproduce: {name}: stopped during {claim}; what was finished is kept in "
        f"{args.root}: run {again} again to continue",
        file=sys.stderr,
    )
    return exit_status(name)


def _list(claims, store: Store, scale: float) -> int:
    total = estimate(claims, MODELS, scale)
    print(f"{'#':>2}  {'claim':<26} {'minutes':>7}  status")
    for claim in claims:
        minutes = estimate([claim], MODELS, scale).total
        result = store.read(store.result(claim.name))
        status = "not run yet" if result is None else result["verdict"]["summary"]
        print(f"{claim.number:>2}  {claim.name:<26} {minutes:>7.0f}  {status}: {claim.title}")
    print(
        f"all {len(claims)}: about {total.total / 60:.1f} hours on a 2-core CPU (training "
        f"{total.training:.0f} min, sampling {total.sampling:.0f}, Inception features "
        f"{total.evaluation:.0f}, bits/dim {total.likelihood:.0f}; shared work counted once)"
    )
    return 0


def _finish(suite: Suite, store: Store, args, message: str) -> None:
    """Regenerate the report; with --commit, commit it with the records just written."""
    report = write_report(list(CLAIMS.values()), MODELS, store, args.budget_scale)
    if args.commit:
        git_commit(args.root, [*suite.take_written(), report], message)


def _check_git(root: Path) -> None:
    """--commit needs --root inside a git work tree (checked before any work)."""
    folder = root if root.is_dir() else next(p for p in root.absolute().parents if p.is_dir())
    done = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or done.stdout.strip() != "true":
        raise ConfigError(
            f"--commit needs --root inside a git repository, and {root} is not in one; "
            "drop --commit or choose a --root in a repository"
        )


def git_commit(root: Path, paths: list[Path], message: str) -> None:
    """Commit exactly ``paths``, written or deleted (other staged changes stay staged,
    uncommitted), if they changed."""
    git = ["git", "-C", str(root)]
    written = [str(path.absolute()) for path in paths if path.exists()]
    gone = [str(path.absolute()) for path in paths if not path.exists()]
    if gone:  # the deleted ones git knows of
        listed = subprocess.run(
            [*git, "ls-files", "-z", "--", *gone], check=True, capture_output=True, text=True
        )  # relative to root
        gone = [str(root.absolute() / name) for name in listed.stdout.split("\0") if name]
    files = written + gone
    if not files:
        return
    if written:
        subprocess.run([*git, "add", "--", *written], check=True, capture_output=True)
    if gone:
        subprocess.run([*git, "rm", "-q", "--cached", "--", *gone], check=True, capture_output=True)
    unchanged = subprocess.run([*git, "diff", "--cached", "--quiet", "--", *files])
    if unchanged.returncode == 0:
        return
    subprocess.run(
        [*git, "commit", "-q", "-m", message, "--", *files], check=True, capture_output=True
    )
