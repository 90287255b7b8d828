"""What every response shares: the base of the models, timestamps, a photo, and an error."""

from __future__ import annotations

from typing import Annotated, Literal

from photoseek.search import Photo
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from photoseek.times import as_utc


class _Out(BaseModel):
    """The models here are built when first used, not when imported: a terminal search uses a few of
    them, and building them all cost it more than the search."""

    model_config = ConfigDict(defer_build=True)


# RFC 3339 wants an offset: the index keeps UTC times without one.
Timestamp = Annotated[AwareDatetime, BeforeValidator(as_utc)]


class PhotoTagOut(_Out):
    """An automatic tag of a photo (photoseek.tags)."""

    tag: str = Field(examples=["golden retriever"], description="The tag; search for it with tag:NAME "
                     "(hyphens for spaces).")
    score: float = Field(examples=[0.93], description="Cosine of the photo and the tag's text embedding; for a "
                         "tag derived from the hierarchy, its descendant's.")
    via: str | None = Field(default=None, examples=[None], description="The tag this one was derived from "
                            "(\"dog\" via \"golden retriever\"); null: scored directly.")


class PhotoOut(_Out):
    """An indexed photo. ``path`` is display text; files are only ever fetched by ``id``."""

    id: int = Field(examples=[7])
    name: str = Field(examples=["coffee.png"])
    path: str = Field(examples=["/home/me/Pictures/coffee.png"])
    width: int
    height: int
    size_bytes: int
    taken_at: Timestamp | None = Field(description="When the photo was taken (EXIF), if known. EXIF records the "
                                       "camera's clock without a time zone: that clock time is given as UTC.")
    camera_make: str | None
    camera_model: str | None
    camera: str | None = Field(description="Make and model in one readable string, if known.")
    indexed_at: Timestamp
    file_type: str | None = Field(default=None, description="What the file is: jpeg, png, heif, ...")
    date: Timestamp | None = Field(default=None, description="The date filters and sorting use: taken_at if "
                                   "known, else the file's modification time (see date_source).")
    date_source: Literal["exif", "file"] | None = None
    thumbnail_url: str = Field(description="WebP, about 320 px on the long side.")
    preview_url: str = Field(description="WebP, about 1600 px on the long side, for a detail view.")
    file_url: str = Field(description="The original file.")
    similar_url: str = Field(description="API URL of photos like this one.")
    page_url: str = Field(description="The photo's page in the web UI.")
    tags: list[PhotoTagOut] | None = Field(default=None, description="Its automatic tags, best score first "
                                           "(GET /api/images/{id} only; null in search results).")


class PhotoDetailOut(PhotoOut):
    """An indexed photo with the words it can be found by besides its looks."""

    caption: str | None = Field(default=None, description="The description written into the photo (EXIF, IPTC or "
                                "XMP), if any.")
    keywords: list[str] = Field(default=[], description="Keywords written into the photo (IPTC or XMP).")
    ocr_text: str | None = Field(default=None, description="Text read in the photo (photoseek index --ocr), if any.")


def photo_detail_out(photo: Photo, text: dict[str, str], root: str = "") -> PhotoDetailOut:
    keywords = [k.strip() for k in text.get("keywords", "").split(",") if k.strip()]
    return PhotoDetailOut(**photo_out(photo, root).model_dump(), caption=text.get("caption") or None,
                          keywords=keywords, ocr_text=text.get("ocr") or None)


class ErrorResponse(_Out):
    status: int = Field(examples=[404])
    error: str = Field(description="The HTTP reason phrase.", examples=["Not Found"])
    message: str = Field(description="What went wrong, for people.", examples=["no photo has id 12345"])


def camera_label(make: str | None, model: str | None) -> str | None:
    """'Canon' + 'Canon EOS 5D' -> 'Canon EOS 5D'; either may be missing."""
    make, model = (make or "").strip(), (model or "").strip()
    if make and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(x for x in (make, model) if x) or None


def photo_version(photo: Photo) -> str:
    """Changes whenever the file is re-indexed, so image URLs can be cached for good."""
    return f"{int(photo.indexed_at.timestamp()):x}{photo.size_bytes:x}"


def photo_out(photo: Photo, root: str = "") -> PhotoOut:
    api = f"{root}/api/images/{photo.id}"
    version = photo_version(photo)
    return PhotoOut(
        id=photo.id, name=photo.name, path=photo.path, width=photo.width, height=photo.height,
        size_bytes=photo.size_bytes, taken_at=photo.taken_at, camera_make=photo.camera_make,
        camera_model=photo.camera_model, camera=camera_label(photo.camera_make, photo.camera_model),
        indexed_at=photo.indexed_at, file_type=photo.file_type, date=photo.photo_date, date_source=photo.date_source,
        thumbnail_url=f"{api}/thumbnail?v={version}", preview_url=f"{api}/thumbnail?size=large&v={version}",
        file_url=f"{api}/file", similar_url=f"{api}/similar", page_url=f"{root}/photos/{photo.id}",
    )
