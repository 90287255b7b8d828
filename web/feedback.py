"""Feedback marks and tuning over HTTP (issue 13): ``POST /api/feedback``, ``GET /api/feedback``,
``POST /api/tune``. Thin routes over :mod:`photoseek.feedback` and :mod:`photoseek.tune`.

Invariants:

* The server's searches keep their read-only connection (issue 9); a mark opens a writable one for
  its write only. On an index that cannot be written, marks and tunes are refused with 409
  (``read_only``), and ``GET /api/feedback`` says ``writable: false`` so the page hides the buttons.
* Writes (a mark, a tune) are refused when they come from another origin (403 ``cross_origin``): a
  page on another site must not be able to mark or tune through a browser that can reach this
  server. With a token, they also need it, as every request does (:mod:`.security`).
* One tune at a time per server: it runs in a worker thread; a second request while one runs is a
  409 (``tune_running``). The request waits for the outcome (a tune on a few thousand pairs takes
  seconds). The searches pick the new adapter up by themselves (``CurrentAdapter`` re-reads
  ``adapter.npz`` when it changes).
"""

from __future__ import annotations

import threading
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request

from photoseek import feedback
from photoseek.errors import PhotoseekError
from photoseek.settings import Settings

from .schemas import (
    AdapterOut, ErrorResponse, FeedbackIn, FeedbackResponse, MarkOut, MarksResponse, TuneIn, TuneOutcomeOut,
)
from .service import Service, run


class CrossOrigin(PhotoseekError):
    kind = "cross_origin"
    status = 403


class TuneRunning(PhotoseekError):
    kind = "tune_running"
    status = 409


def same_origin(request: Request) -> None:
    """Refuse a write sent by a page of another origin. Browsers say where a request comes from:
    ``Sec-Fetch-Site`` (only ``same-origin``, or ``none`` for one the person typed, pass), else ``Origin``,
    which must name this server as the request reached it (``Host``, or ``X-Forwarded-Host`` behind a
    reverse proxy). Scripts that send neither header pass: they are not a browser a page can misuse."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        if site.lower() in ("same-origin", "none"):
            return
    elif origin is None:
        return
    else:
        hosts = {request.headers.get(h, "").lower() for h in ("host", "x-forwarded-host")} - {""}
        if origin != "null" and urlsplit(origin).netloc.lower() in hosts:
            return
    raise CrossOrigin(f"refused: this request comes from another site ({(origin or site or '')[:100]}); marks and "
                      "tunes are accepted from this server's own page only")


def _mark_out(mark: feedback.Mark) -> MarkOut:
    return MarkOut.model_validate(mark.as_dict())


def feedback_router(settings: Settings, service: Service) -> APIRouter:
    """The routes, over ``service`` (its index folder and catalogue)."""
    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "Bad request: a parameter is named in the message"),
        (403, "Sent from another site's page"),
        (404, "No photo with this id"),
        (409, "The index is read-only here (read_only); for a tune also: one is running (tune_running), too few "
              "captioned or marked photos (too_few_pairs), or the adapter did not earn its place (not_applied)"),
        (503, "No index yet"))}
    api = APIRouter(prefix="/api", responses={400: errors[400], 503: errors[503]})
    root, url = service.files.root, settings.database_url
    tuning = threading.Lock()

    def total_marks() -> int:
        searcher = service.searcher
        if searcher is None:
            return 0
        with searcher.catalogue.engine.connect() as conn:
            return searcher.catalogue.feedback_count(conn)

    @api.post("/feedback", response_model=FeedbackResponse, tags=["feedback"], summary="Mark a result right or wrong",
              dependencies=[Depends(same_origin)], responses={403: errors[403], 404: errors[404], 409: errors[409]})
    async def mark(body: FeedbackIn) -> FeedbackResponse:
        """Mark a result of a text query: `right` (the next tune learns the query as a caption of the photo),
        `wrong` (a hard negative: the query must not find it), or `none` (clear the mark)."""
        service.need(await service.current())
        query = feedback.normalise_query(body.query)
        wanted = feedback.check_mark(body.mark)

        def write():
            with feedback.writer(root, url) as catalogue:
                stored = feedback.set_mark(catalogue, query, body.image_id, wanted)
                with catalogue.engine.connect() as conn:
                    return stored, catalogue.feedback_count(conn)

        stored, total = await run(write)
        return FeedbackResponse(mark=None if stored is None else _mark_out(stored), total=total)

    @api.get("/feedback", response_model=MarksResponse, tags=["feedback"], summary="Feedback marks")
    async def marks(query: Annotated[str | None, Query(max_length=feedback.MAX_QUERY_CHARS, description=(
            "Only the marks of this query (compared stripped, runs of spaces made one); empty: every mark."))] = None) -> MarksResponse:
        """The marks the next tune learns from, by query, newest first."""
        searcher = service.need(await service.current())
        wanted = feedback.normalise_query(query) if query is not None and query.strip() else None
        listed = await run(feedback.marks, searcher.catalogue, wanted)
        return MarksResponse(marks=[_mark_out(m) for m in listed], total=await run(total_marks),
                             writable=await run(feedback.writable, root, url, searcher.catalogue))

    @api.post("/tune", response_model=TuneOutcomeOut, tags=["feedback"], summary="Tune to your captions and marks",
              dependencies=[Depends(same_origin)], responses={403: errors[403], 409: errors[409]})
    async def tune(body: TuneIn | None = None) -> TuneOutcomeOut:
        """Train an adapter on the index's captions and feedback marks, as `photoseek tune` does (the same
        checks), and apply it to text queries if held-out recall improves and generic recall holds. One tune at
        a time; the answer comes when it is done."""
        from photoseek import tune as tuner

        body = body or TuneIn()
        service.need(await service.current())
        if not tuning.acquire(blocking=False):
            raise TuneRunning("a tune is already running on this server; wait for it to finish (GET /api/tune shows "
                              "the adapter it applies)")
        try:
            await run(lambda: feedback.check_writable(root, url, what="it cannot be tuned here"))
            outcome = await run(lambda: tuner.tune(root, settings, folders=body.folders, force=body.force,
                                                   feedback=body.feedback))
        finally:
            tuning.release()
        summary = tuner.load_adapter(root).summary
        message = (f"tuned: adapter v{outcome.version} from {summary['pairs']} pairs "
                   f"({summary.get('marks_right', 0)} right and {summary.get('marks_wrong', 0)} wrong marks); held-out "
                   f"recall@{summary['k']} {summary['recall_before']:.2f} → {summary['recall_after']:.2f}")
        return TuneOutcomeOut(applied=outcome.applied, message=message, adapter=AdapterOut.model_validate(summary))

    return api
