"""Metric points on their way from the buffer to the journal: step records, and the chunks
a batch's points travel and wait in.

A step logged together (``log_metrics``) is queued as one *step record*,
``[values by name, step, timestamp]`` (a list; see ``Orchestrator.put_step``). The
dispatcher sends it to the journal writer as it is: the writer, in its own process, makes
the step's points, and the training process builds a point tuple for it only if a backend
other than the journal reads the batch's points.
"""

from __future__ import annotations

import marshal
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, chain, groupby, repeat
from operator import itemgetter
from typing import Any, overload

from tracelet.records import MetricPoint

STEP_RECORD = list
"""The class of a step record; nothing else in a chunk is a list. A step record holds two
points or more, so a chunk holding one holds more points than items."""
Chunk = tuple[Any, ...]
"""Point tuples and step records, in the order they were logged."""
HeldChunk = Chunk | bytes
"""A chunk as a batch holds it: itself, or :func:`packed`."""
_PLAIN_STR = frozenset((str,))


def step_points(values: Mapping[str, float], step: int, timestamp: float) -> list[MetricPoint]:
    """The points of one step's ``values`` (names checked, plain floats)."""
    return [(name, value, step, timestamp) for name, value in plain_names(values).items()]


def plain_names(values: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """``values`` with every ``str`` name a plain ``str``, as the checks at the call make
    them (a ``str`` enum member equal to a checked name, whose format is ``Kind.A``): the
    journal's pipe takes only plain types. Names of other types stay as they are."""
    if _PLAIN_STR.issuperset(map(type, values)):
        return values
    return {plain_name(name): value for name, value in values.items()}


def plain_name(name: Any) -> Any:
    """``name`` as a plain ``str`` if it is a ``str`` (see :func:`plain_names`)."""
    return str.__str__(name) if isinstance(name, str) else name


def with_plain_names(chunk: Chunk) -> Chunk:
    """``chunk`` with every metric name a plain ``str`` (see :func:`plain_names`)."""
    return tuple(
        [plain_names(item[0]), *item[1:]]
        if item.__class__ is STEP_RECORD
        else (plain_name(item[0]), *item[1:])
        for item in chunk
    )


def packed(chunk: Chunk) -> HeldChunk:
    """``chunk`` marshalled, its names made plain if they must be (see :func:`plain_names`);
    the chunk with plain names, unpacked, if marshal refuses it even then.

    A batch holds the points it sent a writer process packed: that encoding is what the pipe
    carries anyway, it takes a fifth of the memory (about 30 bytes a point tuple, 15 a point
    of a step of 20), and it holds no objects: freeing a batch of 50,000 point tuples would
    hold the GIL for about 3 ms, on a delivery thread, while the training thread waits."""
    try:
        return marshal.dumps(chunk, marshal.version)
    except ValueError:  # a name of a str subclass: rare, so the common chunk is never checked
        plain = with_plain_names(chunk)
        try:
            return marshal.dumps(plain, marshal.version)
        except ValueError:
            return plain


def unpacked(chunk: HeldChunk) -> Chunk:
    """The chunk :func:`packed` made (or ``chunk`` itself, not packed)."""
    return marshal.loads(chunk) if chunk.__class__ is bytes else chunk


def chunk_size(chunk: Chunk) -> int:
    """The points ``chunk`` holds."""
    return len(chunk) + sum(len(item[0]) - 1 for item in chunk if item.__class__ is STEP_RECORD)


def expanded(chunk: Chunk) -> Iterator[MetricPoint]:
    """The points of ``chunk``, a step record's made as they are read."""
    for item in chunk:
        if item.__class__ is STEP_RECORD:
            yield from step_points(*item)
        else:
            yield item


def point_fields(chunk: Chunk) -> Iterator[Any]:
    """The name, value, step and timestamp of each point of ``chunk``, one after another (what
    a multi-row INSERT binds), made without a tuple for each point of a step record. A name
    may be a ``str`` subclass: SQLite binds its text, which is the plain name's."""
    kinds = set(map(type, chunk))
    if STEP_RECORD not in kinds:
        return chain.from_iterable(chunk)
    if len(kinds) == 1:
        return _record_fields(chunk)
    # (chain reads each run to its end before groupby moves on, which ends the run)
    return chain.from_iterable(_run_fields(kind, run) for kind, run in groupby(chunk, type))


def _run_fields(kind: type, run: Iterable[Any]) -> Iterator[Any]:
    """The fields of a run of point tuples, or of step records (``kind``)."""
    return _record_fields(tuple(run)) if kind is STEP_RECORD else chain.from_iterable(run)


def _record_fields(records: Sequence[Any]) -> Iterator[Any]:
    """The fields of the points of step records ``records``, in a row, made in C: no Python
    runs per record (a third less time than a function call a record)."""
    values = list(map(itemgetter(0), records))
    steps = map(repeat, map(itemgetter(1), records))  # (zip ends with the step's names)
    stamps = map(repeat, map(itemgetter(2), records))
    points = map(zip, values, map(dict.values, values), steps, stamps)
    return chain.from_iterable(chain.from_iterable(points))


class ChunkedPoints(Sequence[MetricPoint]):
    """A batch's metric points, held as the chunks they were taken in and read as one
    sequence.

    Not one tuple of every point: a new container of tens of thousands of points costs the
    garbage collector's next young collection a pause of about a millisecond, in whichever
    thread allocates next (the training thread, mostly). A chunk costs it a few
    microseconds, once. A chunk may hold step records: their points are made only as they
    are read (:func:`expanded`). A chunk may be held :func:`packed`, and is unpacked as it
    is read. Iterating is the cheap way to read them: indexing makes the points of the chunk
    indexed (the last one is kept), a slice those of every chunk."""

    __slots__ = ("_chunks", "_ends", "_last", "_sizes")

    def __init__(
        self, chunks: Iterable[HeldChunk] = (), sizes: Iterable[int] | None = None
    ) -> None:
        """``sizes``: the points of each chunk, when the caller knows them (else counted)."""
        chunks = tuple(chunks)
        if sizes is None:
            sizes = map(chunk_size, map(unpacked, chunks))
        sized = zip(chunks, sizes, strict=True)
        kept = [(chunk, size) for chunk, size in sized if size]
        self._chunks = tuple(chunk for chunk, _ in kept)
        self._sizes = tuple(size for _, size in kept)
        self._ends = tuple(accumulate(self._sizes))
        self._last: tuple[int, tuple[MetricPoint, ...]] = (-1, ())
        """The chunk indexed last, as points (kept while the batch is)."""

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        """The chunks, in order (none empty), unpacked, step records unexpanded."""
        return tuple(map(unpacked, self._chunks))

    def fields(self) -> Iterator[Any]:
        """Every point's name, value, step and timestamp, one after another (see
        :func:`point_fields`): the cheap way to write them all."""
        return chain.from_iterable(map(point_fields, map(unpacked, self._chunks)))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator[MetricPoint]:
        return chain.from_iterable(map(_points, self._chunks, self._sizes))

    def __reversed__(self) -> Iterator[MetricPoint]:
        for chunk, size in zip(reversed(self._chunks), reversed(self._sizes), strict=True):
            yield from reversed(_point_tuple(chunk, size))

    def __bool__(self) -> bool:
        return bool(self._chunks)

    @overload
    def __getitem__(self, index: int) -> MetricPoint: ...
    @overload
    def __getitem__(self, index: slice) -> list[MetricPoint]: ...
    def __getitem__(self, index: int | slice) -> MetricPoint | list[MetricPoint]:
        if isinstance(index, slice):
            return list(self)[index]
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError(f"point {index} of {size}")
        which = bisect_right(self._ends, position)
        cached, points = self._last
        if cached != which:
            points = _point_tuple(self._chunks[which], self._sizes[which])
            self._last = (which, points)
        return points[position - (self._ends[which - 1] if which else 0)]

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """The position of the first point equal to ``value`` (from ``start``, before
        ``stop``); ValueError if there is none."""
        size = len(self)
        start, stop = slice(start, stop).indices(size)[:2]
        for position, point in enumerate(self):
            if position >= stop:
                break
            if position >= start and (point is value or point == value):
                return position
        raise ValueError(f"{value!r} is not among the points")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return f"ChunkedPoints({len(self):,} points in {len(self._chunks)} chunks)"


def _points(held: HeldChunk, size: int) -> Iterable[MetricPoint]:
    """The points of ``held`` (of ``size`` points): the chunk, unless it holds step records."""
    chunk = unpacked(held)
    return chunk if len(chunk) == size else expanded(chunk)


def _point_tuple(held: HeldChunk, size: int) -> tuple[MetricPoint, ...]:
    """The points of ``held`` (of ``size`` points), made at once."""
    chunk = unpacked(held)
    return chunk if len(chunk) == size else tuple(expanded(chunk))


def chunks_of(points: Sequence[MetricPoint]) -> tuple[Chunk, ...]:
    """``points`` as chunks: a :class:`ChunkedPoints`'s own, else one chunk of them all."""
    if isinstance(points, ChunkedPoints):
        return points.chunks
    return (tuple(points),) if points else ()
