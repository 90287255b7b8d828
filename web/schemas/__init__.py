"""Response models of the HTTP API (what ``/docs`` shows and what clients can rely on), one module
per kind of answer: :mod:`.search`, :mod:`.status`, :mod:`.facets`, :mod:`.tags`, :mod:`.duplicates`,
:mod:`.tuning`, and what they share in :mod:`.common`.

Kept apart from the routes, as Immich keeps its DTOs apart: the engine's dataclasses
(:class:`photoseek.search.Photo`, :class:`~photoseek.search.Hit`, ...) are turned into
these at the edge, with the URLs a client needs to show a result. Every name is importable from
here; a module is imported when one of its names is first asked for, so a terminal search builds
the few models it prints, not the API's fifty.
"""

from importlib import import_module

_WHERE = {name: module for module, names in {
    "common": "ErrorResponse PhotoDetailOut PhotoOut PhotoTagOut Timestamp camera_label photo_detail_out photo_out "
              "photo_version",
    "search": "DATE_PATTERN FiltersOut HitOut LanguageHintOut Reason SearchResponse TermOut hits_out language_hint_out "
              "page_out search_body_model search_response",
    "status": "LastRunOut SkippedOut StatusResponse status_out",
    "facets": "FacetValue FacetsResponse MONTHS facets_out",
    "tags": "TagCountOut TagsResponse tags_out",
    "duplicates": "DuplicateGroupOut DuplicateMemberOut DuplicatePairOut DuplicatesResponse duplicates_out",
    "tuning": "AdapterOut FeedbackIn FeedbackResponse MarkOut MarkValue MarksResponse TuneIn TuneOutcomeOut TuneResponse",
}.items() for name in names.split()}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

