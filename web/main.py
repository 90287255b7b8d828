"""``photoseek serve``: check where we may listen, load the index and its model, then serve.

Thin on purpose (like Immich's ML service): everything the server does lives in
:mod:`photoseek.web.app`; this only decides whether and how to start it.
"""

from __future__ import annotations

import logging
import sys

from photoseek.settings import Settings

from .security import RedactTokenFilter, check_bind, is_loopback

log = logging.getLogger("photoseek.web")


def run(settings: Settings) -> None:
    """Serve until interrupted. Raises RuntimeError (with a message for people) if it must not start."""
    check_bind(settings.host, settings.token)

    import uvicorn

    from photoseek.encoders import EncoderUnavailable
    from photoseek.search import IndexNotFound, Searcher

    from .app import create_app

    index_dir = settings.resolved_index_dir
    searcher = None
    try:
        searcher = Searcher(index_dir, settings)
    except IndexNotFound:
        _say(f"no index at {index_dir} yet: the page will say how to make one (photoseek index FOLDER)")
    try:
        if searcher is not None and searcher.model_id:
            _say(f"loading {searcher.model_id} for {len(searcher)} photos ...")
            searcher.encoder  # noqa: B018 - before accepting requests, so the first search is as fast as the rest
        app = create_app(settings, searcher)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                                server_header=False, proxy_headers=False, forwarded_allow_ips="")
        logging.getLogger("uvicorn.access").addFilter(RedactTokenFilter())
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        url = f"http://{host}:{settings.port}/"
        if settings.token:
            _say(f"photoseek is at {url} (needs the access token: open {url}?token=... once in a browser)")
        else:
            _say(f"photoseek is at {url}")
        if not is_loopback(settings.host):
            _say("listening beyond this machine: anyone with the token can see every indexed photo; "
                 "put it behind HTTPS (a reverse proxy) if it crosses an untrusted network")
        uvicorn.Server(config).run()
    except EncoderUnavailable as exc:
        raise RuntimeError(f"cannot load the model that built the index: {exc}") from None
    finally:
        if searcher is not None:
            searcher.close()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
