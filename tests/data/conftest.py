"""Every data test runs with its system and cache folders in tmp_path and the network replaced."""

from __future__ import annotations

import pytest

import diffuse.data.download as download_module
import diffuse.data.locate as locate_module


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """System and cache folders inside tmp_path, no $DIFFUSE_CACHE, and downloads that fail
    unless a test publishes fake files (see ``publish``); $DIFFUSE_OFFLINE is lifted so that
    they can."""

    def no_network(url, destination, description):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(download_module, "fetch_url", no_network)
    monkeypatch.delenv(locate_module.OFFLINE_VAR)
    monkeypatch.delenv(locate_module.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", tmp_path / "system")
