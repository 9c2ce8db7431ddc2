"""The local store passes the backend conformance kit (``tracelet.testing``).

The ``local`` backend writes to a second store (``path``), so every check is a real
delivery, read back from that store rather than from the journal.
"""

from __future__ import annotations

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest, LocalReadBack


class TestLocalStoreConformance(BackendConformance):
    @pytest.fixture
    def backend_under_test(self, tmp_path):
        target = tmp_path / "delivered"
        return BackendUnderTest("local", {"path": str(target)}, LocalReadBack(target))
