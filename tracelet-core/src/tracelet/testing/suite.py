"""The base test class: subclass it, give it a ``backend_under_test`` fixture, done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tracelet.testing import checks
from tracelet.testing.harness import Harness, open_kit


class BackendConformance:
    """The conformance tests of a Tracelet backend.

    A subclass (named ``Test...``) provides the fixture ``backend_under_test``, returning a
    :class:`~tracelet.testing.BackendUnderTest`; it may come from a ``conftest.py``
    instead. Each test makes real runs with ``tracelet.start_logging`` and reads them back
    through the adapter. To leave a test out, override it with a method that calls
    ``pytest.skip``.
    """

    @pytest.fixture
    def conformance_kit(self, backend_under_test: object, tmp_path: Path) -> Iterator[Harness]:
        """The harness of one test: runs journaled under ``tmp_path``."""
        with open_kit(backend_under_test, tmp_path) as kit:
            yield kit

    def test_metrics_round_trip(self, conformance_kit: Harness) -> None:
        """10,000 points arrive exactly once each: name, value, step and timestamp."""
        checks.metrics_round_trip(conformance_kit)

    def test_nan_and_infinity(self, conformance_kit: Harness) -> None:
        """NaN reads back as NaN, and +/-inf as the declared infinity."""
        checks.nan_and_infinity(conformance_kit)

    def test_name_mapping(self, conformance_kit: Harness) -> None:
        """Names the tool refuses arrive under ``map_name(name)``, each point once."""
        checks.name_mapping(conformance_kit)

    def test_params_round_trip(self, conformance_kit: Harness) -> None:
        """Nested, long and unicode parameters, as the tool declares it keeps them."""
        checks.params_round_trip(conformance_kit)

    def test_tags_round_trip(self, conformance_kit: Harness) -> None:
        """Bare, key/value and unicode tags, each with its latest value."""
        checks.tags_round_trip(conformance_kit)

    def test_texts_round_trip(self, conformance_kit: Harness) -> None:
        """Texts arrive exactly once, under their name and step."""
        checks.texts_round_trip(conformance_kit)

    def test_images_round_trip(self, conformance_kit: Harness) -> None:
        """Images arrive exactly once, byte for byte the local store's PNG files."""
        checks.images_round_trip(conformance_kit)

    def test_artifacts_round_trip(self, conformance_kit: Harness) -> None:
        """Artifact files arrive byte for byte under their artifact paths."""
        checks.artifacts_round_trip(conformance_kit)

    def test_histograms_round_trip(self, conformance_kit: Harness) -> None:
        """Histograms arrive exactly once, counts and edges exact (skipped when the
        adapter has no ``histograms`` reader)."""
        checks.histograms_round_trip(conformance_kit)

    def test_status_on_success(self, conformance_kit: Harness) -> None:
        """``running`` while the run goes, ``finished`` after a clean exit."""
        checks.status_on_success(conformance_kit)

    def test_status_on_failure(self, conformance_kit: Harness) -> None:
        """An exception inside ``with`` ends the run ``failed``."""
        checks.status_on_failure(conformance_kit)

    def test_status_on_kill(self, conformance_kit: Harness) -> None:
        """``KeyboardInterrupt`` inside ``with`` ends the run ``killed``."""
        checks.status_on_kill(conformance_kit)

    def test_resume_continues_the_same_run(self, conformance_kit: Harness) -> None:
        """A resumed run stays one run in the tool, with both sessions' records."""
        checks.resume_continues_the_same_run(conformance_kit)

    def test_replay_creates_no_duplicates(self, conformance_kit: Harness) -> None:
        """Batches delivered again (same instance, then a new one) are not duplicated."""
        checks.replay_creates_no_duplicates(conformance_kit)

    def test_published_later(self, conformance_kit: Harness) -> None:
        """A local-only run published later (``sync --to``) arrives whole, once."""
        checks.published_later(conformance_kit)
