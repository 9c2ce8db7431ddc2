"""The ClearML backend passes the conformance kit against real offline sessions, read back
from their files."""

from __future__ import annotations

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest

pytest.importorskip("clearml")
from tracelet_clearml.names import LARGEST, name_of, title_series
from tracelet_clearml.testing import ClearmlReadBack


def clearml_name(name: str) -> str:
    """How a name reads back: through ClearML's title and series."""
    return name_of(*title_series(name))


def clearml_under_test(offline_dir) -> BackendUnderTest:
    """ClearML offline as the kit sees it: what it stores differently is declared here."""
    return BackendUnderTest(
        "clearml",
        {"offline": True},
        ClearmlReadBack(offline_dir),
        timestamps=False,
        infinity=LARGEST,
        nan=LARGEST,
        map_name=clearml_name,
    )


class TestClearmlOffline(BackendConformance):
    """Against ClearML offline sessions: every record read back from the session files."""

    @pytest.fixture
    def backend_under_test(self, clearml_offline):
        return clearml_under_test(clearml_offline)
