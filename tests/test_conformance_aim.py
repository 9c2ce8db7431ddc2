"""The Aim backend passes the conformance kit against a local repository and a real
``aim server``, every record read back with Aim's own API."""

from __future__ import annotations

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest

pytest.importorskip("aim")
from tracelet_aim.names import name_of, sequence_of
from tracelet_aim.testing import AimReadBack, AimServer


def aim_name(name: str) -> str:
    """How a name reads back: through Aim's sequence name and context."""
    return name_of(*sequence_of(name))


def aim_under_test(options: dict, location: str) -> BackendUnderTest:
    """Aim as the kit sees it: histograms keep equal-width bins only."""
    return BackendUnderTest(
        "aim", options, AimReadBack(location), map_name=aim_name, equal_width_bins=True
    )


class TestAimLocal(BackendConformance):
    """Against a local repository under the test's temporary directory."""

    @pytest.fixture
    def backend_under_test(self, tmp_path):
        repo = tmp_path / "aim-repo"
        return aim_under_test({"repo_path": str(repo)}, str(repo))


@pytest.fixture(scope="module")
def aim_server(tmp_path_factory):
    """A real ``aim server`` on a free loopback port, for this module."""
    server = AimServer(tmp_path_factory.mktemp("aim-server"))
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
class TestAimServer(BackendConformance):
    """Against a real ``aim server`` started for these tests."""

    @pytest.fixture
    def backend_under_test(self, aim_server):
        under_test = aim_under_test({"remote_uri": aim_server.uri}, aim_server.uri)
        yield under_test
        under_test.read_back.close()
