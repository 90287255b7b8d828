"""``GET /api/facets`` and ``photoseek facets --json``: how many photos each filter choice keeps."""

from __future__ import annotations

from photoseek.web.schemas.common import _Out, camera_label
from pydantic import Field


class FacetValue(_Out):
    value: str | None = Field(description="What to pass back as the filter (camera, folder, type, or the year "
                              "or month as digits); null: photos with no such value.")
    label: str = Field(description="For people.")
    count: int = Field(description="How many photos this choice keeps, with the other filters as they are.")


class FacetsResponse(_Out):
    camera: list[FacetValue]
    year: list[FacetValue] = Field(default=[], description="Per year (when no year is chosen).")
    month: list[FacetValue] = Field(default=[], description="Per month of the chosen year (?year=).")
    folder: list[FacetValue] = Field(description="Per top-level folder inside each indexed folder.")
    type: list[FacetValue]
    orientation: list[FacetValue] = Field(default=[], description="Per shape: landscape, portrait, square.")
    tag: list[FacetValue] = Field(default=[], description="Per automatic tag, the 30 most common (filter with "
                                  "tag:NAME in q, or ?tag=NAME).")


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def facets_out(counts: dict[str, list]) -> FacetsResponse:
    def values(name: str, label) -> list[FacetValue]:
        return [FacetValue(value=None if v is None else str(v), label=label(v), count=n) for v, n in counts.get(name, [])]

    def camera(pair) -> FacetValue:
        (make, model), n = pair
        label = camera_label(make, model)
        return FacetValue(value=label, label=label or "unknown camera", count=n)

    return FacetsResponse(
        camera=[camera(p) for p in counts["camera"]],
        year=values("year", lambda v: v or "no date"),
        month=values("month", lambda v: MONTHS[int(v) - 1] if v else "no date"),
        folder=values("folder", lambda v: v),
        type=values("type", lambda v: (v or "unknown").upper()),
        orientation=values("orientation", lambda v: v.capitalize()),
        tag=values("tag", lambda v: v),
    )
