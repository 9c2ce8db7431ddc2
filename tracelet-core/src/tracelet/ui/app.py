"""The dashboard's web application (Starlette): the page, its files, and the JSON API.

Every route is a GET (HEAD too); none changes the store. The endpoints are plain
functions, which Starlette runs in its thread pool, each thread with its own read-only
connection. The API is described in docs/ui.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import mimetypes
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from tracelet.exceptions import AmbiguousRunError, NotFoundError
from tracelet.ui import assets
from tracelet.ui.dashboard import DEFAULT_POINTS, Dashboard
from tracelet.ui.series import StepRange

DEFAULT_LIMIT = 500


class Json(Response):
    """A JSON body; NaN and infinities become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200) -> None:
        super().__init__(content, status_code, headers={"Cache-Control": "no-store"})

    def render(self, content: Any) -> bytes:
        """``content`` as compact JSON."""
        return json.dumps(plain(content), allow_nan=False, separators=(",", ":")).encode()


def plain(value: Any) -> Any:
    """``value`` with every non-finite float spelled as a string (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


class Endpoints:
    """The routes' handlers, over one :class:`Dashboard`."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def routes(self) -> list[Route]:
        """Every route of the application."""
        return [
            Route("/", self.index),
            Route("/static/{name}", self.static),
            Route("/api/store", self.store),
            Route("/api/runs", self.runs),
            Route("/api/compare", self.compare),
            Route("/api/runs/{run}", self.run),
            Route("/api/runs/{run}/metrics", self.metrics),
            Route("/api/runs/{run}/metrics/{name:path}", self.series),
            Route("/api/runs/{run}/anomalies", self.anomalies),
            Route("/api/runs/{run}/checkpoints", self.checkpoints),
            Route("/api/runs/{run}/texts", self.texts),
            Route("/api/runs/{run}/{kind}", self.files),
            Route("/api/runs/{run}/{kind}/{index:int}", self.file),
        ]

    # -- the page ----------------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        """The page."""
        return _asset(request, assets.page_file("index.html"))

    def static(self, request: Request) -> Response:
        """The page's script and style, and plotly.js from the plotly package."""
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return _asset(request, assets.plotly_js())
        try:
            return _asset(request, assets.page_file(name))
        except FileNotFoundError:
            return Json({"error": f"no file {name!r}"}, 404)

    # -- the API -----------------------------------------------------------------------------

    def store(self, request: Request) -> Response:
        """``GET /api/store``: the store's folder, schema version and number of runs."""
        return Json(self.dashboard.store_info())

    def runs(self, request: Request) -> Response:
        """``GET /api/runs?project=&status=&tag=&param=``: runs, and every project."""
        query = request.query_params
        found = self.dashboard.runs(
            query.get("project"), query.get("status"), query.get("tag"), query.get("param")
        )
        return Json(found)

    def compare(self, request: Request) -> Response:
        """``GET /api/compare?runs=A,B[,...]&metric=M...``: runs side by side."""
        refs = [ref for ref in request.query_params.get("runs", "").split(",") if ref]
        return Json(self.dashboard.compare(refs, request.query_params.getlist("metric")))

    def run(self, request: Request) -> Response:
        """``GET /api/runs/{run}``: one run in full."""
        return Json(self.dashboard.run(request.path_params["run"]))

    def metrics(self, request: Request) -> Response:
        """``GET /api/runs/{run}/metrics``: each metric's summary."""
        return Json(self.dashboard.metrics(request.path_params["run"]))

    def series(self, request: Request) -> Response:
        """``GET /api/runs/{run}/metrics/{name}?start=&end=&after=&points=``."""
        steps = StepRange.of(_int(request, "start"), _int(request, "end"), _int(request, "after"))
        points = _positive(request, "points") or DEFAULT_POINTS
        params = request.path_params
        return Json(self.dashboard.series(params["run"], params["name"], steps, points))

    def anomalies(self, request: Request) -> Response:
        """``GET /api/runs/{run}/anomalies?metric=&after=``."""
        metric = request.query_params.get("metric")
        found = self.dashboard.anomalies(request.path_params["run"], metric, _int(request, "after"))
        return Json(found)

    def checkpoints(self, request: Request) -> Response:
        """``GET /api/runs/{run}/checkpoints?limit=``: the last ones, in step order."""
        limit = _positive(request, "limit") or DEFAULT_LIMIT
        return Json(self.dashboard.checkpoints(request.path_params["run"], limit))

    def texts(self, request: Request) -> Response:
        """``GET /api/runs/{run}/texts?limit=``: the last ones, in logged order."""
        limit = _positive(request, "limit") or DEFAULT_LIMIT
        return Json(self.dashboard.texts(request.path_params["run"], limit))

    def files(self, request: Request) -> Response:
        """``GET /api/runs/{run}/images`` and ``.../artifacts``: the list, with URLs."""
        params = request.path_params
        return Json(self.dashboard.files(params["run"], params["kind"]))

    def file(self, request: Request) -> Response:
        """``GET /api/runs/{run}/images/{i}`` and ``.../artifacts/{i}``: the stored file."""
        params = request.path_params
        path = self.dashboard.file(params["run"], params["kind"], params["index"])
        media_type = mimetypes.guess_type(path.name)[0]
        if params["kind"] == "images" and media_type in IMAGE_TYPES:
            return FileResponse(path, media_type=media_type)
        return FileResponse(path, filename=path.name)  # a download, never rendered here


IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Images served inline; any other file (an SVG could carry script) is a download."""


def _int(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):  # (OverflowError: inf)
        raise ValueError(f"{name} must be a finite number, got {text!r}") from None


def _positive(request: Request, name: str) -> int | None:
    value = _int(request, name)
    if value is not None and value < 1:
        raise ValueError(f"{name} must be 1 or more, got {value}")
    return value


def _asset(request: Request, path: Path) -> Response:
    asset = assets.load(path)
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)


def _error(status: int) -> Callable[[Request, Exception], Any]:
    def respond(request: Request, error: Exception) -> Response:
        return Json({"error": str(error)}, status)

    return respond


def create_app(
    store_path: str | os.PathLike[str], allowed_hosts: Sequence[str] | None = None
) -> Starlette:
    """The dashboard over the store folder ``store_path``, read-only. ``allowed_hosts``
    (the ``Host`` headers accepted, e.g. ``["127.0.0.1", "localhost"]``) guards a
    loopback server against DNS rebinding; None accepts any."""
    assets.plotly_js()  # without plotly, say so now
    dashboard = Dashboard(store_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.close()

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(
        routes=Endpoints(dashboard).routes(),
        middleware=middleware,
        exception_handlers={
            NotFoundError: _error(404),
            AmbiguousRunError: _error(409),
            ValueError: _error(400),
        },
        lifespan=lifespan,
    )
