"""The ``photoseek`` command line (Typer: typed options, help text and shell completion for free).

Input that can be checked without the index or a model (an empty query, a missing file, an
unknown photo id) is checked first, so a mistake is answered at once. Errors are one line
on stderr, from :class:`photoseek.errors.PhotoseekError` (exit 2 for bad input, else 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from photoseek import __version__
from photoseek.errors import BadInput, NotFound, PhotoseekError, Unavailable

if TYPE_CHECKING:  # --help needs no settings: platformdirs and the checks are loaded by the commands that read them
    from photoseek.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Plain help text: Rich markup would eat every bracketed note, such as "[env: ...]".
    rich_markup_mode=None,
    help="Find your photos by what is in them: index a folder, then search it by text or by example.",
)

IndexOpt = Annotated[
    Optional[Path],
    typer.Option("--index", metavar="DIR",
                 help="Index directory [env: PHOTOSEEK_INDEX_DIR; default: this user's data folder]."),
]
DatabaseOpt = Annotated[
    Optional[str],
    typer.Option("--database", metavar="URL",
                 help="The catalogue when not SQLite in the index directory: postgresql+psycopg://USER@HOST/DB "
                      "(PostgreSQL with pgvector, shared by several machines) [env: PHOTOSEEK_DATABASE_URL].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output for scripts (the HTTP API's shape).")]
# Filters, shared by search and facets:
AfterOpt = Annotated[Optional[str], typer.Option(metavar="DATE", help="Only photos taken on or after this day "
                                                 "(YYYY-MM-DD; without an EXIF date, the file's date counts).")]
BeforeOpt = Annotated[Optional[str], typer.Option(metavar="DATE", help="Only photos taken on or before this day.")]
CameraOpt = Annotated[Optional[str], typer.Option(metavar="TEXT", help="Only photos whose camera make or model "
                                                  "contains this (any case), e.g. 'Pixel 7'.")]
FolderOpt = Annotated[Optional[Path], typer.Option(metavar="DIR", help="Only photos in this folder (and below).")]
TypeOpt = Annotated[Optional[list[str]], typer.Option("--type", metavar="TYPE", show_default=False,
                                                      help="Only this file type (jpeg, png, heif, ...); repeatable.")]
OrientationOpt = Annotated[Optional[str], typer.Option(metavar="SHAPE", help="landscape, portrait or square.")]
MinPixelsOpt = Annotated[Optional[int], typer.Option(metavar="N", min=1, help="Only photos of at least N pixels "
                                                     "(width x height).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"photoseek {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Find your photos by what is in them: index a folder, then search it by text or by example."""


def _settings(index: Path | None, database: str | None = None) -> Settings:
    from photoseek.settings import Settings, SettingsError

    given = {k: v for k, v in dict(index_dir=index, database_url=database).items() if v is not None}
    try:
        return Settings(**given)
    except SettingsError as exc:  # a setting from the environment or .env: one line per bad value, not a traceback
        lines = [f"PHOTOSEEK_{name.upper()}={value!s:.60}: {what}" for name, value, what in exc.problems]
        raise _fail("bad setting (environment or .env): " + "; ".join(lines) + "; fix or unset it", 2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _error(exc: PhotoseekError) -> typer.Exit:
    return _fail(exc.message, exc.exit_code)


@app.command()
def index(
    # Arguments are described in the docstring: Typer would print a type label such as <list[Path]> beside them.
    folders: Annotated[Optional[list[Path]], typer.Argument(metavar="FOLDER", hidden=True, show_default=False)] = None,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
    model: Annotated[Optional[str], typer.Option(
        metavar="MODEL",
        help="Encoder for a new index: MODEL:PRETRAINED (open_clip), MODEL:/path/ckpt.pt, 'offline', "
             "or 'offline-multilingual' (queries in 16 languages). [env: PHOTOSEEK_MODEL]")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Throw the index away and build it again (needed to change model).")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option(metavar="GLOB", show_default=False,
                                                         help="Files or folders to leave out; repeatable.")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="Progress bar [default: on a terminal].",
                                                     show_default=False)] = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", metavar="ADDRESS",
        help="Decode and embed on a Ray cluster: 'local' (start one on this machine), 'auto' (the cluster this "
             "machine belongs to) or the cluster's address; needs pip install 'photoseek[ray]'. "
             "[env: PHOTOSEEK_RAY_ADDRESS]")] = None,
    ocr: Annotated[bool, typer.Option(
        "--ocr", help="Also read the text in the photos (signs, receipts, screenshots) of this run, at most "
                      "PHOTOSEEK_OCR_SECONDS (10) a photo. [env: PHOTOSEEK_OCR]")] = False,
) -> None:
    """Embed every photo in the FOLDERs; later runs only embed what is new or changed.

    With no FOLDER, re-scan every folder the index already holds."""
    import shlex

    from photoseek.interrupts import StopSignals

    # Ctrl-C and SIGTERM only ask the run to stop (a KeyboardInterrupt raised wherever the main
    # thread is could leave a lock held: issue 9); a second one ends the process at once. Set
    # up before the indexer is imported (seconds: torch), and kept until the process exits, so
    # that a late Ctrl-C cannot become a traceback at interpreter shutdown either.
    resume = _show(shlex.join(["photoseek", "index", *map(str, folders or []),
                               *(["--index", str(index)] if index is not None else []),
                               *(["--database", database] if database else []),
                               *(["--model", model] if model else []),
                               *[arg for glob in exclude or [] for arg in ("--exclude", glob)],
                               *(["--hidden"] if hidden else []),
                               *(["--ray", ray] if ray else []),
                               *(["--ocr"] if ocr else [])]))
    stop = StopSignals(hard_exit_message="stopped at once: the index keeps every photo saved up to its last "
                                         f"checkpoint; run '{resume}' to continue").install()
    from photoseek import malloc

    malloc.tune(arena_max=2)  # before the model threads start (see photoseek.malloc)
    from sqlalchemy.exc import DBAPIError

    from photoseek.indexer import Indexer, no_images_message

    settings = _settings(index, database)
    if ocr:
        settings = settings.replace(ocr=True)
    index_dir = settings.resolved_index_dir
    existed = (index_dir / "photoseek.db").is_file()
    try:
        indexer = Indexer(index_dir, settings, show_progress=progress,
                          echo=lambda msg: typer.secho(msg, fg=typer.colors.YELLOW, err=True), stop=stop.event,
                          ray_address=ray)
    except PhotoseekError as exc:  # --ray without Ray installed
        raise _error(exc) from None
    try:
        summary = indexer.run(folders or [], model=model,
                              rebuild=rebuild, exclude=exclude or [], include_hidden=hidden)
    except PhotoseekError as exc:
        raise _error(exc) from None
    except (OSError, DBAPIError) as exc:
        raise _fail(_write_failure(exc, index_dir, existed and not rebuild)) from None
    if stop.requested:  # one line, and the shell's code for the signal (130 for SIGINT, 143 for SIGTERM)
        typer.echo(summary.stopped_line(resume), err=True)
        raise typer.Exit(stop.exit_code)
    if summary.found == 0 and summary.photos == 0:
        raise _fail(no_images_message([_show(str(f)) for f in folders] if folders else ["the indexed folders"]))
    typer.echo(f"{summary.line()}  [{summary.model_id}]")
    if summary.ocr_line():
        typer.echo(summary.ocr_line())
    for path, reason in summary.ocr_failures:
        typer.echo(f"  no text read from {_show(path)}: {_show(reason)}", err=True)
    if summary.tagged:
        typer.echo(f"tagged {summary.tagged} photo{'' if summary.tagged == 1 else 's'} ('photoseek tags' lists the tags)",
                   err=True)
    for path, reason in summary.skipped_files:
        typer.echo(f"  skipped {_show(path)}: {_show(reason)}", err=True)
    if summary.skipped > len(summary.skipped_files):
        typer.echo(f"  ... and {summary.skipped - len(summary.skipped_files)} more: 'photoseek status' lists them all",
                   err=True)
    typer.echo(f"index: {_show(str(index_dir))}", err=True)


def _show(text: str) -> str:
    """A file name for the terminal: control and format characters (newlines, ANSI escape
    sequences, bidi overrides) shown escaped, so a hostile name cannot forge lines or
    drive the terminal. JSON output keeps the real name."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _write_failure(exc: BaseException, index_dir: Path, had_photos: bool) -> str:
    """What to tell people when the index cannot be written (disk full, I/O error, ...)."""
    import errno
    import sqlite3

    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        detail = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
    else:  # SQLAlchemy wraps sqlite3's error; its first line is SQLite's message
        orig = getattr(exc, "orig", exc)
        detail = str(orig).splitlines()[0]
        full = getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        where = ""
    what = "out of disk space" if full else detail
    kept = ("Nothing already saved is lost: the index still holds every photo up to its last checkpoint and still "
            "answers searches. " if had_photos else "")
    return (f"could not write the index at {index_dir}: {what}{where}. {kept}"
            + ("Free some disk space, then " if full else "Fix that, then ")
            + "run 'photoseek index' again" + (": it carries on from there." if had_photos else "."))


def _check_similar(settings: Settings, image_id: int) -> None:
    """An unknown id is answered from the catalogue alone, before the search loads anything."""
    from photoseek.storage import catalogue_exists, open_reader

    if not catalogue_exists(settings.resolved_index_dir, settings.database_url):
        return  # the searcher says there is no index, with what to do
    catalogue = open_reader(settings.resolved_index_dir, settings.database_url)
    try:
        with catalogue.reading() as conn:
            found = catalogue.has_photo(conn, image_id)
    finally:
        catalogue.close()
    if not found:
        raise NotFound(f"no photo has id {image_id} (ids are in the third column of 'photoseek search')")


def _filters(after: str | None, before: str | None, camera: str | None, folder: Path | None,
             file_type: list[str] | None, orientation: str | None, min_pixels: int | None):
    from photoseek.search.query import Filters, parse_date

    return Filters(after=parse_date(after, "--after"), before=parse_date(before, "--before"), camera=camera,
                   folder=os.path.realpath(os.path.expanduser(folder)) if folder is not None else None,
                   types=tuple(t.lower().lstrip(".") for t in file_type or ()),
                   orientation=orientation.lower() if orientation else None, min_pixels=min_pixels)


def _read_query_image(image: Path) -> bytes:
    from photoseek.imaging import DecodeError, read_file

    if not image.exists():
        raise BadInput(f"no such file: {image}")
    try:
        return read_file(image)
    except DecodeError as exc:
        raise BadInput(f"{image}: {exc.reason}") from None


def _print_page(page, model_id: str | None) -> None:
    """A page of results as lines for people: rank, score, id, (date,) path and why, when not the meaning alone.
    Read from the search's own page, not the API's models: those cost pydantic's import, a tenth of a second."""
    from photoseek.encoders.languages import language_hint

    request = page.request
    if not page.hits:
        typer.echo("no results")
    by_date = request.sort != "relevance"
    for rank, hit in enumerate(page.hits, start=request.offset + 1):
        p, when = hit.photo, ""
        if by_date:  # the date the order follows, and whether it is only the file's
            when = (f"{p.photo_date:%Y-%m-%d %H:%M}{' (file)' if p.date_source == 'file' else '       '}  "
                    if p.photo_date else " " * 25)
        # Say why only when it is not the meaning alone (the usual case needs no note).
        why = f"  [{', '.join(w.replace('_', ' ') for w in hit.why)}]" if list(hit.why) != ["semantic"] else ""
        # Rounded to 6 places first, as the API's score is: the same digits on both.
        typer.echo(f"{rank:3d}  {round(hit.score, 6):.3f}  {p.id:>6}  {when}{_show(p.path)}{why}")
    if page.cutoff is not None and page.matches is not None:
        typer.echo(f"{page.matches} photos scored {round(page.cutoff, 6):.3f} or more (--min-score)", err=True)
    if page.next_offset is not None:
        typer.echo(f"more: --offset {page.next_offset}", err=True)
    hint = language_hint(model_id, request.texts)
    if hint is not None:  # after the results, where it is seen
        typer.echo(f"hint: {hint.message}", err=True)


@app.command()
def search(
    # Arguments are described in the docstring: Typer would print a type label such as <str> beside them.
    query: Annotated[Optional[str], typer.Argument(metavar="QUERY", hidden=True, show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", metavar="FILE",
                                                  help="Find photos like this image file.")] = None,
    similar: Annotated[Optional[int], typer.Option(metavar="ID", help="Find photos like the indexed photo with this id "
                                                   "(the third column of the results).")] = None,
    queries: Annotated[Optional[Path], typer.Option(metavar="FILE",
                                                    help="File of text queries, one per line ('-' = stdin).")] = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    camera: CameraOpt = None,
    folder: FolderOpt = None,
    file_type: TypeOpt = None,
    orientation: OrientationOpt = None,
    min_pixels: MinPixelsOpt = None,
    sort: Annotated[str, typer.Option(metavar="ORDER", help="relevance, newest or oldest (by date: only good "
                                      "matches, see --min-score).")] = "relevance",
    min_score: Annotated[Optional[float], typer.Option(metavar="SCORE", min=-1.0, max=1.0, help="Leave out photos "
                                                       "scoring below this [default: none by relevance; by date, a "
                                                       "cutoff calibrated to the query].", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", metavar="N", min=1, max=1000, help="How many results.")] = 10,
    offset: Annotated[int, typer.Option(metavar="N", min=0, help="Skip this many results (paging).")] = 0,
    keywords: Annotated[bool, typer.Option("--keywords/--no-keywords", help="Also find photos whose file name, "
                                           "folders, caption, keywords or text read in them (index --ocr) hold "
                                           "the query's words.")] = True,
    as_json: JsonOpt = False,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Search the index by text (QUERY, in words), by an example image, by an indexed photo, or a mix.

    QUERY may add and subtract terms and weigh them: "dog - leash + snow", "2:sunset + beach".
    With --image or --similar, a QUERY refines the photo: --similar 42 "in winter".

    Prints rank, score (cosine similarity), photo id and path, best first, and in brackets why a
    photo matched when its words did (file name, folder, caption, keyword, ocr text). With --json,
    one JSON object per query, the same as the HTTP API's GET /api/search answer."""
    from photoseek.search.query import SearchRequest, Term, parse_query

    if queries is not None and (query, image, similar) != (None, None, None):
        raise _fail("--queries FILE reads every query from the file: give no QUERY, --image or --similar with it", 2)
    if (query, image, similar, queries) == (None, None, None, None):
        raise _fail("say what to search for: QUERY, --image FILE, --similar ID or --queries FILE", 2)
    settings = _settings(index, database)
    try:
        # Everything that can be checked without the index or a model, first.
        terms: list[Term] = []
        if image is not None:
            terms.append(Term(image=_read_query_image(image)))
        if similar is not None:
            _check_similar(settings, similar)
            terms.append(Term(photo_id=similar))
        if query is not None:
            terms += parse_query(query, max_chars=settings.max_query_chars)
        filters = _filters(after, before, camera, folder, file_type, orientation, min_pixels)
        base = dict(filters=filters, sort=sort.lower(), min_score=min_score, limit=limit, offset=offset,
                    keywords=keywords)
        if queries is not None:
            if str(queries) != "-" and not queries.is_file():
                raise BadInput(f"no such file: {queries}")
            lines = sys.stdin if str(queries) == "-" else queries.open(encoding="utf-8")
            requests = (SearchRequest(terms=tuple(parse_query(line, max_chars=settings.max_query_chars)), **base)
                        for line in lines if line.strip())
            _run_search(settings, requests, as_json, headers=not as_json)
        else:
            _run_search(settings, [SearchRequest(terms=tuple(terms), **base)], as_json)
    except PhotoseekError as exc:
        raise _error(exc) from None


def _run_search(settings: Settings, requests, as_json: bool, headers: bool = False) -> None:
    from photoseek.errors import DecodeError
    from photoseek.search import Searcher
    from photoseek.search.query import format_query

    searcher = Searcher(settings.resolved_index_dir, settings, one_shot=True)
    if not len(searcher):
        raise Unavailable(f"the index at {searcher.files.root} is empty: run 'photoseek index FOLDER' to add photos")
    for request in requests:
        try:
            page = searcher.search(request)
        except DecodeError as exc:
            raise BadInput(f"that image cannot be read: {exc.reason}") from None
        if headers:
            typer.echo(f"# {format_query(request.terms)}")
        if as_json:
            from photoseek.web.schemas import page_out

            source = searcher.photo(request.similar_to) if request.similar_to is not None else None
            typer.echo(page_out(page, source=source, model_id=searcher.model_id).model_dump_json())
        else:
            _print_page(page, searcher.model_id)


@app.command()
def facets(
    query: Annotated[Optional[str], typer.Argument(metavar="QUERY", hidden=True, show_default=False)] = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    camera: CameraOpt = None,
    folder: FolderOpt = None,
    file_type: TypeOpt = None,
    orientation: OrientationOpt = None,
    min_pixels: MinPixelsOpt = None,
    min_score: Annotated[Optional[float], typer.Option(metavar="SCORE", min=-1.0, max=1.0, help="With a QUERY: "
                                                       "count photos scoring this or more [default: the calibrated "
                                                       "cutoff].", show_default=False)] = None,
    year: Annotated[Optional[int], typer.Option(metavar="YEAR", min=1, max=9999,
                                                help="Count per month of this year.")] = None,
    as_json: JsonOpt = False,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """How many photos each filter choice keeps: per camera, year (or month), folder, file type and tag.

    With a QUERY, only the photos that match it count. Each list counts with the other filters
    applied but not its own, so it shows the alternatives to what is chosen."""
    from photoseek.search import Searcher
    from photoseek.search.query import parse_query
    from photoseek.web.schemas import facets_out

    settings = _settings(index, database)
    try:
        filters = _filters(after, before, camera, folder, file_type, orientation, min_pixels)
        terms = tuple(parse_query(query, max_chars=settings.max_query_chars)) if query is not None else ()
        searcher = Searcher(settings.resolved_index_dir, settings)
        out = facets_out(searcher.facets(filters, terms=terms, min_score=min_score, year=year))
    except PhotoseekError as exc:
        raise _error(exc) from None
    if as_json:
        typer.echo(out.model_dump_json())
        return
    for name in ("camera", "year", "month", "folder", "type", "tag"):
        values = getattr(out, name)
        if values:
            typer.echo(f"{name}:")
            for v in values:
                typer.echo(f"  {v.count:6d}  {_show(v.label)}")


@app.command()
def duplicates(
    threshold: Annotated[Optional[float], typer.Option(metavar="T", show_default=False, help=(
        "Compare two photos visually from this embedding similarity (cosine, 0.5 to 1) on; lower finds more "
        "heavily edited copies and takes longer [default: 0.6 with the offline encoder, 0.8 with CLIP]."))] = None,
    as_json: JsonOpt = False,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help=(
        "Also write the list as CSV, one row per photo ('-' for standard output)."))] = None,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Groups of near-identical photos (bursts, resized or re-encoded copies, light edits, crops), each with
    a suggested photo to keep (largest resolution, then earliest taken) and why.

    Photos whose embeddings are close are checked visually (matching local features), so different photos of
    similar things are not grouped. Nothing is deleted or moved: use the list (--json, --csv) with your own tools."""
    from photoseek.search import Searcher
    from photoseek.search.duplicates import check_threshold, find_duplicates, to_csv
    from photoseek.web.schemas import duplicates_out

    settings = _settings(index, database)
    try:
        check_threshold(threshold, "--threshold")
        if csv_file is not None and str(csv_file) != "-" and not csv_file.parent.is_dir():
            raise BadInput(f"--csv: the folder {csv_file.parent} does not exist; give a file in an existing folder")
        searcher = Searcher(settings.resolved_index_dir, settings)
        if not len(searcher):
            raise Unavailable(f"the index at {searcher.files.root} is empty: run 'photoseek index FOLDER' to add photos")
        report = find_duplicates(searcher, threshold)
    except PhotoseekError as exc:
        raise _error(exc) from None
    if csv_file is not None:
        if str(csv_file) == "-":
            typer.echo(to_csv(report), nl=False)
        else:
            try:
                csv_file.write_text(to_csv(report), encoding="utf-8")
            except OSError as exc:
                raise _fail(f"--csv: cannot write {csv_file}: {exc.strerror or exc}") from None
    if as_json:
        typer.echo(duplicates_out(report).model_dump_json())
        return
    if str(csv_file) == "-":
        return
    for number, group in enumerate(report.groups, 1):
        typer.echo(f"group {number}: {len(group.photos)} photos; keep {group.keeper.photo_id}: {group.keeper.reason_text}")
        for photo in group.photos:
            mark = "keep" if photo.id == group.keeper.photo_id else "    "
            when = photo.photo_date.strftime("%Y-%m-%d %H:%M") if photo.photo_date else "no date"
            typer.echo(f"  {mark} {photo.id:>7}  {photo.width}x{photo.height}  {photo.size_bytes / 1e6:6.2f} MB  "
                       f"{when}  {_show(photo.path)}")
    typer.echo(f"{len(report.groups)} groups, {report.duplicates} photos besides the suggested keepers; "
               f"{report.photos} photos, {report.candidate_pairs} pairs compared at threshold {report.threshold:g}, "
               f"{report.seconds:.1f} s" + (f"; {len(report.unreadable)} photos could not be read"
                                          if report.unreadable else ""))


@app.command()
def tags(
    vocabulary: Annotated[Optional[str], typer.Option(
        metavar="FILE", help="Tag with the shipped vocabulary plus your own tags from FILE (one a line: "
        "'name > parent, parent = synonym, synonym'), or 'default' for the shipped one alone. Re-tags every photo "
        "from its stored embedding (no photo is read again); the index remembers the choice. "
        "[env: PHOTOSEEK_TAG_VOCABULARY]")] = None,
    update: Annotated[bool, typer.Option("--update", help="Tag the photos not tagged with the index's vocabulary "
                                         "yet (e.g. an index from before tags), without scanning its folders.")] = False,
    xmp: Annotated[bool, typer.Option("--xmp", help="Also write each tagged photo's tags as keywords into an XMP "
                                      "sidecar beside it (photo.jpg.xmp: digiKam, darktable, Lightroom). Originals are "
                                      "never touched; sidecars photoseek did not write are left alone.")] = False,
    as_json: JsonOpt = False,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """List the automatic tags photos carry, with how many photos carry each (most first).

    Search by tag with tag:NAME in a query ("tag:dog", "tag:musical-instrument beach"); broad words
    ("an animal") find tagged photos without it."""
    from photoseek.search import Searcher
    from photoseek.web.schemas import tags_out

    settings = _settings(index, database)
    if vocabulary is not None:
        settings = settings.replace(tag_vocabulary=vocabulary)
    try:
        if vocabulary is not None or update:
            from photoseek.indexer.retag import retag
            from photoseek.tags import load_vocabulary

            if vocabulary not in (None, "default"):
                load_vocabulary(vocabulary)  # a mistake in the file is reported before anything is opened
            done = retag(settings.resolved_index_dir, settings)
            typer.echo(f"tagged {done} photo{'' if done == 1 else 's'} from their stored embeddings", err=True)
        searcher = Searcher(settings.resolved_index_dir, settings)
        out = tags_out(searcher)
        if xmp:
            from photoseek.xmp import sidecars_for_index

            report = sidecars_for_index(searcher.catalogue, searcher.vocabulary)
            typer.echo(f"XMP sidecars: {report.written} written, {report.unchanged} already up to date, "
                       f"{len(report.foreign)} not photoseek's (left alone), {len(report.failed)} failed", err=True)
            for path, why in report.failed[:5]:
                typer.echo(f"  cannot write {_show(path)}: {why}", err=True)
    except PhotoseekError as exc:
        raise _error(exc) from None
    if as_json:
        typer.echo(out.model_dump_json())
        return
    for t in out.tags:
        typer.echo(f"{t.count:6d}  {t.tag}" + (f"  ({', '.join(t.parents)})" if t.parents else ""))
    if not out.tags:
        typer.echo("no tags yet")
    if out.untagged:
        typer.echo(f"{out.untagged} of {out.photos} photos are not tagged with this vocabulary yet: run "
                   "'photoseek tags --update' (or 'photoseek index')", err=True)
    typer.echo(f"vocabulary: {_show(out.vocabulary)} ({out.vocabulary_size} tags)", err=True)


@app.command()
def tune(
    captions: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Learn from this file of captions: CSV "
                                                     "'path,caption' or JSON lines {\"path\": ..., \"caption\": ...}; "
                                                     "several captions per photo allowed. Default: the captions and "
                                                     "keywords stored in the photos (EXIF/IPTC/XMP).")] = None,
    folders: Annotated[bool, typer.Option("--folders", help="Also use folder names as captions.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Apply the adapter even if held-out recall did not improve "
                                        "or generic recall fell by more than a point.")] = False,
    no_feedback: Annotated[bool, typer.Option("--no-feedback", help="Leave out the feedback marks ('photoseek "
                                              "feedback'; by default 'right' marks are training pairs and 'wrong' "
                                              "marks hard negatives).")] = False,
    report: Annotated[bool, typer.Option("--report", help="Show what the current adapter learned.")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Remove the adapter: back to the pretrained space.")] = False,
    as_json: JsonOpt = False,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Teach the index your own words: train small adapters on your captions so that text queries use them.

    Photos are not read again (their stored embeddings are used); only text queries change."""
    import json

    from photoseek import tune as tuning

    settings = _settings(index, database)
    index_dir = settings.resolved_index_dir
    if sum((report, undo, captions is not None or folders or force or no_feedback)) > 1:
        raise _fail("--report and --undo stand alone: give one of them, or options to tune", 2)
    try:
        if undo:
            removed = tuning.undo(index_dir)
            typer.echo("adapter removed: text queries use the pretrained space again" if removed
                       else "no adapter: the index already uses the pretrained space")
            return
        if report:
            adapter = tuning.load_adapter(index_dir)
            if as_json:
                typer.echo(json.dumps(adapter.summary if adapter else None))
            elif adapter is None:
                typer.echo("no adapter: the index uses the pretrained space ('photoseek tune' trains one)")
            else:
                typer.echo("\n".join(tuning.describe(adapter.summary)))
            return
        outcome = tuning.tune(index_dir, settings, captions=captions, folders=folders, force=force,
                              feedback=not no_feedback, progress=lambda m: typer.echo(m, err=True))
    except PhotoseekError as exc:
        raise _error(exc) from None
    summary = tuning.load_adapter(index_dir).summary
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"applied adapter v{outcome.version}"
               + (f" (feedback marks: {summary.get('marks_right', 0)} right, {summary.get('marks_wrong', 0)} wrong)"
                  if not no_feedback else ""))
    typer.echo("\n".join(tuning.describe(summary)))


@app.command()
def feedback(
    right: Annotated[Optional[str], typer.Option("--right", metavar="QUERY", help="Mark PHOTO right for QUERY: the "
                                                 "next tune learns QUERY as a caption of it.")] = None,
    wrong: Annotated[Optional[str], typer.Option("--wrong", metavar="QUERY", help="Mark PHOTO wrong for QUERY: the "
                                                 "next tune learns that QUERY must not find it.")] = None,
    unmark: Annotated[Optional[str], typer.Option("--unmark", metavar="QUERY", help="Remove the mark on PHOTO for "
                                                  "QUERY.")] = None,
    photo: Annotated[Optional[str], typer.Argument(metavar="[PHOTO]", help="With --right / --wrong / --unmark: the "
                                                   "photo, by its path or its id.", show_default=False)] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every mark (with --query: that query's).")] = False,
    query: Annotated[Optional[str], typer.Option("--query", metavar="QUERY", help="Only this query's marks.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output for scripts (GET /api/feedback's shape).")] = False,
    index: IndexOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """List, add or clear the right/wrong marks on search results that 'photoseek tune' learns from.

    The web page's "right"/"wrong" buttons keep the same marks. Without options: every mark (query, photo,
    mark, when)."""
    import json

    from photoseek import feedback as marks

    given = [(m, q) for m, q in (("right", right), ("wrong", wrong), (None, unmark)) if q is not None]
    if len(given) > 1 or (given and (clear or query is not None)) or (clear and photo is not None):
        raise _fail("give one of --right QUERY PHOTO, --wrong QUERY PHOTO, --unmark QUERY PHOTO or --clear "
                    "[--query QUERY]", 2)
    if given and photo is None:
        raise _fail("say which photo: --right QUERY PHOTO (its path, or its id from 'photoseek search')", 2)
    if photo is not None and not given:
        raise _fail(f"{photo}: say what the mark is: --right QUERY {photo} or --wrong QUERY {photo}", 2)
    settings = _settings(index, database)
    try:
        # Mistakes first: nothing below imports torch or loads a model.
        wanted = marks.normalise_query(given[0][1], name="--" + (given[0][0] or "unmark")) if given else None
        only = marks.normalise_query(query, name="--query") if query is not None else None
        if given:
            with marks.writer(settings.resolved_index_dir, settings.database_url) as catalogue:
                image_id = marks.find_photo(catalogue, photo)
                stored = marks.set_mark(catalogue, wanted, image_id, given[0][0])
            if as_json:
                typer.echo(json.dumps({"mark": stored.as_dict() if stored else None}))
            else:
                typer.echo(f"marked {_show(stored.path)} {stored.mark} for {wanted!r}" if stored
                           else f"no mark on photo {image_id} for {wanted!r} now")
            return
        if clear:
            with marks.writer(settings.resolved_index_dir, settings.database_url) as catalogue:
                removed = marks.clear(catalogue, only)
            typer.echo(f"removed {removed} mark{'s' if removed != 1 else ''}" + (f" of {only!r}" if only else ""))
            return
        from photoseek.storage import catalogue_exists, open_catalogue

        if not catalogue_exists(settings.resolved_index_dir, settings.database_url):
            raise Unavailable(f"no index at {settings.resolved_index_dir} yet: run 'photoseek index FOLDER' first")
        catalogue = open_catalogue(settings.resolved_index_dir, settings.database_url, readonly=True)
        try:
            listed = marks.marks(catalogue, only)
            with catalogue.engine.connect() as conn:
                total = catalogue.feedback_count(conn)
            can_write = marks.writable(settings.resolved_index_dir, settings.database_url, catalogue)
        finally:
            catalogue.close()
    except PhotoseekError as exc:
        raise _error(exc) from None
    if as_json:
        typer.echo(json.dumps({"marks": [m.as_dict() for m in listed], "total": total, "writable": can_write}))
        return
    for m in listed:
        typer.echo(f"{m.created_at:%Y-%m-%d %H:%M:%S UTC}  {m.mark:5}  {m.image_id:6}  {_show(m.path)}  {m.query!r}")
    typer.echo(f"{len(listed)} mark{'s' if len(listed) != 1 else ''}" + (f" of {only!r}" if only else "")
               + ("; 'photoseek tune' learns from them" if listed else "; mark results right or wrong in the web "
                  "page, or with --right / --wrong"), err=True)


def _describe_run(r) -> str:
    when = r.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"{when}, {r.status}: added {r.added}, updated {r.updated}, moved {r.moved}, removed {r.removed}, "
            f"skipped {r.skipped} ({r.seconds:.1f} s)")


@app.command()
def status(
    index: IndexOpt = None,
    database: DatabaseOpt = None,
    as_json: JsonOpt = False,
    show_skipped: Annotated[int, typer.Option("--skipped", metavar="N", min=0,
                                              help="List up to this many skipped files.")] = 20,
) -> None:
    """What the index holds: model, photo count, skipped files and why, recent runs."""
    from photoseek.search.status import read_status

    settings = _settings(index, database)
    try:
        st = read_status(settings.resolved_index_dir, skipped_limit=show_skipped, settings=settings)
    except PhotoseekError as exc:
        raise _error(exc) from None
    if as_json:
        from photoseek.web.schemas import status_out

        typer.echo(status_out(st).model_dump_json(indent=2))
        return
    typer.echo(f"index:    {_show(st.index_dir)}{'' if st.writable else '  (read-only here: searchable, not updatable)'}")
    if settings.database_url:
        typer.echo(f"catalogue: {st.catalogue}")
    typer.echo(f"model:    {st.model_id} ({st.dim}-d)")
    typer.echo(f"photos:   {st.image_count}")
    typer.echo(f"search:   {st.search}")
    typer.echo(f"folders:  {', '.join(_show(r) for r in st.roots) or '-'}")
    if st.last_run:
        typer.echo(f"last run: {_describe_run(st.last_run)}")
        if st.last_run.status == "interrupted":
            typer.echo("          (what it saved stays indexed; run 'photoseek index' to continue)")
    if st.previous_run:
        typer.echo(f"before it: {_describe_run(st.previous_run)}")
    if st.last_change and st.last_change not in (st.last_run, st.previous_run):
        typer.echo(f"last change: {_describe_run(st.last_change)}")
    typer.echo(f"runs:     {st.runs}")
    typer.echo(f"skipped:  {st.skipped_count}")
    for s in st.skipped:
        typer.echo(f"  {_show(s.path)}: {_show(s.reason)}")
    if st.skipped_count > len(st.skipped):
        typer.echo(f"  ... and {st.skipped_count - len(st.skipped)} more (--skipped N)")


@app.command()
def migrate(
    source: Annotated[Optional[Path], typer.Option("--from", metavar="DIR",
                                                   help="The index folder to copy (SQLite).")] = None,
    source_database: Annotated[Optional[str], typer.Option(
        "--from-database", metavar="URL", help="Copy this catalogue instead (e.g. PostgreSQL back into SQLite: "
        "then the target is --index DIR).")] = None,
    database: DatabaseOpt = None,
    index: IndexOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a target that already holds an index.")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="Progress bar [default: on a terminal].",
                                                     show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output for scripts: what was copied.")] = False,
) -> None:
    """Copy an index into another catalogue, embeddings and all (nothing is re-embedded).

    \b
    photoseek migrate --from ~/.local/share/photoseek/index --database postgresql+psycopg://USER@HOST/DB

    Photo ids stay the same. The target must be empty (or --replace); it is written in one
    transaction, so an error or a crash leaves it as it was."""
    import json

    from tqdm import tqdm

    from photoseek.storage.copy import migrate as copy_index

    if (source is None) == (source_database is None):
        raise _fail("say which index to copy: --from DIR (an index folder) or --from-database URL", 2)
    settings = _settings(index, database)
    if source is not None and not settings.database_url:
        raise _fail("say where to copy it: --database postgresql+psycopg://USER@HOST/DB (or set "
                    "PHOTOSEEK_DATABASE_URL)", 2)
    bar = tqdm(unit="photo", desc="copying", dynamic_ncols=True, disable=(not progress) if progress is not None else None)
    try:
        done = copy_index(source, source_database, settings.resolved_index_dir, settings.database_url,
                          replace=replace, settings=settings,
                          progress=lambda n: bar.update(n - bar.n))
    except PhotoseekError as exc:
        raise _error(exc) from None
    finally:
        bar.close()
    if as_json:
        typer.echo(json.dumps(dict(source=done.source, target=done.target, model_id=done.model_id, dim=done.dim,
                                   photos=done.photos, skipped=done.skipped, runs=done.runs, folders=done.folders,
                                   replaced=done.replaced, seconds=round(done.seconds, 3))))
        return
    typer.echo(f"copied {done.photos} photos, {done.skipped} skipped files, {done.runs} runs and {done.folders} "
               f"folders in {done.seconds:.1f} s  [{done.model_id}, {done.dim}-d]")
    typer.echo(f"from {done.source}\nto   {done.target}{' (replaced what it held)' if done.replaced else ''}",
               err=True)


@app.command()
def serve(
    index: IndexOpt = None,
    database: DatabaseOpt = None,
    host: Annotated[Optional[str], typer.Option(metavar="ADDRESS",
                                                help="Address to listen on [env: PHOTOSEEK_HOST; default: 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(metavar="PORT", min=1, max=65535,
                                                help="Port [env: PHOTOSEEK_PORT; default: 8000].")] = None,
    token: Annotated[Optional[str], typer.Option(metavar="TOKEN",
                                                 help="Access token, required beyond loopback [env: PHOTOSEEK_TOKEN].")] = None,
) -> None:
    """Serve the search page and JSON API."""
    from photoseek.web.main import run

    settings = _settings(index, database)
    overrides = {k: v for k, v in dict(host=host, port=port, token=token).items() if v is not None}
    if overrides:
        settings = settings.replace(**overrides)
    try:
        from photoseek.files import parse_path_map

        parse_path_map(settings.path_map)  # a mistyped PHOTOSEEK_PATH_MAP: one line now, not a 404 per photo
        run(settings)
    except PhotoseekError as exc:
        raise _error(exc) from None
    except RuntimeError as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    from photoseek.interrupts import quit_on_signals

    quit_on_signals()  # the 'photoseek' script comes here first (python -m photoseek has already)
    if sys.argv[1:2] != ["serve"]:
        # pydantic looks for plugins (observability hooks) by reading every installed package's entry
        # points when it builds its first model: a fiftieth of a second of every terminal command, for
        # hooks only a server would want. Pydantic's documented switch; a value the user set wins.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    app()


if __name__ == "__main__":
    main()
