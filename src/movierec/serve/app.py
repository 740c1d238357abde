"""The recommendation service's HTTP interface (FastAPI): JSON answers and the browsing page.

Every route reads ``service.current`` once, so it answers from one loaded snapshot even while
the watcher swaps in a new one. Errors are JSON with one line under ``error``: 404 for an id
the model does not know, 422 for a bad query (what was received and what is expected).
No route takes a path from the request: nothing outside the loaded outputs can be read.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from movierec.serve.query import UnknownIdError
from movierec.serve.service import Service

MAX_N = 100  # the longest list a request may ask for
MAX_HISTORY = 10_000

ListLength = Annotated[int, Query(ge=1, le=MAX_N, description="how many movies")]
UserId = Annotated[int, Path(description="MovieLens userId")]
MovieId = Annotated[int, Path(description="MovieLens movieId")]


def _validation_message(exc: RequestValidationError) -> str:
    """One line: each wrong parameter, what it received and what it expects."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ())[1:]) or "request"
        received = err.get("input")
        parts.append(f"{where}: received {received!r} ({err.get('msg', 'invalid')})")
    return "; ".join(parts)


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="movierec", version="1",
                  description="Recommendations from the residual network the DVC pipeline "
                              "trained: a user's top n, their ratings, similar movies.")

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": str(exc)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        what = (f"no such address: {request.url.path} (the API is listed at /docs)"
                if exc.status_code == 404 else str(exc.detail))
        return JSONResponse(status_code=exc.status_code, content={"error": what})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": _validation_message(exc)})

    @app.get("/health")
    def health() -> dict:
        """Which model is serving, its dvc.lock hash, the data it was trained on, when it was
        loaded."""
        return service.current.info.as_dict()

    @app.get("/users/{user_id}/recommendations")
    def recommendations(user_id: UserId, n: ListLength = 10) -> dict:
        """The user's top n movies among those they have not rated in the train split."""
        return service.current.recommendations(user_id, n)

    @app.get("/users/{user_id}/history")
    def history(user_id: UserId,
                n: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 50,
                sort: Literal["recent", "rating"] = "recent") -> dict:
        """The user's train ratings, newest first (sort=recent) or highest first (rating)."""
        return service.current.history(user_id, n, sort)

    @app.get("/movies/{movie_id}/similar")
    def similar(movie_id: MovieId, n: ListLength = 10) -> dict:
        """The movies whose embeddings are nearest to the movie's (cosine similarity)."""
        return service.current.similar(movie_id, n)

    @app.get("/movies")
    def movies(search: Annotated[str, Query(min_length=1, max_length=200)],
               n: ListLength = 20) -> dict:
        """Movies whose title contains ``search`` (any case), most rated first."""
        return service.current.search(search, n)

    page = resources.files("movierec.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    return app
