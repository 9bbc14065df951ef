"""Shared fixtures: a scripted loopback OpenAI server and an isolated user cache folder; and the
golden-file check (``from conftest import assert_golden``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI  # noqa: E402


@pytest.fixture
def fake_llm():
    """A running FakeOpenAI server; ``fake_llm.base_url`` is its /v1 URL."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL 15 cluster for the session (tests/postgres.py)."""
    from postgres import Cluster

    with Cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request, tmp_path) -> str:
    """A fresh project database of each backend: a SQLite file path or a postgresql:// URL."""
    if request.param == "sqlite":
        return str(tmp_path / "rlaif.db")
    return request.getfixturevalue("postgres").new_database()


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                   "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's real endpoint settings and keys."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name in PROXY_VARIABLES:  # a proxy would route loopback test servers through httpx
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    if "RLAIF_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("RLAIF_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rlaif-cache"))


def assert_golden(path: Path, text: str) -> None:
    """``text`` must equal the golden file at ``path`` (under tests/golden/);
    ``RLAIF_UPDATE_GOLDEN=1`` rewrites the file instead (review the diff like code)."""
    if os.environ.get("RLAIF_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing {path}; run with RLAIF_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), \
        f"{path} differs: rerun with RLAIF_UPDATE_GOLDEN=1 and review the diff"
