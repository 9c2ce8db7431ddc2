"""``log_metric``'s two implementations agree: the compiled hot path (``_hotpath.c``, which
the development set-up builds) and the pure-Python one, used where tracelet-core was
installed without a C compiler.

Every call of a table goes through both, on experiments whose queue is a list: they queue
the same records (their times aside) and raise the same exceptions with the same messages.
Then what only C can get wrong: references leaked or lost (a slot reassigned by Python code
that runs in the middle of a call), a cycle the collector cannot break, a clock that is not
``time.time``, a compiled module older than its source. Without the compiled module (a
build without a C compiler) the tests of the C code are skipped, except the one that says
the development set-up must have it.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import gc
import os
import pickle
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tracelet
from tracelet.core.experiment import Experiment
from tracelet.values import MAX_STEP

try:
    from tracelet.core import _hotpath
except ImportError:
    _hotpath = None  # type: ignore[assignment]

compiled_only = pytest.mark.skipif(_hotpath is None, reason="tracelet-core built without C")


class PurePython(Experiment):
    """An experiment whose ``log_metric`` is the pure-Python one."""

    log_metric = Experiment._log_metric_checked


class Color(enum.StrEnum):
    RED = "red"


class Full(Exception):
    """Raised where log_metric would wait for room."""


def queued_experiment(cls: type[Experiment], capacity: int = 1_000) -> tuple[Experiment, list]:
    """An experiment of ``cls``, not started, whose points go to a list it returns."""
    exp = cls("paths", options={"track_git": False, "track_env": False})
    queue: list[tuple[Any, ...]] = []
    exp._buffer, exp._capacity, exp._append_metric = queue, capacity, queue.append
    exp._iteration = 5
    return exp, queue


def full(exp: Experiment) -> None:
    raise Full(f"full at {len(exp._buffer)}")


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("loss", 0.5, 0), {}),  # a new name: checked, then known
    (("loss", 0.25, 1), {}),
    (("loss", 0.25), {"iteration": 2}),
    (("loss", 0.25), {"step": 3}),
    (("loss", 0.25), {}),  # the current iteration (5)
    (("loss", 0.25, None), {"step": 4}),
    (("loss", 0.25, 6, None), {}),
    (("loss", 0.25), {"iteration": None}),
    (("loss", 0.25), {"iteration": None, "step": None}),
    (("loss", 0.25, None), {"step": None}),
    (("loss", 0.25, 7), {"step": 8}),  # the step twice
    (("loss", 0.25, 7, 8), {}),
    (("loss", 0.25), {"iteration": 1, "step": 2}),
    (("loss", 0.25, 7), {"iteration": 8}),  # iteration given twice
    (("loss", 0.25), {"epoch": 1}),
    (("loss",), {}),
    (("loss", 0.25, 1, 2, 3), {}),
    ((), {"name": "loss", "value": 0.25, "step": 9}),
    (("loss", 1), {}),  # an int value, a bool, NumPy's
    (("loss", True, 1), {}),
    (("loss", np.float32(0.5), 1), {}),
    (("loss", np.float64(0.5), 1), {}),
    (("loss", "0.5", 1), {}),
    (("loss", None, 1), {}),
    (("loss", float("nan"), 1), {}),
    (("loss", float("inf"), 1), {}),
    (("loss", 0.5, np.int64(11)), {}),  # steps: NumPy's, a bool, out of range
    (("loss", 0.5, True), {}),
    (("loss", 0.5, 1.0), {}),
    (("loss", 0.5, -1), {}),
    (("loss", 0.5, 2**30 - 1), {}),
    (("loss", 0.5, 2**30), {}),
    (("loss", 0.5, MAX_STEP), {}),
    (("loss", 0.5, MAX_STEP + 1), {}),
    (("loss", 0.5, -(2**70)), {}),
    (("loss", 0.5), {"step": -3}),
    ((3, 0.5, 1), {}),  # names: not a str, empty, a str enum, a new one
    (("", 0.5, 1), {}),
    (("bad\udc80name", 0.5, 1), {}),
    ((Color.RED, 0.5, 1), {}),
    (("red", 0.5, 2), {}),
    (("accuracy", 0.75, 1), {}),
    (("accuracy", 0.5, 2), {}),
]


def outcome(exp: Experiment, queue: list, args: tuple, kwargs: dict) -> tuple[Any, ...]:
    """What one call did: the records it queued (without their time), or what it raised."""
    before = len(queue)
    try:
        exp.log_metric(*args, **kwargs)
    except Exception as error:
        return ("raised", type(error), str(error), len(queue) - before)
    added = queue[before:]
    assert all(type(p[3]) is float for p in added)
    return ("queued", [(p[:3], [type(part) for part in p[:3]]) for p in added])


def test_the_development_set_up_builds_the_compiled_hot_path():
    assert _hotpath is not None, "tracelet-core was built without its C hot path"
    assert Experiment.log_metric is _hotpath.HotPath.log_metric
    assert Experiment._log_metric_checked.__qualname__ == "Experiment.log_metric"
    assert "iteration=None, step=None" in _hotpath.HotPath.log_metric.__text_signature__


@compiled_only
def test_the_compiled_module_is_built_from_the_current_source():
    built = Path(_hotpath.__file__)
    source = built.with_name("_hotpath.c")
    if source.exists():  # an editable install: built in the source tree
        assert built.stat().st_mtime >= source.stat().st_mtime, (
            f"{built} is older than {source.name}: rebuild it with pip install -e ./tracelet-core"
        )


def test_both_paths_queue_the_same_records_and_raise_the_same_errors():
    compiled, compiled_queue = queued_experiment(Experiment)
    pure, pure_queue = queued_experiment(PurePython)
    for args, kwargs in CALLS:
        expected = outcome(pure, pure_queue, args, kwargs)
        assert outcome(compiled, compiled_queue, args, kwargs) == expected, (args, kwargs)
    assert compiled._checked_names == pure._checked_names == {"loss", "red", "accuracy"}
    assert len(compiled_queue) == len(pure_queue) > 20


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("_iteration", 2**70),  # a current iteration out of range, not an int
        ("_iteration", -1),
        ("_iteration", 3.0),
        ("_iteration", None),
        ("_checked_names", {"loss": True}),  # checked names in a dict, a frozenset
        ("_checked_names", frozenset({"loss"})),
    ],
)
def test_both_paths_treat_odd_state_alike(attribute, value):
    compiled, compiled_queue = queued_experiment(Experiment)
    pure, pure_queue = queued_experiment(PurePython)
    for exp in (compiled, pure):
        exp.log_metric("loss", 0.5, 0)
        setattr(exp, attribute, value)
    for args, kwargs in [(("loss", 0.5), {}), (("loss", 0.5, 3), {}), (("other", 1.0), {})]:
        expected = outcome(pure, pure_queue, args, kwargs)
        assert outcome(compiled, compiled_queue, args, kwargs) == expected, (args, kwargs)


class Counted(Experiment):
    """Counts the calls the compiled path hands to the pure-Python one."""

    handed: int = 0

    def _log_metric_checked(self, *args: Any, **kwargs: Any) -> None:
        self.handed += 1
        Experiment._log_metric_checked(self, *args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "handed"),
    [
        (("loss", 0.5, 1), {}, 0),
        (("loss", 0.5), {}, 0),
        (("loss", 0.5), {"step": 2}, 0),
        (("loss", 0.5), {"iteration": 2}, 0),
        (("loss", 0.5, None, 3), {}, 0),
        (("loss", 0.5, MAX_STEP), {}, 0),
        (("new", 0.5, 1), {}, 1),
        (("loss", 1, 1), {}, 1),
        (("loss", np.float64(0.5), 1), {}, 1),
        ((Color.RED, 0.5, 1), {}, 1),
        (("loss", 0.5, np.int64(1)), {}, 1),
        (("loss", 0.5, MAX_STEP + 1), {}, 1),
        (("loss", 0.5, -1), {}, 1),
        (("loss", 0.5), {"epoch": 1}, 1),
        ((), {"name": "loss", "value": 0.5}, 1),
    ],
)
@compiled_only
def test_the_compiled_path_hands_on_only_the_calls_it_does_not_take(args, kwargs, handed):
    exp, _ = queued_experiment(Counted)
    exp.log_metric("loss", 0.5, 0)
    exp.handed = 0
    with contextlib.suppress(TypeError, ValueError):
        exp.log_metric(*args, **kwargs)
    assert exp.handed == handed


@pytest.mark.parametrize("cls", [Experiment, PurePython], ids=["compiled", "python"])
def test_a_full_buffer_waits_for_room_before_the_point_is_queued(cls, monkeypatch):
    exp, queue = queued_experiment(cls, capacity=3)
    exp.log_metric("loss", 0.5, 0)  # checked: later calls take the fast path
    exp.log_metric("loss", 0.5, 1)
    exp.log_metric("loss", 0.5, 2)
    waits: list[int] = []
    monkeypatch.setattr(exp, "_full", lambda: waits.append(len(queue)) or queue.clear())
    exp.log_metric("loss", 0.5, 3)
    assert waits == [3]
    assert [p[:3] for p in queue] == [("loss", 0.5, 3)]
    monkeypatch.setattr(exp, "_full", lambda: full(exp))
    exp._capacity = 1
    with pytest.raises(Full, match="full at 1"):
        exp.log_metric("loss", 0.5, 4)
    assert len(queue) == 1


@pytest.mark.parametrize("cls", [Experiment, PurePython], ids=["compiled", "python"])
def test_what_the_append_raises_reaches_the_caller(cls):
    exp, _ = queued_experiment(cls)
    exp.log_metric("loss", 0.5, 0)
    exp._append_metric = exp._not_running
    with pytest.raises(RuntimeError, match="has not been started; call start"):
        exp.log_metric("loss", 0.5, 1)


@compiled_only
def test_the_compiled_path_stamps_each_point_with_time_time():
    exp, queue = queued_experiment(Experiment)
    exp.log_metric("loss", 0.5, 0)
    for step in range(1, 1_000):
        before = time.time()
        exp.log_metric("loss", 0.5, step)
        after = time.time()
        assert before <= queue[-1][3] <= after


@compiled_only
@pytest.mark.parametrize(
    "call",
    [
        lambda exp, name, value, step: exp.log_metric(name, value, step),
        lambda exp, name, value, step: exp.log_metric(name, value, step=step),
        lambda exp, name, value, step: exp.log_metric(name, value),  # the current iteration
        lambda exp, name, value, step: exp.log_metric(name, value, None, step),
    ],
    ids=["positional", "keyword", "current iteration", "step after None"],
)
def test_the_compiled_path_keeps_every_reference_it_takes_and_no_more(call):
    exp, queue = queued_experiment(Experiment)
    name = "".join(["loss", "-refs"])  # made at run time: no one else holds it
    value, step = float(name.count("s")) / 7, int(name.count("s")) + 2**40
    exp._iteration = step
    call(exp, name, value, step)
    queue.clear()

    def counts() -> list[int]:
        return [sys.getrefcount(o) for o in (name, value, step, exp._append_metric, exp)]

    before, blocks = counts(), sys.getallocatedblocks()
    for _ in range(10_000):
        call(exp, name, value, step)
    assert counts() == [c + 10_000 for c in before[:3]] + before[3:]  # one in each point
    queue.clear()
    assert counts() == before
    assert sys.getallocatedblocks() - blocks < 100  # no stamp, tuple or bound method kept


@compiled_only
def test_the_compiled_path_queues_points_the_collector_never_walks():
    """A point of the compiled path holds an exact str, float, int and float, so it can be
    in no cycle: it is queued untracked. Tracked, each point was walked by the young
    collection after it (25 us a collection instead of 1.6 at 200,000 points a second)."""
    exp, queue = queued_experiment(Experiment)
    exp.log_metric("loss", 0.0, 2)  # a new name: checked, and queued, in Python
    exp.log_metric("loss", 1.0, 3)
    exp.log_metric("loss", 2.0, step=4)
    exp.log_metric("loss", 3.0)
    assert [point[:3] for point in queue[1:]] == [
        ("loss", 1.0, 3),
        ("loss", 2.0, 4),
        ("loss", 3.0, 5),
    ]
    assert not any(map(gc.is_tracked, queue[1:]))


@compiled_only
def test_the_handed_on_calls_keep_no_reference_either():
    exp, queue = queued_experiment(Experiment)
    value = float(len(queue)) + 0.5
    before = [sys.getrefcount(o) for o in (exp, value)]
    for step in range(1_000):
        exp.log_metric("loss", value, np.int64(step))  # a NumPy step: handed on each time
    queue.clear()
    assert [sys.getrefcount(o) for o in (exp, value)] == before


CHANGED_MIDWAY = """
import gc, sys
from tracelet.core.experiment import Experiment

BIG = int("1" + "0" * 12)  # steps made at run time (a constant would be held by the code)
exp = Experiment("midway", options={"track_git": False, "track_env": False})
queue = []
exp._buffer, exp._capacity, exp._append_metric = queue, 10**9, queue.append
exp._iteration = BIG + 5
exp.log_metric("loss", 0.5, 0)


class Reassigns:
    def __init__(self):
        self.cycle = self

    def __del__(self):
        exp._iteration = BIG + 7  # frees the int the call may be using
        reuse.append([BIG + 100 + i for i in range(50)])  # and writes over its memory


reuse = []
gc.set_threshold(1)  # a collection at nearly every allocation: in the middle of a call
for _ in range(2_000):
    Reassigns()
    exp.log_metric("loss", 0.5)
gc.set_threshold(700)
steps = {point[2] for point in queue[1:]}
assert steps <= {BIG + 5, BIG + 7}, sorted(steps)[:5]


class Length(list):
    def __len__(self):
        exp._iteration = BIG + 9  # Python code between reading the slot and the append
        reuse.append([BIG + 200 + i for i in range(50)])
        return list.__len__(self)


exp._buffer = Length()
exp._append_metric = exp._buffer.append
exp._iteration = BIG + 8
exp.log_metric("loss", 0.5)
assert exp._buffer[-1][2] == BIG + 8, exp._buffer[-1]
print("ok")
"""


@pytest.mark.parametrize("cls", ["Experiment", "PurePython"])
def test_a_slot_reassigned_in_the_middle_of_a_call_is_safe(cls):
    """A finalizer the garbage collector runs, or a buffer's ``__len__``, may reassign the
    current iteration while ``log_metric`` is using it (in a process of its own: a crash
    there is a failure here, not the end of the test run)."""
    script = CHANGED_MIDWAY
    if cls == "PurePython":
        script = script.replace(
            'exp = Experiment("midway"',
            'Experiment.log_metric = Experiment._log_metric_checked\nexp = Experiment("midway"',
        )
    env = {**os.environ, "PYTHONMALLOC": "debug"}  # freed memory is written over at once
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "ok"


def test_an_append_that_replaces_itself_is_kept_alive_while_it_runs():
    exp, queue = queued_experiment(Experiment)
    exp.log_metric("loss", 0.5, 0)

    def append_once(point: tuple[Any, ...]) -> None:
        exp._append_metric = queue.append  # drops the last reference to this closure
        queue.append(point)

    exp._append_metric = append_once
    del append_once
    exp.log_metric("loss", 0.25, 1)
    exp.log_metric("loss", 0.125, 2)
    assert [p[:3] for p in queue[1:]] == [("loss", 0.25, 1), ("loss", 0.125, 2)]


class Holder:
    """Holds what is given, hashably: a way into a cycle through any slot."""

    def __init__(self, held: Any) -> None:
        self.held = held


@pytest.mark.parametrize(
    ("attribute", "through"),
    [
        ("_append_metric", lambda exp: exp._not_running),  # a bound method holds exp
        ("_buffer", lambda exp: [exp]),
        ("_checked_names", lambda exp: {Holder(exp)}),
        ("_iteration", Holder),
    ],
)
def test_an_experiment_in_a_reference_cycle_through_any_slot_is_collected(attribute, through):
    exp, _ = queued_experiment(Experiment)
    setattr(exp, attribute, through(exp))
    gone = weakref.ref(exp)
    del exp
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("_capacity", sys.maxsize), ("_iteration", 2**62), ("_checked_names", {"a"})],
)
def test_the_attributes_log_metric_reads_are_plain_attributes(attribute, value):
    exp, _ = queued_experiment(Experiment)
    setattr(exp, attribute, value)
    assert getattr(exp, attribute) == value


@pytest.mark.parametrize("cls", [Experiment, PurePython], ids=["compiled", "python"])
def test_a_deleted_append_raises_attribute_error(cls):
    exp, queue = queued_experiment(cls)
    exp.log_metric("loss", 0.5, 0)
    del exp._append_metric
    with pytest.raises(AttributeError, match="_append_metric"):
        exp.log_metric("loss", 0.5, 1)
    assert len(queue) == 1


def test_a_buffer_larger_than_a_c_size_is_taken_as_unbounded(tmp_path):
    config = {"store_path": str(tmp_path / "store"), "buffer_size": 2**70, "track_git": False}
    with tracelet.start_logging("huge", config=config) as exp:
        assert exp._capacity == sys.maxsize
        exp.log_metric("loss", 0.5, 0)
    assert [p[:3] for p in exp.store.metrics(exp.id)] == [("loss", 0.5, 0)]


@pytest.mark.parametrize("copy_of", [copy.copy, copy.deepcopy, pickle.dumps])
def test_an_experiment_is_neither_copied_nor_pickled(copy_of):
    exp, _ = queued_experiment(Experiment)
    with pytest.raises(TypeError, match="cannot be copied or pickled: it is a live run"):
        copy_of(exp)


def test_without_the_compiled_module_log_metric_is_the_pure_python_one(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['tracelet.core._hotpath'] = None\n"
        "import tracelet\n"
        "from tracelet.core.experiment import Experiment, HotPath\n"
        "assert HotPath is object\n"
        "assert Experiment.log_metric is Experiment._log_metric_checked\n"
        "config = {'store_path': sys.argv[1], 'track_git': False}\n"
        "with tracelet.start_logging('pure', config=config) as exp:\n"
        "    for step in range(1000):\n"
        "        exp.log_metric('loss', step / 1000, step)\n"
        "from tracelet.storage import LocalStore\n"
        "print(len(LocalStore(sys.argv[1]).metrics(exp.id)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1000"
