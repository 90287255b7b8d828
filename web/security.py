"""Who may talk to the server, and the headers every answer carries.

* Loopback by default. Listening anywhere else needs an access token
  (:func:`check_bind`), because the server hands out every indexed photo.
* With a token, every request must carry it: ``Authorization: Bearer TOKEN`` (scripts)
  or the session cookie a browser gets by opening ``/?token=TOKEN`` once or by typing
  the token into the ``/login`` form. The cookie holds an HMAC of the token, not the
  token, and changing the token signs everyone out.
* Without a token (loopback only), the ``Host`` header must name the loopback too, so a
  web page on another site cannot reach the server through DNS rebinding.
* Every response gets ``Content-Security-Policy`` (scripts only from ``/static``),
  ``X-Content-Type-Options: nosniff`` and a few more; a route may set its own CSP.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "photoseek_session"
COOKIE_MAX_AGE = 400 * 24 * 3600  # the most browsers keep
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
# Paths open without a token: the login form and what it needs to look right (static files hold no data).
PUBLIC_PREFIXES = ("/static/", "/login", "/favicon.ico")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Served files (originals, thumbnails) are never a document that can run anything.
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
# Swagger UI sets inline styles; its script still comes from this server only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)

log = logging.getLogger("photoseek.web")


# -- binding ---------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a (long enough) token. Raises RuntimeError."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise RuntimeError(
            f"the access token is too short ({len(token)} characters; use at least {MIN_TOKEN_CHARS}). "
            "Make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    if not is_loopback(host) and not token:
        raise RuntimeError(
            f"refusing to listen on {host!r} without an access token: anyone who can reach it could see every "
            "indexed photo. Set one with --token TOKEN or PHOTOSEEK_TOKEN (make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'), or listen on 127.0.0.1 (the default)."
        )


# -- tokens ----------------------------------------------------------------------------------


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so it stops working when the token changes."""
    return hmac.new(token.encode(), b"photoseek-session-v1", hashlib.sha256).hexdigest()


def token_matches(candidate: str | None, token: str) -> bool:
    return candidate is not None and hmac.compare_digest(candidate.encode(), token.encode())


def session_cookie(token: str, *, secure: bool, root_path: str = "") -> str:
    return (f"{COOKIE_NAME}={session_value(token)}; Path={root_path or '/'}; Max-Age={COOKIE_MAX_AGE}; "
            f"HttpOnly; SameSite=Lax{'; Secure' if secure else ''}")


def clear_cookie(root_path: str = "") -> str:
    return f"{COOKIE_NAME}=; Path={root_path or '/'}; Max-Age=0; HttpOnly; SameSite=Lax"


def safe_next(url: str | None, root_path: str = "") -> str:
    """A same-site path to go to after login; anything else becomes the home page."""
    home = f"{root_path}/"
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url or any(ord(c) < 32 for c in url):
        return home
    return url


_TOKEN_IN_LOG = re.compile(r"(?i)([?&]token=)[^&\s\"]*")


class RedactTokenFilter(logging.Filter):
    """Keep ``?token=...`` out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_LOG.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


# -- middleware ------------------------------------------------------------------------------


class SecurityMiddleware:
    """Pure ASGI (no body buffering): host check, token check, security headers."""

    def __init__(self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] | None = None):
        self.app = app
        self.token = token or None
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self._session = session_value(self.token) if self.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        root = scope.get("root_path", "")
        path = scope["path"][len(root):] if scope["path"].startswith(root) else scope["path"]

        if self.token is None and self.allowed_hosts is not None:
            host = _hostname(headers.get("host", ""))
            if host not in self.allowed_hosts and not is_loopback(host):
                await _plain(send, 400, "invalid Host header: without an access token this server only answers to "
                                        "localhost / 127.0.0.1 (start it with --token to serve it under another name, "
                                        "e.g. behind a reverse proxy)")
                return

        if self.token is not None and not path.startswith(PUBLIC_PREFIXES):
            verdict = self._check(scope, headers, path, root)
            if verdict is not None:
                await verdict(send)
                return

        await self.app(scope, receive, _with_headers(send))

    def _check(self, scope: Scope, headers: Headers, path: str, root: str):
        """None if the request may pass; else a coroutine function that answers it."""
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if given is not None:
            if token_matches(given, self.token) and scope["method"] in ("GET", "HEAD"):
                # Swap the token in the URL for a cookie, and drop it from the address bar.
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                location = quote(root + path, safe="/%") + (f"?{rest}" if rest else "")
                secure = scope.get("scheme") == "https"
                cookie = session_cookie(self.token, secure=secure, root_path=root)
                return lambda send: _redirect(send, location, cookie)
            if not token_matches(given, self.token):
                return lambda send: self._deny(send, headers, path, root, "wrong access token", query)
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and token_matches(auth[7:].strip(), self.token):
            return None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is just no cookie
            pass
        morsel = cookie.get(COOKIE_NAME)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), self._session.encode()):
            return None
        return lambda send: self._deny(send, headers, path, root, None, query)

    async def _deny(self, send: Send, headers: Headers, path: str, root: str, reason: str | None,
                    query: list[tuple[str, str]]) -> None:
        wants_page = not path.startswith("/api/") and "text/html" in headers.get("accept", "")
        if wants_page:
            rest = [(k, v) for k, v in query if k != "token"]
            here = root + path + (f"?{urlencode(rest)}" if rest else "")
            target = f"{root}/login?" + urlencode({"next": here} | ({"error": "1"} if reason else {}))
            await _redirect(send, target, None)
            return
        message = (f"{reason}. " if reason else "this server needs an access token: ") + (
            "send the header 'Authorization: Bearer TOKEN', or open /?token=TOKEN once in your browser")
        await _json(send, 401, "Unauthorized", message, extra=[(b"www-authenticate", b'Bearer realm="photoseek"')])


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = list(message.get("headers", []))
            names = {k.lower() for k, _ in raw}
            if b"content-security-policy" not in names:
                raw.append((b"content-security-policy", CSP.encode()))
            raw.extend((k, v) for k, v in SECURITY_HEADERS if k not in names)
            message = {**message, "headers": raw}
        await send(message)

    return wrapped


async def _send(send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *extra]
    await _with_headers(send)({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, error: str, message: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    import json

    body = json.dumps({"status": status, "error": error, "message": message}).encode()
    await _send(send, status, body, b"application/json", list(extra))


async def _plain(send: Send, status: int, text: str) -> None:
    await _json(send, status, "Bad Request", text)


async def _redirect(send: Send, location: str, cookie: str | None) -> None:
    extra = [(b"location", location.encode("latin-1", "replace"))]
    if cookie:
        extra.append((b"set-cookie", cookie.encode()))
    await _send(send, 303, b"", b"text/plain", extra)
