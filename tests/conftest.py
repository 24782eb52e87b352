"""Shared fixtures: the real cases in ../shared/data, skipped with a reason where absent."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# every result.json that any test writes, in this process or in a command it runs, is checked
# against the schema before it is written (a user's run skips that check: see report/files.py)
os.environ["VERTGRADE_VALIDATE_OUTPUT"] = "1"


def shared_data_dir() -> Path | None:
    """``$VERTGRADE_TEST_DATA`` or ``../shared/data`` beside the repository, if it exists."""
    env = os.environ.get("VERTGRADE_TEST_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real test data not found: set VERTGRADE_TEST_DATA or place it at ../shared/data"
        )
    return path


@pytest.fixture(scope="session")
def expert_grades(data_dir: Path) -> dict[tuple[str, int], int]:
    with open(data_dir / "grades.csv", newline="") as fh:
        return {(r["subject"], int(r["label"])): int(r["genant_grade"]) for r in csv.DictReader(fh)}
