"""Fixtures of the library tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_openai_env(monkeypatch):
    """No OpenAI key or base URL from the machine's environment leaks into a teacher test."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
