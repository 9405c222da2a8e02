"""Shared fixtures. Tests that need the real UTKFace chips read ``../shared/data/utkface`` (never a copy)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_UTKFACE = REPO.parent / "shared" / "data" / "utkface"
UTKFACE_COUNT = 18_967


@pytest.fixture(scope="session")
def shared_utkface() -> Path:
    """The shared UTKFace folder, or a skip that says why (CI clones have ../shared beside them)."""
    if not SHARED_UTKFACE.is_dir():
        pytest.skip(f"shared UTKFace chips not found at {SHARED_UTKFACE} (expected ../shared/data/utkface)")
    return SHARED_UTKFACE
