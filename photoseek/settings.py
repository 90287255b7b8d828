"""Settings from the environment (``PHOTOSEEK_*``) with sensible defaults.

A dataclass gives typed values, each checked against its limits (a bad one raises
:class:`SettingsError` naming it); :func:`environment` reads ``PHOTOSEEK_*`` variables (any case)
and a ``.env`` file in the working folder, the variables winning, and values given in code win over
both (pydantic-settings' rules). Not pydantic: importing it and building the model cost every
terminal command about a tenth of a second. No other module reads ``os.environ`` for a setting.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import platformdirs

from photoseek.errors import BadInput

ENV_PREFIX = "PHOTOSEEK_"


# Up to this many photos every search compares the query with every photo: exact, and about
# 9 ms a query at 200,000 photos (2 ms at 50,000) on one core. Beyond it an inverted-file
# index (IVF) compares it with the photos of the nearest quarter of its clusters only: about
# 4x faster, but a text query then finds ~91% of its exact top results (bench/run.py measures
# both), so it is kept for collections where a full scan would be slow.
EXACT_SEARCH_UP_TO = 200_000

# Above this many photos the approximate index keeps only product-quantised codes in memory
# (IVF-PQ, 64 bytes a 512-d photo instead of 1 KB of float16) and re-ranks its best candidates
# on float16 vectors read from a memory-mapped file (photoseek.store). At 1,000,000 photos the
# float16 IVF index already holds ~1 GB in RAM; below that it fits a search server comfortably
# and costs no quantisation and no reads from disk, so it stays the choice there (bench/million.py).
PQ_ABOVE = 1_000_000


# A PostgreSQL catalogue compares a query with every photo up to this many (exact), then builds an HNSW
# index: an exact scan in SQL costs far more per photo than FAISS's in memory (bench/postgres.py).
HNSW_ABOVE = 20_000


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow);
    the defaults for worker and thread counts are derived from it."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_index_dir() -> Path:
    return Path(platformdirs.user_data_dir("photoseek", appauthor=False)) / "index"


def environment(fields, env_file: str | os.PathLike | None = ".env") -> dict[str, str]:
    """The ``PHOTOSEEK_*`` values for ``fields`` (names) from ``env_file`` (when it exists), then
    from the environment, which wins. Names match in any case; unknown names are ignored."""
    found: dict[str, str] = {}

    def take(items) -> None:
        for key, value in items:
            name = key.lower()
            if name.startswith(ENV_PREFIX.lower()) and name[len(ENV_PREFIX):] in fields and value is not None:
                found[name[len(ENV_PREFIX):]] = value

    if env_file is not None and os.path.isfile(env_file):
        from dotenv import dotenv_values  # python-dotenv: the same parser pydantic-settings uses

        take(dotenv_values(env_file).items())
    take(os.environ.items())
    return found


class SettingsError(BadInput):
    """Settings that cannot be used as given; ``problems`` holds ``(name, value, what is wrong)`` for
    each, so that the command line can name the environment variable and the web app the field."""

    kind = "bad_setting"

    def __init__(self, problems: list[tuple[str, object, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{name}={value!s:.60}: {what}" for name, value, what in problems))


def _setting(default=MISSING, *, factory=None, ge: float | None = None, gt: float | None = None,
             le: float | None = None, choices: tuple[str, ...] = (), secret: bool = False, doc: str = ""):
    """A field of :class:`Settings`: its default and the limits every value, given or read, must keep
    (``secret``: left out of the settings' repr, which may reach a log)."""
    rules = {"ge": ge, "gt": gt, "le": le, "choices": choices, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=rules, repr=not secret)
    return field(default=default, metadata=rules, repr=not secret)


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _coerce(kind: str, value):
    """``value`` (from code, or text from the environment) as ``kind``, or ValueError saying what it should be."""
    if kind == "Path":
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise ValueError("should be a path")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError("should be text")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError("should be true or false (1/0, yes/no, on/off)")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ValueError("should be a whole number")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError("should be a number")
    raise TypeError(f"no rule for settings of type {kind}")


def _check(f, value):
    """``value`` for field ``f`` in its declared type, within its limits (ValueError otherwise)."""
    kind = f.type.replace(" | None", "")
    if value is None:
        if kind != f.type:
            return None
        raise ValueError("should be set")
    value = _coerce(kind, value)
    rules = f.metadata
    if rules["ge"] is not None and value < rules["ge"]:
        raise ValueError(f"should be {rules['ge']} or more")
    if rules["gt"] is not None and value <= rules["gt"]:
        raise ValueError(f"should be more than {rules['gt']}")
    if rules["le"] is not None and value > rules["le"]:
        raise ValueError(f"should be {rules['le']} or less")
    if rules["choices"] and value not in rules["choices"]:
        raise ValueError(f"should be one of {', '.join(rules['choices'])}")
    return value


def _checked(declared: dict, values: dict) -> dict:
    """``values`` by name, each checked against its field in ``declared``: every bad one is named at
    once in a :class:`SettingsError`; a name no field has is a TypeError (a mistake in code)."""
    unknown = sorted(set(values) - declared.keys())
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(unknown)}")
    checked, problems = {}, []
    for name in (n for n in declared if n in values):  # in the order declared, as the problems are told
        raw = values[name]
        try:
            checked[name] = _check(declared[name], raw)
        except ValueError as exc:
            problems.append((name, raw, str(exc)))
    if problems:
        raise SettingsError(problems)
    return checked


@dataclass(init=False)
class Settings:
    """Every setting, typed and within its limits; ``Settings(field=value)`` overrides the environment."""

    index_dir: Path = _setting(factory=default_index_dir, doc="Where the index lives.")
    database_url: str | None = _setting(
        None,
        doc="The catalogue, when not SQLite in the index folder: postgresql+psycopg://user@host/db "
        "(PostgreSQL with pgvector, shared by several machines).")
    path_map: str | None = _setting(
        None,
        doc="Where indexed folders are mounted on this machine when it differs from where they were "
        "indexed: 'INDEXED=HERE', several separated by ';' (e.g. '/mnt/archive=/Volumes/archive').")
    model: str | None = _setting(
        None,
        doc="Encoder for a new index: 'MODEL:PRETRAINED' (open_clip), 'MODEL:/path/to/checkpoint.pt', "
        "or 'offline' / 'offline:lite0' / 'offline:lite2' / 'offline:multilingual' (bundled). Default: CLIP if "
        "its weights can be had.",
    )
    batch_size: int = _setting(32, ge=1, le=1024)
    decode_workers: int | None = _setting(None, ge=0, doc="Decode processes; default from CPU count.")
    inference_workers: int | None = _setting(
        None, ge=1, doc="Batches the indexer embeds at once; default: one per core, at most 4.")
    torch_threads: int | None = _setting(
        None, ge=1, doc="torch threads per inference worker; default: cores / workers.")
    precision: str = _setting("auto", choices=("auto", "bf16", "fp32"))
    openvino: bool = _setting(
        True, doc="Index with a CLIP model's image tower in OpenVINO (converted once per model) "
        "instead of torch: no torch in the indexing process. PHOTOSEEK_OPENVINO=0: torch.")
    max_image_pixels: int = _setting(120_000_000, ge=1, doc="Larger images are refused as bombs.")
    exact_search_up_to: int = _setting(
        EXACT_SEARCH_UP_TO, ge=0,
        doc="Up to this many photos searches are exact; above, an approximate (IVF) index answers.")
    pq_above: int = _setting(
        PQ_ABOVE, ge=0,
        doc="Above this many photos the approximate index holds product-quantised codes (IVF-PQ) and "
        "re-ranks its best candidates on float16 vectors memory-mapped from vectors.f16.")
    hnsw_above: int = _setting(
        HNSW_ABOVE, ge=0,
        doc="PostgreSQL catalogues: up to this many photos searches are exact; above, an HNSW index "
        "(pgvector) answers.")
    ocr: bool = _setting(
        False, doc="Also read the text in photos (signs, receipts, screenshots) when indexing: "
        "photoseek index --ocr (photoseek.ocr).")
    ocr_seconds: float = _setting(
        10.0, gt=0, le=600, doc="Most seconds OCR may spend on one photo; a photo that needs more "
        "is indexed without its text, and the run says so.")
    ocr_at_once: int = _setting(
        1, ge=1, doc="Photos whose text is read at the same time, across the decode workers: each "
        "takes about 250 MB more while it is read.")
    tag_vocabulary: str | None = _setting(
        None, doc="Tag vocabulary: a file of your own tags, added to the shipped ones (see "
        "photoseek.tags.parse_user_vocabulary), or 'default'. Unset: the one the index was last tagged with.")
    tags: bool = _setting(True, doc="Tag new photos at the end of 'photoseek index' (photoseek.tags); "
                       "off: 'photoseek tags --update' tags them later.")
    tag_words: bool = _setting(True, doc="Words in plain queries that name tags ('an animal') bring "
                            "the photos carrying those tags into the ranking.")
    checkpoint_every: int = _setting(256, ge=1, doc="Commit progress every N embedded images.")
    ray_address: str | None = _setting(
        None, doc="Decode and embed on Ray: 'local' (start one here), 'auto' (the cluster this "
        "machine belongs to) or a cluster's address. Default: no Ray (indexer.ray_runner).")

    # Web service
    host: str = _setting("127.0.0.1")
    port: int = _setting(8000, ge=0, le=65535)
    worker_threads: int | None = _setting(
        None, ge=1, doc="Server threads for blocking work; default four per core, 8 to 40.")
    token: str | None = _setting(None, secret=True, doc="Access token; required when listening beyond loopback.")
    max_upload_bytes: int = _setting(25 * 1024 * 1024, ge=1)
    max_query_chars: int = _setting(500, ge=1)

    def __init__(self, _env_file: str | os.PathLike | None = ".env", **values) -> None:
        declared = {f.name: f for f in fields(self)}
        given = {**environment(declared, _env_file), **values}
        for f in declared.values():
            if f.name not in given:
                given[f.name] = f.default if f.default is not MISSING else f.default_factory()
        self.__dict__.update(_checked(declared, given))

    def replace(self, **changes) -> Settings:
        """A copy with ``changes``, each checked as in the constructor (the environment is not read again)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(_checked({f.name: f for f in fields(self)}, changes))
        return copy

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir.expanduser().resolve()
