"""`diffuse reproduce` end to end on a claim declared for the tests: tiny models of the
digits, trained a few steps, measured with a stand-in for the Inception network; then a
rerun that redoes nothing, an interrupted training that resumes, and every bad input
refused with a one-line error and nothing written or lost."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import diffuse.cli.reproduce as reproduce_cli
import diffuse.reproduce.runner as runner
from diffuse.cli import main
from diffuse.reproduce.claims import less
from diffuse.reproduce.plan import (
    Claim,
    Curve,
    Likelihood,
    ModelPlan,
    Plot,
    Progressive,
    Quality,
    Reference,
    Sampling,
    Verdict,
)
from helpers.isolation import isolate
from helpers.stand_in_network import replace_inception

SMALL = {
    "diffusion.timesteps": 40,
    "train.batch_size": 16,
    "train.sample_columns": 1,
    "train.sample_steps": 2,
}
FOUR = {**SMALL, "model.image_size": 4}  # the base of the two-stage pipeline: 4x4 digits
MODELS = {
    plan.name: plan
    for plan in (
        ModelPlan("tiny-cosine", "tiny", "digits", 3, SMALL, description="tiny, cosine"),
        ModelPlan(
            "tiny-linear",
            "tiny",
            "digits",
            6,
            {**SMALL, "diffusion.schedule": "linear", "train.log_every": 1},
            description="tiny, linear",
        ),
        ModelPlan(
            "tiny-classifier",
            "tiny",
            "digits",
            2,
            {"diffusion.timesteps": 40, "train.batch_size": 16},
            task="classifier",
        ),
        ModelPlan("tiny-4", "tiny", "digits", 2, FOUR, description="4x4 base"),
        ModelPlan(
            "up-4-8",
            "fashion-upsampler-14-28",
            "digits",
            2,
            {**SMALL, "model.image_size": 8, "model.low_res_size": 4, "model.model_channels": 16},
            description="4 -> 8 upsampler",
        ),
    )
}


def check(r) -> Verdict:
    return Verdict(
        (
            less(
                "FID, cosine below linear",
                r.fid("cosine", 3),
                r.fid("linear", 3),
            ),
            less("bits/dim, cosine below linear", r.nll("cosine"), r.nll("linear")),
        )
    )


def sampling(model: str, **options) -> Sampling:
    return Sampling(model, **{"steps": "3", "n": 12, **options})


CLAIM = Claim(
    name="tiny-trend",
    number=1,
    title="a tiny cosine model beats a tiny linear one",
    source="the tests",
    paper="FID 1.0 against 2.0",
    trend="FID and bits/dim lower with the cosine schedule",
    check=check,
    reference=Reference("digits", "train", 40),
    floor=Reference("digits", "test", 12),
    quality=(
        Quality("cosine", 3, sampling("tiny-cosine")),
        Quality("linear", 3, sampling("tiny-linear")),
        Quality("cosine", 5, sampling("tiny-cosine", steps="5", skip=0.2)),
        Quality(
            "linear", 5, sampling("tiny-linear", sampler="ddpm", steps="5", variance="fixed_large")
        ),
        Quality(
            "guided",
            3,
            sampling("tiny-cosine", cfg=1.0, classifier="tiny-classifier", classifier_scale=2.0),
        ),
        Quality("two-stage", 3, sampling("tiny-4", upsampler="up-4-8", upsampler_steps="2")),
    ),
    likelihood=(Likelihood("cosine", "tiny-cosine", n=4), Likelihood("linear", "tiny-linear", n=4)),
    curves=(Curve("linear", "tiny-linear"),),
    figures=(Progressive("tiny-cosine", steps="4", n=2, columns=3),),
    plots=(Plot("fid.png", "fid", "steps"), Plot("loss.png", "curve", "step")),
)


def declare(monkeypatch, claims=(CLAIM,), models=MODELS) -> list:
    """The command runs ``claims`` and ``models``, measured with a stand-in for the
    Inception network; returns the list of stand-ins made."""
    monkeypatch.setattr(reproduce_cli, "CLAIMS", {claim.name: claim for claim in claims})
    monkeypatch.setattr(reproduce_cli, "MODELS", models)
    return replace_inception(monkeypatch, runner)


@pytest.fixture
def declared(monkeypatch):
    return declare(monkeypatch)


def reproduce(root: Path, *args: str) -> int:
    return main(["reproduce", *args, "--root", str(root), "--no-progress"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    """The test claim run once into a root folder (tests that change it copy it), and
    what the command printed."""
    root = tmp_path_factory.mktemp("finished") / "reproduction"
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory)
        declare(monkeypatch)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert reproduce(root, "tiny-trend") == 0
    return root, printed.getvalue()


def copy_of(finished, tmp_path: Path) -> Path:
    """A copy of the finished root, its files' times kept."""
    return Path(shutil.copytree(finished[0], tmp_path / "reproduction"))


def files_and_times(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.stat().st_mtime_ns
        for path in root.rglob("*")
        if path.is_file()
    }


def test_a_claim_runs_end_to_end(finished):
    root, out = finished
    assert "model tiny-cosine: training (3 steps)" in out and "sampling 12 images" in out
    result = json.loads((root / "tiny-trend/result.json").read_text())
    rows = {(row["series"], row["x"]): row for row in result["quality"]}
    assert len(rows) == 6 and all(row["n"] == 12 and row["fid"] >= 0 for row in rows.values())
    assert 0 <= rows[("guided", 3)]["precision"] <= 1 and "recall" in rows[("guided", 3)]
    assert result["floor"]["n"] == 12 and result["floor"]["fid"] >= 0
    for row in [result["floor"], *rows.values()]:  # each metric's noise
        assert row["fid_sd"] > 0 and row["precision_sd"] >= 0 and row["recall_sd"] >= 0
    # the verdict is the declared check on these numbers, part by part
    fids = rows[("cosine", 3)]["fid"], rows[("linear", 3)]["fid"]
    nlls = result["likelihood"]["cosine"]["bpd"], result["likelihood"]["linear"]["bpd"]
    parts = result["verdict"]["parts"]
    assert [part["holds"] for part in parts] == [fids[0] < fids[1], nlls[0] < nlls[1]]
    assert result["verdict"]["holds"] == (fids[0] < fids[1] and nlls[0] < nlls[1])
    assert f"{fids[0]:.2f}" in parts[0]["text"] and f"{fids[1]:.2f}" in parts[0]["text"]
    curve = json.loads(next((root / "scores").glob("curve-*.json")).read_text())
    assert curve["key"] == "loss" and curve["steps"] == list(range(1, 7)) and curve["noise"] > 0
    assert result["files"] == ["fid.png", "loss.png", "progressive-tiny-cosine.png"]
    for name in result["files"]:
        assert (root / "tiny-trend" / name).read_bytes().startswith(b"\x89PNG")
    cosine = result["models"]["tiny-cosine"]
    assert cosine["steps"] == 3 and cosine["pieces"] == 1 and cosine["cpu_minutes"] > 0
    record = json.loads((root / "models/tiny-cosine-3steps.json").read_text())
    assert record["finished"] and record["pieces"][0]["cpu"] == "CPU of the test suite"
    for key in ("commit", "cpu", "threads", "date", "wall_minutes", "cpu_minutes"):
        assert key in record["pieces"][0]
    assert result["cpu"] == "CPU of the test suite"
    assert result["command"] == "diffuse reproduce tiny-trend"
    report = (root / "REPRODUCTION.md").read_text()
    verdict = "**yes**" if result["verdict"]["holds"] else "**no**"
    assert "| 1 | [a tiny cosine model beats a tiny linear one](#1-tiny-trend) |" in report
    assert verdict in report and "`diffuse reproduce tiny-trend`" in report
    assert "**floor**: real test images" in report and "nohup diffuse reproduce" in report
    row = rows[("cosine", 3)]
    cells = [f"{row[key]:.2f} ± {row[f'{key}_sd']:.2f}" for key in ("fid", "precision", "recall")]
    assert f"| cosine | 3 | {' | '.join(cells)} |" in report
    assert (root / ".work/.gitignore").read_text().endswith("*\n")


def test_a_rerun_trains_samples_and_measures_nothing(finished, tmp_path, declared, capsys):
    root = copy_of(finished, tmp_path)
    before = files_and_times(root)
    assert reproduce(root, "tiny-trend") == 0
    out = capsys.readouterr().out
    assert "training" not in out and "resuming" not in out and "sampling" not in out
    after = files_and_times(root)
    assert after.keys() == before.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"REPRODUCTION.md"}, changed  # the report is regenerated, alone
    assert all(made.calls == 0 for made in declared)  # no image's features computed


def clean_clone_of(finished, tmp_path: Path) -> Path:
    """A copy of the finished root as a clean clone has it: without the runs and samples."""
    root = copy_of(finished, tmp_path)
    shutil.rmtree(root / ".work")
    return root


def committed(root: Path) -> dict[str, int]:
    return {name: time for name, time in files_and_times(root).items() if ".work" not in name}


def test_a_clean_clone_trains_nothing_for_a_claim_it_has_every_score_of(
    finished, tmp_path, declared, capsys
):
    root = clean_clone_of(finished, tmp_path)
    before = committed(root)
    assert reproduce(root, "tiny-trend") == 0
    out = capsys.readouterr().out
    assert "training" not in out and "sampling" not in out
    assert all(made.calls == 0 for made in declared)
    after = committed(root)
    assert {name for name in after if after[name] != before.get(name)} == {"REPRODUCTION.md"}


def test_a_model_trained_again_has_every_score_of_it_measured_again(
    finished, tmp_path, declared, capsys
):
    """Another machine lacks a model's run: where a claim still lacks a score of it, the
    model is trained again from scratch, and every score of it that the claim shows is
    measured again under its second training's name, so that no claim mixes scores of
    two trainings. The first training's scores are left as they were."""
    root = clean_clone_of(finished, tmp_path)
    linear = [
        path
        for path in (root / "scores").glob("quality-*.json")
        if json.loads(path.read_text())["models"] == {"tiny-linear": "tiny-linear-6steps"}
    ]
    assert len(linear) == 2
    linear[0].unlink()
    before = committed(root)
    assert reproduce(root, "tiny-trend") == 0
    out = capsys.readouterr().out
    assert "model tiny-linear: training (6 steps)" in out and "tiny-cosine: training" not in out
    record = json.loads((root / "models/tiny-linear-6steps.json").read_text())
    assert [piece["first_step"] for piece in record["pieces"]] == [0, 0] and record["finished"]
    after = committed(root)
    unchanged = {name for name in before if after.get(name) == before[name]}
    rewritten = {"REPRODUCTION.md", "models/tiny-linear-6steps.json", "tiny-trend/result.json"}
    rewritten |= {"tiny-trend/fid.png", "tiny-trend/loss.png"}
    assert unchanged == set(before) - rewritten
    made = [json.loads((root / name).read_text()) for name in set(after) - set(before)]
    made = [record for record in made if "kind" in record]  # the scores, not the plots
    second = "tiny-linear-6steps (training 2)"
    assert sorted(record["kind"] for record in made) == ["curve", "nll", "quality", "quality"]
    assert all(
        second in (record.get("models", {}).values() or [record["model"]]) for record in made
    )
    result = json.loads((root / "tiny-trend/result.json").read_text())
    assert result["models"]["tiny-linear"]["folder"] == second
    assert result["models"]["tiny-linear"]["pieces"] == 1
    assert result["models"]["tiny-cosine"]["folder"] == "tiny-cosine-3steps"


NOISE = ("fid_sd", "precision_sd", "recall_sd")


@pytest.mark.parametrize("lacking", [NOISE, ("precision_sd", "recall_sd")])
def test_a_score_kept_without_noise_gains_it_from_its_kept_images(
    finished, tmp_path, declared, capsys, lacking
):
    """Scores written before they had the noise of their metrics (FID's, or precision's
    and recall's) get what they lack from their kept samples (and the floor from its real
    images), their other values untouched; a score whose samples are gone (a clean clone)
    stays as it was, and nothing is sampled again."""
    root = copy_of(finished, tmp_path)
    scores = {path: json.loads(path.read_text()) for path in (root / "scores").glob("*.json")}
    kept = {path: record for path, record in scores.items() if "fid_sd" in record}
    assert {record["kind"] for record in kept.values()} == {"quality", "floor"}
    for path, record in kept.items():
        path.write_text(json.dumps({k: v for k, v in record.items() if k not in lacking}))
    gone = next(path for path, record in kept.items() if record["kind"] == "quality")
    identity = {key: kept[gone][key] for key in ("sampling", "models")}
    (root / ".work/samples").joinpath(runner.Store(root).samples(identity).name).unlink()
    assert reproduce(root, "tiny-trend") == 0
    out = capsys.readouterr().out
    assert "sampling" not in out and "training" not in out
    for path, record in kept.items():
        again = json.loads(path.read_text())
        added = {key for name in lacking for key in (name, f"{name}_commit")}
        assert {k: v for k, v in again.items() if k not in added} == {
            k: v for k, v in record.items() if k not in lacking
        }
        if path == gone:
            assert not set(lacking) & set(again)
        else:
            assert {key: again[key] for key in lacking} == pytest.approx(
                {key: record[key] for key in lacking}, rel=1e-9
            )
            assert all(f"{key}_commit" in again for key in lacking)


def stop_when(path: Path) -> threading.Thread:
    """Send SIGTERM to this process as soon as the file ``path`` has content."""

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (path.exists() and path.stat().st_size):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


RESUMED = Claim(
    name="tiny-resume",
    number=2,
    title="bits/dim of a cosine and a linear tiny model",
    source="the tests",
    paper="none",
    trend="bits/dim lower with the cosine schedule",
    check=lambda r: Verdict((less("bits/dim", r.nll("cosine"), r.nll("linear")),)),
    likelihood=(Likelihood("cosine", "tiny-cosine", n=2), Likelihood("linear", "tiny-linear", n=2)),
)


def test_an_interrupted_training_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    """A signal during the second model's training saves it and keeps the first model's
    scores, measured before the second one started: a session that ends loses no model
    whose training it finished (its run would be lost with the machine)."""
    long = ModelPlan(
        "tiny-linear",
        "tiny",
        "digits",
        40,
        {**SMALL, "diffusion.schedule": "linear", "train.log_every": 1},
    )
    declare(monkeypatch, [RESUMED], {**MODELS, "tiny-linear": long})
    root = tmp_path / "r"
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not kill pytest
    try:
        watcher = stop_when(root / ".work/runs/tiny-linear-40steps/metrics.jsonl")
        assert reproduce(root) == 128 + signal.SIGTERM
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "SIGTERM: stopped during tiny-resume" in capsys.readouterr().err
    record = json.loads((root / "models/tiny-linear-40steps.json").read_text())
    (piece,) = record["pieces"]
    assert piece["interrupted"] == "SIGTERM" and 0 < piece["step"] < 40 and not record["finished"]
    assert not (root / "tiny-resume/result.json").exists()
    assert "not run yet" in (root / "REPRODUCTION.md").read_text()
    (measured,) = (root / "scores").glob("nll-*.json")
    assert json.loads(measured.read_text())["model"] == "tiny-cosine-3steps"
    cosine = root / ".work/runs/tiny-cosine-3steps"
    trained_before = files_and_times(cosine)  # finished before the signal: kept as it is
    measured_before = files_and_times(root / "scores")

    assert reproduce(root) == 0
    assert "model tiny-linear: resuming (40 steps)" in capsys.readouterr().out
    record = json.loads((root / "models/tiny-linear-40steps.json").read_text())
    first, second = record["pieces"]
    assert (second["first_step"], second["step"]) == (first["step"], 40)
    assert second["interrupted"] is None and record["finished"]
    assert files_and_times(cosine) == trained_before
    again = files_and_times(root / "scores")
    assert {name: again[name] for name in measured_before} == measured_before
    result = json.loads((root / "tiny-resume/result.json").read_text())
    assert result["models"]["tiny-linear"]["pieces"] == 2


def test_a_signal_while_sampling_keeps_what_was_finished(finished, tmp_path, monkeypatch, capsys):
    root = copy_of(finished, tmp_path)
    kept = json.loads((root / "tiny-trend/result.json").read_text())
    for made in [*(root / "scores").glob("quality-*.json"), *(root / ".work/samples").glob("*")]:
        made.unlink()
    declare(monkeypatch)
    sample = runner.generate

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill -TERM` would, while sampling
        return sample(*args, **kwargs)

    monkeypatch.setattr(runner, "generate", terminated)
    assert reproduce(root, "tiny-trend") == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "SIGTERM: stopped during tiny-trend; what was finished is kept" in err
    assert not [path for path in root.rglob("*") if path.name.endswith(".tmp")]
    assert not list((root / "scores").glob("quality-*.json"))
    monkeypatch.setattr(runner, "generate", sample)
    assert reproduce(root, "tiny-trend") == 0
    again = json.loads((root / "tiny-trend/result.json").read_text())

    def metrics(result):
        return [(row["series"], row["x"], row["fid"], row["recall"]) for row in result["quality"]]

    assert metrics(again) == metrics(kept)  # same seeds and kernels: the same samples, FIDs


def test_every_stage_samples_in_float32_as_the_models_trained(finished, tmp_path, monkeypatch):
    """``auto`` would pick bf16 on some CPUs: a claim resumed on another machine would mix
    precisions within one table. Every stage, the upsampler's included, runs float32."""
    root = copy_of(finished, tmp_path)
    for made in [*(root / "scores").glob("quality-*.json"), *(root / ".work/samples").glob("*")]:
        made.unlink()
    declare(monkeypatch)
    sample = runner.generate
    precisions = set()

    def recording(base, n, **options):
        precisions.update(
            stage.precision for stage in (base, options.get("upsampler")) if stage is not None
        )
        return sample(base, n, **options)

    monkeypatch.setattr(runner, "generate", recording)
    assert reproduce(root, "tiny-trend") == 0
    assert precisions == {"fp32"}


def test_an_unknown_claim_is_refused_naming_the_claims(tmp_path, declared, capsys):
    root = tmp_path / "r"
    assert reproduce(root, "tiny-trend", "tiny-trned") == 2
    err = capsys.readouterr().err.strip()
    assert err == "diffuse reproduce: error: unknown claim 'tiny-trned'; the claims are: tiny-trend"
    assert not root.exists()
    assert reproduce(root, "--budget-scale", "0") == 2
    assert "budget scale must be a positive number, got 0.0" in capsys.readouterr().err
    assert not root.exists()


def test_the_list_gives_each_claim_its_estimate_and_status(finished, tmp_path, declared, capsys):
    root = tmp_path / "r"
    assert reproduce(root, "--list") == 0
    out = capsys.readouterr().out
    assert " 1  tiny-trend" in out and "not run yet: a tiny cosine model beats" in out
    assert "all 1: about 0.0 hours on a 2-core CPU" in out
    assert not root.exists()  # listing writes nothing
    assert reproduce(finished[0], "--list") == 0
    result = json.loads((finished[0] / "tiny-trend/result.json").read_text())
    assert f"{result['verdict']['summary']}: a tiny cosine model" in capsys.readouterr().out


def test_the_report_shows_claims_not_run_yet_with_their_command(tmp_path, declared, capsys):
    root = tmp_path / "r"
    assert reproduce(root, "--report-only") == 0
    report = (root / "REPRODUCTION.md").read_text()
    assert "| not run yet | not run yet | `diffuse reproduce tiny-trend` |" in report
    assert "**Not run yet.** Models: `tiny-cosine` (tiny, cosine)" in report
    assert not (root / ".work").exists()


@pytest.mark.parametrize("clean_clone", [False, True], ids=["run", "record"])
def test_a_run_trained_with_other_settings_is_refused_and_kept(
    finished, tmp_path, monkeypatch, capsys, clean_clone
):
    """Refused where the run is kept, and on a clean clone (the model's record): its scores
    would otherwise pass for the changed model's."""
    root = (clean_clone_of if clean_clone else copy_of)(finished, tmp_path)
    before = files_and_times(root)
    changed = ModelPlan("tiny-cosine", "tiny", "digits", 3, {**SMALL, "train.lr": 5e-4})
    declare(monkeypatch, models={**MODELS, "tiny-cosine": changed})
    assert reproduce(root, "tiny-trend") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffuse reproduce: error: ") and err.count("\n") == 0
    where = "tiny-cosine-3steps.json records" if clean_clone else "holds a run"
    assert f"{where} of model tiny-cosine trained with other settings than declared now" in err
    assert "train.lr: 0.002 -> 0.0005" in err and "move it and the scores of the model away" in err
    assert files_and_times(root) == before


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def own_git(monkeypatch, tmp_path):
    """git as on a fresh machine: none of the user's settings or hooks (a signing key, a
    hooks path), and no repository found above ``tmp_path``."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


def test_commit_records_each_result_and_nothing_else(finished, tmp_path, declared, capsys, own_git):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")  # staged by the user: must stay staged, uncommitted
    root = Path(shutil.copytree(finished[0], repo / "reproduction"))
    (root / "tiny-trend/result.json").unlink()
    floor = next((root / "scores").glob("floor-*.json"))
    floor.unlink()  # measured again, so committed
    assert reproduce(root, "tiny-trend", "--commit") == 0
    assert git(repo, "log", "--format=%s").startswith("reproduce: claim 1 (tiny-trend) ")
    committed = set(git(repo, "show", "--name-only", "--format=", "HEAD").split())
    assert committed == {
        "reproduction/tiny-trend/result.json",
        "reproduction/tiny-trend/fid.png",
        "reproduction/tiny-trend/loss.png",
        f"reproduction/scores/{floor.name}",
        "reproduction/REPRODUCTION.md",
    }
    assert "A  notes.txt" in git(repo, "status", "--short")
    assert reproduce(root, "tiny-trend", "--commit") == 0  # nothing new: no new commit
    assert len(git(repo, "log", "--format=%s").splitlines()) == 1


def test_commit_outside_a_repository_is_refused_before_any_work(
    tmp_path, declared, capsys, own_git
):
    root = tmp_path / "r"
    assert reproduce(root, "tiny-trend", "--commit") == 2
    assert "--commit needs --root inside a git repository" in capsys.readouterr().err
    assert not root.exists()


def test_a_number_the_report_lacks_is_a_dash_not_nan():
    from diffuse.reproduce.report import _number

    assert [_number(1.23456, 3), _number(math.nan), _number(None)] == ["1.235", "-", "-"]


def test_remeasure_draws_and_measures_again_keeping_the_models(
    finished, tmp_path, monkeypatch, capsys
):
    """After a fix to sampling, the kept sample sets (named by their settings, not by the
    code) would be measured again as they are: --remeasure deletes the claim's samples,
    scores and figures first, and --commit commits their removal when a stop leaves them
    unmade; the models are not trained again, and the run that continues remakes them."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    root = Path(shutil.copytree(finished[0], repo / "reproduction"))
    scores = {path: json.loads(path.read_text()) for path in (root / "scores").glob("*.json")}
    guided = next(p for p, r in scores.items() if r.get("sampling", {}).get("classifier"))
    stale = {**scores[guided], "fid": 999.0}  # as a sampler's bug would have left it
    guided.write_text(json.dumps(stale))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "measured with a bug")
    models = committed(root)
    declare(monkeypatch)
    sample = runner.generate

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return sample(*args, **kwargs)

    monkeypatch.setattr(runner, "generate", terminated)
    assert reproduce(root, "tiny-trend", "--remeasure", "--commit") == 128 + signal.SIGTERM
    captured = capsys.readouterr()
    assert "its samples and scores are made again" in captured.out
    assert "run without --remeasure again to continue" in captured.err
    assert git(repo, "log", "-1", "--format=%s").strip() == (
        "reproduce: partial work on tiny-trend (SIGTERM)"
    )
    removed = git(repo, "show", "--name-status", "--format=", "HEAD").splitlines()
    removed = {line.split()[1] for line in removed if line.startswith("D")}
    assert f"reproduction/scores/{guided.name}" in removed
    assert "reproduction/tiny-trend/progressive-tiny-cosine.png" in removed
    assert not list((root / ".work/samples").glob("*.npz"))
    assert not list((root / "scores").glob("quality-*.json"))
    assert (root / "scores" / next(p.name for p in scores if p.name.startswith("floor"))).is_file()

    monkeypatch.setattr(runner, "generate", sample)
    assert reproduce(root, "tiny-trend", "--commit") == 0
    out = capsys.readouterr().out
    assert "sampling" in out and "training" not in out and "resuming" not in out
    again = json.loads(guided.read_text())
    assert again["fid"] == pytest.approx(scores[guided]["fid"], rel=1e-6)
    assert {name: models[name] for name in models if name.startswith("models/")} == {
        name: time for name, time in committed(root).items() if name.startswith("models/")
    }
    assert git(repo, "status", "--short", "--", "reproduction") == ""
