"""One base for the errors photoseek shows to people.

Each error carries a message for people (what went wrong and what to do), a ``kind`` for
code to branch on (never the message text), the HTTP status the API answers with and the
exit code the command line leaves with. The CLI and the web app each catch
:class:`PhotoseekError` in one place. Pure Python: the decode workers import it.
"""

from __future__ import annotations


class PhotoseekError(Exception):
    kind: str = "error"
    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, *, kind: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        if status is not None:
            self.status = status


class BadInput(PhotoseekError):
    """The caller asked for something that cannot be answered as asked (empty query, no such file)."""

    kind = "bad_input"
    status = 400
    exit_code = 2


class NotFound(PhotoseekError):
    """An id or a file that does not exist."""

    kind = "not_found"
    status = 404


class Unavailable(PhotoseekError):
    """Nothing to answer from yet (no index, an empty index, an encoder that cannot be had)."""

    kind = "unavailable"
    status = 503


class NotWritable(PhotoseekError):
    """The index cannot be written (read-only mount, another user's files, a full disk)."""

    kind = "not_writable"
    status = 503


class EncoderUnavailable(Unavailable, RuntimeError):
    """The encoder's weights or code cannot be had; the message tells the user what to do. (Here,
    not beside the encoders, so that catching it imports no model code.)"""

    kind = "encoder_unavailable"


class IndexNotFound(Unavailable, RuntimeError):
    """No index where one was asked for (or an empty catalogue): the message says how to make one."""

    kind = "no_index"


class DecodeError(PhotoseekError):
    """A file that cannot be indexed; ``reason`` says why, for the user. ``kind``: ``not_image``
    (415 in the API), ``too_large``, ``unreadable`` or ``corrupt`` (400)."""

    status = 400
    kind = "corrupt"

    def __init__(self, reason: str, kind: str = "corrupt"):
        super().__init__(reason, kind=kind, status=415 if kind == "not_image" else 400)
        self.reason = reason
