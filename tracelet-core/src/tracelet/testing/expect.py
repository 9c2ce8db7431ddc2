"""Expectations: what the tool must hold for what a check logged, compared point by point.

Each function first checks that the journal (the local store) holds what was logged, so a
comparison can never pass on empty data, then compares the tool's copy with the journal's,
through the capabilities the backend declares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tracelet.testing.compare import (
    compare_multisets,
    compare_points,
    compare_subset,
    require,
    value_key,
)
from tracelet.testing.harness import Harness, digest
from tracelet.values import flatten_params

JOURNAL = "the journal (a Tracelet bug, not the backend's)"


def expect_metrics(kit: Harness, run_id: str, logged: Sequence[tuple[str, float, int]]) -> None:
    """Every logged point is in the tool exactly once: name, value, step and timestamp."""
    journaled = kit.journal.metrics(run_id)
    require(
        compare_multisets(
            [(n, value_key(v), s) for n, v, s in logged],
            [(n, value_key(v), s) for n, v, s, _ in journaled],
        ),
        f"metric points of run {run_id} in {JOURNAL}",
    )
    backend = kit.backend
    expected = [(backend.map_name(n), backend.stored_value(v), s, t) for n, v, s, t in journaled]
    found = kit.read("metrics", run_id)
    require(
        compare_points(expected, found, backend.timestamp_tolerance()),
        f"metric points of run {run_id} in backend {backend.name!r}",
    )


def expect_params(kit: Harness, run_id: str, logged: Mapping[str, Any]) -> None:
    """The local store keeps every parameter whole; the tool holds each as declared."""
    flat = flatten_params(logged)
    require(
        compare_subset(flat, kit.journal.params(run_id)), f"parameters of run {run_id} in {JOURNAL}"
    )
    backend = kit.backend
    expected = {backend.map_name(k): backend.stored_param(v) for k, v in flat.items()}
    require(
        compare_subset(expected, kit.read("params", run_id)),
        f"parameters of run {run_id} in backend {backend.name!r}",
    )


def expect_tags(kit: Harness, run_id: str, logged: Mapping[str, str]) -> None:
    """Every tag is in the tool with its latest value (the tool may add tags of its own)."""
    require(compare_subset(logged, kit.journal.tags(run_id)), f"tags of run {run_id} in {JOURNAL}")
    expected = {kit.backend.map_name(k): v for k, v in logged.items()}
    require(
        compare_subset(expected, kit.read("tags", run_id)),
        f"tags of run {run_id} in backend {kit.backend.name!r}",
    )


def expect_texts(
    kit: Harness, run_id: str, logged: Sequence[tuple[str, int, str]], *, optional: bool = False
) -> None:
    """Every text is in the tool exactly once, under its name and step."""
    journaled = [(t.name, t.step, t.text) for t in kit.journal.texts(run_id)]
    require(compare_multisets(logged, journaled), f"texts of run {run_id} in {JOURNAL}")
    found = kit.read("texts", run_id, optional=optional)
    if found is None:
        return
    expected = [(kit.backend.map_name(n), s, t) for n, s, t in journaled]
    require(
        compare_multisets(expected, [(n, int(s), t) for n, s, t in found]),
        f"texts of run {run_id} in backend {kit.backend.name!r}",
    )


def expect_images(
    kit: Harness, run_id: str, logged: Sequence[tuple[str, int, bytes]], *, optional: bool = False
) -> None:
    """Every image is in the tool exactly once, byte for byte the PNG the local store holds."""
    journaled = [(i.name, i.step, Path(i.path).read_bytes()) for i in kit.journal.images(run_id)]
    require(
        compare_multisets(_digested(logged), _digested(journaled)),
        f"images of run {run_id} in {JOURNAL}",
    )
    found = kit.read("images", run_id, optional=optional)
    if found is None:
        return
    expected = [(kit.backend.map_name(n), s, data) for n, s, data in journaled]
    require(
        compare_multisets(_digested(expected), _digested(found)),
        f"images of run {run_id} in backend {kit.backend.name!r}",
    )


def expect_artifacts(
    kit: Harness, run_id: str, logged: Mapping[str, bytes], *, optional: bool = False
) -> None:
    """Every artifact file is in the tool under its artifact path, byte for byte."""
    journaled = {a.artifact_path: Path(a.path).read_bytes() for a in kit.journal.artifacts(run_id)}
    require(
        compare_subset(_digests(logged), _digests(journaled)),
        f"artifacts of run {run_id} in {JOURNAL}",
    )
    found = kit.read("artifacts", run_id, optional=optional)
    if found is None:
        return
    require(
        compare_subset(_digests(journaled), _digests(found)),
        f"artifacts of run {run_id} in backend {kit.backend.name!r}",
    )


def expect_histograms(
    kit: Harness, run_id: str, logged: Sequence[tuple[str, int]], *, optional: bool = False
) -> None:
    """Every histogram is in the tool exactly once, its counts and edges exact."""
    journaled = [(h.name, h.step, h.counts, h.edges) for h in kit.journal.histograms(run_id)]
    require(
        compare_multisets(logged, [(n, s) for n, s, _, _ in journaled]),
        f"histograms of run {run_id} in {JOURNAL}",
    )
    found = kit.read("histograms", run_id, optional=optional)
    if found is None:
        return
    backend = kit.backend
    expected = [
        (backend.map_name(n), s, tuple(c), backend.stored_edges(e)) for n, s, c, e in journaled
    ]
    stored = [(n, int(s), tuple(map(float, c)), tuple(map(float, e))) for n, s, c, e in found]
    require(
        compare_multisets(expected, stored),
        f"histograms of run {run_id} in backend {kit.backend.name!r}",
    )


def _digested(images: Sequence[tuple[str, int, bytes]]) -> list[tuple[str, int, str]]:
    return [(name, int(step), digest(bytes(data))) for name, step, data in images]


def _digests(files: Mapping[str, bytes]) -> dict[str, str]:
    return {path: digest(bytes(data)) for path, data in files.items()}
