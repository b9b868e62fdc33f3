"""Fixtures shared by every test package: the committed I = 4 reference checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DGNN_I4 = Path(os.environ.get("RL_ISAC_TEST_DGNN_I4", REPO / "results" / "checkpoints" / "dgnn-I4"))
"""The phase-1 DGNN checkpoint at I = 4 (committed; ``RL_ISAC_TEST_DGNN_I4`` points the tests elsewhere)."""


@pytest.fixture(scope="session")
def dgnn_i4() -> Path:
    """:data:`DGNN_I4`, or a failure naming it: the checkpoint is part of the repository, so a missing one is a
    broken checkout (a skip would hide every test that needs it)."""
    if not (DGNN_I4 / "model.pt").is_file():
        pytest.fail(f"reference checkpoint {DGNN_I4}/model.pt is missing: it is committed under results/checkpoints "
                    f"(or set RL_ISAC_TEST_DGNN_I4)")
    return DGNN_I4
