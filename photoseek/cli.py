"""The ``photoseek`` command line (Typer: typed options, help text and shell completion for free)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from photoseek.db import SchemaTooNew
from photoseek.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find your photos by what is in them: index a folder, then search it by text or by example.",
)

IndexOpt = Annotated[
    Optional[Path],
    typer.Option("--index", help="Index directory [env: PHOTOSEEK_INDEX_DIR; default: per-user data dir]."),
]


def _settings(index: Path | None) -> Settings:
    return Settings(index_dir=index) if index is not None else Settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@app.command()
def index(
    folders: Annotated[Optional[list[Path]], typer.Argument(help="Folders to index; none = re-scan the known ones.")] = None,
    index: IndexOpt = None,
    model: Annotated[Optional[str], typer.Option(
        help="Encoder for a new index: MODEL:PRETRAINED (open_clip), MODEL:/path/ckpt.pt, or 'offline'. "
             "[env: PHOTOSEEK_MODEL]")] = None,
    rebuild: Annotated[bool, typer.Option(help="Throw the index away and build it again (needed to change model).")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Glob of files or folders to leave out; repeatable.")] = None,
    hidden: Annotated[bool, typer.Option(help="Also index hidden files and folders.")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="Progress bar (default: on a terminal).")] = None,
) -> None:
    """Embed every photo in FOLDERS; later runs only embed what is new or changed."""
    import shlex

    from photoseek.interrupts import StopSignals

    # Ctrl-C and SIGTERM only ask the run to stop (a KeyboardInterrupt raised wherever the main
    # thread is could leave a lock held: issue 9); a second one ends the process at once. Set
    # up before the indexer is imported (seconds: torch), and kept until the process exits, so
    # that a late Ctrl-C cannot become a traceback at interpreter shutdown either.
    resume = _show(shlex.join(["photoseek", "index", *map(str, folders or []),
                               *(["--index", str(index)] if index is not None else []),
                               *(["--model", model] if model else []),
                               *[arg for glob in exclude or [] for arg in ("--exclude", glob)],
                               *(["--hidden"] if hidden else [])]))
    stop = StopSignals(hard_exit_message="stopped at once: the index keeps every photo saved up to its last "
                                         f"checkpoint; run '{resume}' to continue").install()
    from sqlalchemy.exc import DBAPIError

    from photoseek.encoders import EncoderUnavailable
    from photoseek.indexer import Indexer, IndexingError

    settings = _settings(index)
    indexer = Indexer(settings.resolved_index_dir, settings, show_progress=progress,
                      echo=lambda msg: typer.secho(msg, fg=typer.colors.YELLOW, err=True), stop=stop.event)
    try:
        summary = indexer.run(folders or [], model=model,
                              rebuild=rebuild, exclude=exclude or [], include_hidden=hidden)
    except (IndexingError, EncoderUnavailable, SchemaTooNew) as exc:
        raise _fail(str(exc)) from None
    except (OSError, DBAPIError) as exc:
        raise _fail(_write_failure(exc, settings.resolved_index_dir)) from None
    if stop.requested:  # one line, and the shell's code for the signal (130 for SIGINT, 143 for SIGTERM)
        typer.echo(summary.stopped_line(resume), err=True)
        raise typer.Exit(stop.exit_code)
    typer.echo(f"{summary.line()}  [{summary.model_id}]")
    typer.echo(f"index: {settings.resolved_index_dir}", err=True)


def _show(text: str) -> str:
    """A file name for the terminal: control and format characters (newlines, ANSI escape
    sequences, bidi overrides) shown escaped, so a hostile name cannot forge lines or
    drive the terminal. JSON output keeps the real name."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _write_failure(exc: BaseException, index_dir: Path) -> str:
    """What to tell people when the index cannot be written (disk full, I/O error, ...)."""
    import errno

    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        detail = exc.strerror or str(exc)
    else:  # SQLAlchemy wraps sqlite3's error; its first line is SQLite's message
        detail = str(getattr(exc, "orig", exc)).splitlines()[0]
        full = "full" in detail
    what = "out of disk space" if full else detail
    return (f"could not write the index at {index_dir}: {what} ({detail}). Nothing already saved is lost: the index "
            "still holds every photo up to its last checkpoint and still answers searches. "
            + ("Free some disk space, then " if full else "Fix that, then ")
            + "run 'photoseek index' again: it carries on from there.")


def _hit_dict(hit, rank: int) -> dict:
    photo = asdict(hit.photo)
    for key, value in photo.items():
        if isinstance(value, datetime):
            photo[key] = value.isoformat()
    return {"rank": rank, "score": round(hit.score, 6), **photo}


def _print_hits(hits, offset: int, as_json: bool, query: str | None = None) -> None:
    if as_json:
        results = [_hit_dict(h, offset + i + 1) for i, h in enumerate(hits)]
        typer.echo(json.dumps({"query": query, "results": results} if query is not None else results, ensure_ascii=False))
        return
    if not hits:
        typer.echo("no results")
    for i, hit in enumerate(hits):
        typer.echo(f"{offset + i + 1:3d}  {hit.score:.3f}  {_show(hit.photo.path)}")


@app.command()
def search(
    query: Annotated[Optional[str], typer.Argument(help="What to look for, in words.")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find photos like this image file.")] = None,
    similar: Annotated[Optional[int], typer.Option(help="Find photos like the indexed photo with this id.")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="File of text queries, one per line ('-' = stdin).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, max=1000, help="How many results.")] = 10,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many results (paging).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output for scripts.")] = False,
    index: IndexOpt = None,
) -> None:
    """Search the index by text, by an example image, or by an indexed photo."""
    from photoseek.encoders import EncoderUnavailable
    from photoseek.imaging import DecodeError, read_file
    from photoseek.search import IndexNotFound, Searcher

    modes = sum(x is not None for x in (query, image, similar, queries))
    if modes != 1:
        raise _fail("give exactly one of: QUERY, --image FILE, --similar ID, --queries FILE", 2)
    settings = _settings(index)
    try:
        searcher = Searcher(settings.resolved_index_dir, settings)
        if queries is not None:
            lines = sys.stdin if str(queries) == "-" else queries.open(encoding="utf-8")
            for q in (line.strip() for line in lines):
                if not q:
                    continue
                hits = searcher.search_text(q, limit, offset)
                if not as_json:
                    typer.echo(f"# {q}")
                _print_hits(hits, offset, as_json, q if as_json else None)
            return
        if image is not None:
            hits = searcher.search_image(read_file(image), limit, offset)
        elif similar is not None:
            hits = searcher.similar(similar, limit, offset)
            if hits is None:
                raise _fail(f"no indexed photo has id {similar}")
        else:
            hits = searcher.search_text(query, limit, offset)
    except (IndexNotFound, EncoderUnavailable, SchemaTooNew, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    except DecodeError as exc:
        raise _fail(f"{image}: {exc.reason}") from None
    _print_hits(hits, offset, as_json)


@app.command()
def status(
    index: IndexOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    show_skipped: Annotated[int, typer.Option("--skipped", help="List up to this many skipped files.")] = 20,
) -> None:
    """What the index holds: model, photo count, skipped files, last run."""
    from photoseek.search import IndexNotFound, Searcher

    settings = _settings(index)
    try:
        st = Searcher(settings.resolved_index_dir, settings).status(skipped_limit=show_skipped)
    except (IndexNotFound, SchemaTooNew) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(asdict(st), default=str, ensure_ascii=False, indent=2))
        return
    typer.echo(f"index:    {st.index_dir}")
    typer.echo(f"model:    {st.model_id} ({st.dim}-d)")
    typer.echo(f"photos:   {st.image_count}")
    typer.echo(f"search:   {st.search}")
    typer.echo(f"folders:  {', '.join(_show(r) for r in st.roots) or '-'}")
    if st.last_run:
        r = st.last_run
        typer.echo(f"last run: {r.started_at:%Y-%m-%d %H:%M:%S} UTC, {r.status}: added {r.added}, updated {r.updated}, "
                   f"moved {r.moved}, removed {r.removed}, skipped {r.skipped} ({r.seconds:.1f} s)")
    typer.echo(f"skipped:  {st.skipped_count}")
    for s in st.skipped:
        typer.echo(f"  {_show(s.path)}: {_show(s.reason)}")
    if st.skipped_count > len(st.skipped):
        typer.echo(f"  ... and {st.skipped_count - len(st.skipped)} more (--skipped N)")


@app.command()
def serve(
    index: IndexOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [env: PHOTOSEEK_HOST; default 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [env: PHOTOSEEK_PORT; default 8000].")] = None,
    token: Annotated[Optional[str], typer.Option(help="Access token, required beyond loopback [env: PHOTOSEEK_TOKEN].")] = None,
) -> None:
    """Serve the search page and JSON API."""
    from photoseek.web.main import run

    settings = _settings(index)
    overrides = {k: v for k, v in dict(host=host, port=port, token=token).items() if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    try:
        run(settings)
    except RuntimeError as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
