"""The conformance kit itself: it passes what conforms and fails, precisely, what does not.

The local store stands in for a tool. An adapter that reads it back the way MLflow stores
data (millisecond timestamps, capped infinity, cut string parameters, mapped names) passes
once those capabilities are declared, and fails when one is left out; deliberately broken
adapters and backends fail the check that covers their flaw.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
from contextlib import contextmanager

import attrs
import pytest

import tracelet
from tracelet.core.registry import default_registry
from tracelet.records import RunStatus
from tracelet.storage.backend import PATH, LocalBackend
from tracelet.testing import CHECKS, BackendUnderTest, LocalReadBack, open_kit

pytest_plugins = ["pytester"]

MAX = 1.7976931348623157e308
MARKER = "...[cut]"


def legal(name):
    """A name as a strict tool would store it."""
    return re.sub(r"\.\.+", lambda m: "_" * len(m.group()), re.sub(r"[^\w\-. :/]", "_", name))


def cut(text):
    """A parameter value as a strict tool would store it."""
    return text if len(text) <= 6000 else text[: 6000 - len(MARKER)] + MARKER


class ToolLike(LocalReadBack):
    """Reads the local store back as MLflow stores runs."""

    def metrics(self, run_id):
        return [
            (legal(n), math.copysign(MAX, v) if math.isinf(v) else v, s, int(t * 1000) / 1000)
            for n, v, s, t in super().metrics(run_id)
        ]

    def params(self, run_id):
        return {legal(k): cut(str(v)) for k, v in super().params(run_id).items()}

    def tags(self, run_id):
        return {legal(k): v for k, v in super().tags(run_id).items()}


class DropsOnePoint(LocalReadBack):
    def metrics(self, run_id):
        return super().metrics(run_id)[:-1]


class NoTexts(LocalReadBack):
    def texts(self, run_id):
        raise NotImplementedError("this tool keeps no texts")


class NoStatus:
    """An adapter that forgot two readers."""

    metrics = params = tags = texts = images = artifacts = LocalReadBack.metrics


class ForgetsBatches(LocalBackend):
    """Writes a replayed batch again (under a fresh seq): not idempotent."""

    fresh = itertools.count(1_000_000)

    def log_batch(self, batch):
        super().log_batch(attrs.evolve(batch, seq=next(self.fresh)))


class AlwaysFinished(LocalBackend):
    """Records every run as finished, whatever its status."""

    def finish_run(self, status):
        super().finish_run(RunStatus.FINISHED)


class _Flawed:
    @tracelet.hookimpl
    def tracelet_register_backends(self):
        return [
            tracelet.BackendRegistration("forgetful", ForgetsBatches, options=[PATH]),
            tracelet.BackendRegistration("always-finished", AlwaysFinished, options=[PATH]),
        ]


@contextmanager
def flawed_backends():
    registry = default_registry()
    registry.register(_Flawed(), name="test-flawed")
    try:
        yield
    finally:
        registry.manager.unregister(name="test-flawed")


def run_check(name, backend, tmp_path):
    with open_kit(backend, tmp_path) as kit:
        CHECKS[name](kit)


def tool_like(tmp_path, **changes):
    target = tmp_path / "tool"
    declared = {
        "timestamp_resolution": 1e-3,
        "infinity": MAX,
        "params_as_strings": True,
        "max_param_length": 6000,
        "truncation_marker": MARKER,
        "map_name": legal,
    }
    return BackendUnderTest("local", {"path": str(target)}, ToolLike(target), **declared | changes)


def local(tmp_path, name="local", read_back=LocalReadBack, **declared):
    target = tmp_path / "tool"
    return BackendUnderTest(name, {"path": str(target)}, read_back(target), **declared)


@pytest.mark.parametrize(
    "check", ["metrics_round_trip", "nan_and_infinity", "name_mapping", "params_round_trip"]
)
def test_a_tool_that_transforms_data_passes_once_it_declares_how(tmp_path, check):
    run_check(check, tool_like(tmp_path), tmp_path)


@pytest.mark.parametrize(
    ("undeclared", "check", "message"),
    [
        (
            {"timestamp_resolution": 0.0},
            "metrics_round_trip",
            "timestamp of 'accuracy' step 0 value",
        ),
        (
            {"infinity": math.inf},
            "nan_and_infinity",
            "value of 'only_inf' step 0: stored 1.7976931348623157e+308, logged inf",
        ),
        ({"params_as_strings": False}, "params_round_trip", "'epochs': stored '10' (str)"),
        ({"truncation_marker": ""}, "params_round_trip", "'prompt': stored"),
        ({"map_name": str}, "name_mapping", "missing: 'loss@train' step 0 value 0.0"),
    ],
)
def test_each_undeclared_transformation_fails_its_check(tmp_path, undeclared, check, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        run_check(check, tool_like(tmp_path, **undeclared), tmp_path)


def test_a_lost_point_fails_the_metrics_check(tmp_path):
    with pytest.raises(
        AssertionError, match=r": 1 problem\(s\)\n  missing: 'loss' step 9 value \S+$"
    ):
        run_check("metrics_round_trip", local(tmp_path, read_back=DropsOnePoint), tmp_path)


def test_a_backend_that_is_not_idempotent_fails_the_replay_check(tmp_path):
    with (
        flawed_backends(),
        pytest.raises(
            AssertionError,
            match=r"600 problem\(s\)\n  duplicated: 'accuracy' step 0 .* \(stored 4x, logged 1x\)",
        ),
    ):
        run_check("replay_creates_no_duplicates", local(tmp_path, "forgetful"), tmp_path)


@pytest.mark.parametrize(
    ("check", "status"), [("status_on_failure", "failed"), ("status_on_kill", "killed")]
)
def test_a_wrong_final_status_fails_the_status_checks(tmp_path, check, status):
    message = f"status of run .* is 'finished'; expected '{status}'"
    with flawed_backends(), pytest.raises(AssertionError, match=message):
        run_check(check, local(tmp_path, "always-finished"), tmp_path)


def test_a_kind_the_tool_does_not_store_skips_its_check(tmp_path):
    with pytest.raises(pytest.skip.Exception, match="does not read back texts"):
        run_check("texts_round_trip", local(tmp_path, read_back=NoTexts), tmp_path)


def test_a_backend_that_is_not_registered_fails_with_the_names_that_are(tmp_path):
    with pytest.raises(Exception, match="unknown backend 'nowhere'"):
        run_check("params_round_trip", local(tmp_path, "nowhere"), tmp_path)


def test_declarations_are_checked(tmp_path):
    with pytest.raises(TypeError, match=r"missing: \['status', 'run_count'\]"):
        BackendUnderTest("local", {}, NoStatus())
    with pytest.raises(ValueError, match="max_param_length"):
        BackendUnderTest(
            "x", {}, LocalReadBack(tmp_path), truncation_marker="...", max_param_length=3
        )
    with pytest.raises(TypeError, match=r"must return a tracelet\.testing\.BackendUnderTest"):
        run_check("params_round_trip", {"name": "local"}, tmp_path)


def test_declared_expectations():
    backend = BackendUnderTest(
        "x",
        {},
        LocalReadBack("."),
        infinity=MAX,
        params_as_strings=True,
        max_param_length=10,
        truncation_marker="~",
    )
    assert backend.stored_value(-math.inf) == -MAX
    assert math.isnan(backend.stored_value(math.nan))
    assert [backend.stored_param(v) for v in (None, True, 0.5, "x" * 11)] == [
        "None",
        "True",
        "0.5",
        "x" * 9 + "~",
    ]


BASE_CLASS_SUITE = """
import pytest
from tracelet.testing import BackendConformance, BackendUnderTest, LocalReadBack

class DropsOnePoint(LocalReadBack):
    def metrics(self, run_id):
        return super().metrics(run_id)[:-1]

class TestBroken(BackendConformance):
    @pytest.fixture
    def backend_under_test(self, tmp_path):
        target = tmp_path / "t"
        return BackendUnderTest("local", {"path": str(target)}, DropsOnePoint(target))
"""

PLUGIN_SUITE = """
import pytest
from tracelet.testing import BackendUnderTest, LocalReadBack

pytest_plugins = ["tracelet.testing.plugin"]

@pytest.fixture
def backend_under_test(tmp_path):
    return BackendUnderTest("local", {"path": str(tmp_path / "t")}, LocalReadBack(tmp_path / "t"))

def test_conformance(conformance_check):
    conformance_check()
"""


def test_both_routes_collect_every_check_and_report_failures(pytester):
    pytester.makepyfile(test_base=BASE_CLASS_SUITE, test_plugin=PLUGIN_SUITE)
    collected = pytester.runpytest_inprocess("--collect-only", "-q")
    names = {line.split("::")[-1] for line in collected.outlines if "::" in line}
    assert {f"test_{name}" for name in CHECKS} | {f"test_conformance[{n}]" for n in CHECKS} == names
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-k", "metrics_round_trip or tags_round_trip"
    )
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E  * missing: 'loss' step 9 value *",
            "FAILED test_base.py::TestBroken::test_metrics_round_trip*",
        ]
    )


def test_import_tracelet_does_not_import_the_kit():
    code = "import sys, tracelet; tracelet.Experiment; print('tracelet.testing' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
