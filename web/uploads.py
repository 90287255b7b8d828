"""Reading an uploaded query image: in memory only, capped, and checked by its content.

Starlette's form parser spools files over 1 MB to a temporary file; a query image
has no business on disk, so the multipart body is parsed here straight into memory,
counting bytes as they arrive and stopping at ``max_upload_bytes`` (413). A raw body
(``Content-Type: image/...`` or ``application/octet-stream``) is accepted too, for
``curl --data-binary @photo.jpg``. What the bytes are is decided by Pillow, never by
the file name or the declared content type (415 for anything else).
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from photoseek.errors import PhotoseekError
from photoseek.imaging import DecodeError, sniff_format

MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the file
MAX_PARTS = 16
MAX_FIELD_BYTES = 4096


class UploadError(PhotoseekError):
    def __init__(self, status: int, message: str):
        super().__init__(message, status=status, kind="upload")


@dataclass
class Upload:
    data: bytes
    filename: str | None
    format: str


def too_large(max_bytes: int) -> UploadError:
    return UploadError(413, f"the upload is too large: the limit is {_human(max_bytes)}")


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """The one image in a multipart form (field ``file``, or the first file) or a raw body."""
    content_type = request.headers.get("content-type", "")
    kind, params = parse_options_header(content_type)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise too_large(max_bytes)
    if kind == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadError(400, "malformed multipart body: no boundary")
        data, filename = await _read_multipart(request, boundary, max_bytes)
    elif kind.startswith(b"image/") or kind == b"application/octet-stream":
        data, filename = await read_body(request, max_bytes), None
    else:
        raise UploadError(415, "send the image as multipart/form-data (field 'file') or as a raw image body")
    if not data:
        raise UploadError(400, "the upload is empty: choose a photo to search by")
    return Upload(data=data, filename=filename, format=sniff(data))


def sniff(data: bytes) -> str:
    """The image format, judged by Pillow from the bytes. Raises UploadError (415: not an image)."""
    try:
        return sniff_format(data)
    except DecodeError as exc:
        if exc.kind == "too_large":
            raise UploadError(400, "that image is too large to process") from None
        raise UploadError(415, "that file is not an image we can read (try JPEG, PNG, WebP, GIF, HEIC or TIFF)") from None


async def read_body(request: Request, max_bytes: int, *, what: str = "upload") -> bytes:
    """The request body, refused (413) as soon as it grows past ``max_bytes``: never read whole first."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_large(max_bytes) if what == "upload" else UploadError(413, f"the {what} is too large")
    except ClientDisconnect:
        raise UploadError(400, f"the {what} was interrupted") from None
    return bytes(body)


async def _read_multipart(request: Request, boundary: bytes, max_bytes: int) -> tuple[bytes, str | None]:
    parts: list[dict] = []
    current: dict = {}
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        if len(parts) >= MAX_PARTS:
            raise UploadError(400, f"too many parts in the form (at most {MAX_PARTS})")
        current = {"headers": {}, "data": bytearray(), "name": None, "filename": None}
        parts.append(current)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])
        if len(header_value) > MAX_FIELD_BYTES:
            raise UploadError(400, "malformed multipart body: header too long")

    def on_header_end() -> None:
        current["headers"][bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(current["headers"].get(b"content-disposition", b""))
        current["name"] = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            current["filename"] = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        buf = current["data"]
        buf.extend(data[start:end])
        if current["filename"] is None and current["name"] != "file" and len(buf) > MAX_FIELD_BYTES:
            raise UploadError(400, f"form field {current['name']!r} is too long")
        if len(buf) > max_bytes:
            raise too_large(max_bytes)

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    })
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + MULTIPART_OVERHEAD:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise UploadError(400, "malformed multipart body") from None
    except ClientDisconnect:
        raise UploadError(400, "the upload was interrupted") from None

    chosen = next((p for p in parts if p["name"] == "file"), None) or next(
        (p for p in parts if p["filename"] is not None), None)
    if chosen is None:
        raise UploadError(400, "no file in the form: send the image in a field named 'file'")
    return bytes(chosen["data"]), chosen["filename"]


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n} bytes"
