"""The W&B backend passes the conformance kit against real offline runs, read back from
their ``.wandb`` files."""

from __future__ import annotations

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest

pytest.importorskip("wandb")
from tracelet_wandb.names import legal_key
from tracelet_wandb.rows import TIME_WINDOW
from tracelet_wandb.testing import WandbReadBack


def wandb_under_test(folder) -> BackendUnderTest:
    """W&B offline as the kit sees it: what it stores differently is declared here."""
    return BackendUnderTest(
        "wandb",
        {"mode": "offline", "dir": str(folder)},
        WandbReadBack(folder / "wandb"),
        timestamp_resolution=TIME_WINDOW,
        map_name=legal_key,
    )


class TestWandbOffline(BackendConformance):
    """Against W&B in offline mode: every record read back from the run files."""

    @pytest.fixture
    def backend_under_test(self, wandb_offline):
        return wandb_under_test(wandb_offline)
