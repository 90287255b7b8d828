"""Automatic tags: a vocabulary with a hierarchy, zero-shot scoring, and words in queries.

* **Vocabulary.** :func:`load_vocabulary` reads the shipped ``photoseek/data/vocabulary.json``
  (built from WordNet and the ImageNet-1k classes by ``tools/build_vocabulary.py``; WordNet is
  not needed at run time) plus, optionally, the user's own file (:func:`parse_user_vocabulary`).
  Every tag has a display name (its id), synonyms and parents; parents are tags, and the graph
  has no cycles (checked on loading).
* **Scoring.** A tag's text vector is the mean of the index's own encoder's embeddings of a few
  prompts ("a photo of a {}.", ...), re-normalised (CLIP's prompt ensembling; the offline encoder
  uses the one template its image vectors are built from, :func:`prompts_for`). A photo's score for a
  tag is the cosine of the two. Calibration is per photo: a tag is kept when its score stands
  :data:`Z_THRESHOLD` standard deviations above the photo's mean score over the whole vocabulary
  and within :data:`Z_GAP` of the photo's best tag (at most :data:`MAX_DIRECT` tags a photo). This adapts to each encoder's score scale and
  needs no other photos, so a photo's tags do not change when others are added.
* **Hierarchy.** A photo keeps the ancestors of its tags as tags too (``via`` says which tag they
  came from, their score is the best of their descendants'): ``tag:animal`` and the facet are
  then plain lookups, and the vocabulary is fixed per index state anyway (a changed vocabulary
  re-tags every photo, from stored embeddings).
* **Words in queries.** :func:`tags_in_query` maps a plain query's words to tags (names,
  synonyms, plurals): "an animal" -> animal. Pure functions, unit-tested without a model.

The vocabulary's :meth:`Vocabulary.version` (a hash of the tags, prompts and calibration) is
what the catalogue records per tagged photo: a photo tagged under another version is re-tagged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from photoseek.errors import BadInput

log = logging.getLogger(__name__)

DEFAULT_VOCABULARY = Path(__file__).resolve().parent / "data" / "vocabulary.json"
PROMPTS = ("a photo of a {}.", "a photo of the {}.", "a picture of {}.", "{}")
Z_THRESHOLD = 4.0  # standard deviations above the photo's mean tag score (chosen with bench/tags.py)
Z_GAP = 1.0  # ... and within this many of the photo's best tag (its alternatives, not every near miss)
MAX_DIRECT = 6  # directly scored tags kept per photo, best first
SCORING = f"zscore:{Z_THRESHOLD}:gap{Z_GAP}:max{MAX_DIRECT}"  # part of the version: a new rule re-tags
TAG_NAME = re.compile(r"^[a-z0-9][a-z0-9 '&.+-]{0,79}$")
# Words that say nothing about what is in a photo.
STOP_WORDS = frozenset("a an the some any of with and in on at photo photos picture pictures image images "
                       "my our your show me find".split())


@dataclass(frozen=True)
class Tag:
    name: str
    synonyms: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()


class Vocabulary:
    """Tags by name, with their hierarchy. Immutable once built."""

    def __init__(self, tags: Iterable[Tag], *, source: str = "default"):
        self.tags: dict[str, Tag] = {t.name: t for t in tags}
        self.source = source
        for tag in self.tags.values():
            for parent in tag.parents:
                if parent not in self.tags:
                    raise BadInput(f"tag vocabulary: {tag.name!r} names a parent {parent!r} that is not a tag; "
                                   "add it as a tag of its own, or drop it")
        self._ancestors: dict[str, frozenset[str]] = {}
        for name in self.tags:
            self._ancestors[name] = self._walk_up(name, ())
        children: dict[str, set[str]] = {n: set() for n in self.tags}
        for name, above in self._ancestors.items():
            for parent in above:
                children[parent].add(name)
        self._descendants = {n: frozenset(c) for n, c in children.items()}
        self._words = _word_index(self.tags.values())

    def _walk_up(self, name: str, path: tuple[str, ...]) -> frozenset[str]:
        if name in path:
            raise BadInput(f"tag vocabulary: {' > '.join(path + (name,))} is a cycle; a tag cannot be its own ancestor")
        if name in self._ancestors:
            return self._ancestors[name]
        out: set[str] = set()
        for parent in self.tags[name].parents:
            out |= {parent} | self._walk_up(parent, path + (name,))
        return frozenset(out)

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, name: str) -> bool:
        return name in self.tags

    @property
    def names(self) -> list[str]:
        return list(self.tags)

    def ancestors(self, name: str) -> frozenset[str]:
        return self._ancestors[name]

    def descendants(self, name: str) -> frozenset[str]:
        return self._descendants[name]

    def lookup(self, word: str) -> str | None:
        """The tag a word or phrase names (its name, a synonym, or a plural of one), or None."""
        return self._words.get(_normalise(word)) or next(
            (self._words[s] for s in _singulars(_normalise(word)) if s in self._words), None)

    def resolve(self, word: str, parameter: str = "tag") -> str:
        """The tag ``word`` names; :class:`BadInput` naming ``parameter`` when there is none."""
        name = self.lookup(word.replace("-", " ").replace("_", " ")) or self.lookup(word)
        if name is None:
            import difflib

            close = difflib.get_close_matches(_normalise(word.replace("-", " ")), list(self._words), n=1)
            hint = f"did you mean {self._words[close[0]].replace(' ', '-')}? " if close else ""
            raise BadInput(f"{parameter}: {word!r} is not a tag; {hint}'photoseek tags' lists the tags photos have "
                           "(write spaces as hyphens: tag:musical-instrument)")
        return name

    def version(self) -> str:
        """A hash of what tagging depends on: tags, parents, prompts and the calibration rule."""
        data = {"tags": [[t.name, list(t.parents)] for t in sorted(self.tags.values(), key=lambda t: t.name)],
                "prompts": list(PROMPTS), "scoring": SCORING}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w'&+.-]+", " ", text.lower()).split())


def _singulars(word: str) -> list[str]:
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        out.append(word[:-1])
    return out


def _word_index(tags: Iterable[Tag]) -> dict[str, str]:
    """Word or phrase -> tag. A tag's own name wins over another's synonym."""
    index: dict[str, str] = {}
    tags = list(tags)
    for tag in tags:
        for synonym in tag.synonyms:
            index.setdefault(_normalise(synonym), tag.name)
    for tag in tags:
        index[_normalise(tag.name)] = tag.name
    return index


@cache
def _default_tags() -> tuple[Tag, ...]:
    data = json.loads(DEFAULT_VOCABULARY.read_text(encoding="utf-8"))
    return tuple(Tag(name, tuple(entry["synonyms"]), tuple(entry["parents"])) for name, entry in data["tags"].items())


def load_vocabulary(user_file: str | Path | None = None) -> Vocabulary:
    """The shipped vocabulary, extended by the user's file when given (see :func:`parse_user_vocabulary`)."""
    tags = {t.name: t for t in _default_tags()}
    if not user_file:
        return Vocabulary(tags.values())
    path = Path(user_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--vocabulary / PHOTOSEEK_TAG_VOCABULARY: cannot read {path}: "
                       f"{getattr(exc, 'strerror', None) or exc}; give a UTF-8 text file") from None
    for tag in parse_user_vocabulary(text, source=str(path)):
        old = tags.get(tag.name)
        if old is not None:  # a known tag: the user's synonyms and parents are added to its own
            tag = Tag(tag.name, tuple(dict.fromkeys(old.synonyms + tag.synonyms)),
                      tuple(dict.fromkeys(old.parents + tag.parents)))
        tags[tag.name] = tag
    return Vocabulary(tags.values(), source=str(path.resolve()))


def parse_user_vocabulary(text: str, *, source: str = "vocabulary file") -> list[Tag]:
    """Tags from a user's vocabulary file: one a line, ``name > parent, parent = synonym, synonym``
    (both parts optional, names lower case), ``#`` starts a comment. E.g.::

        sailing boat > boat = sailboat, yacht
        grandma's garden > garden
    """
    tags = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line, _, synonyms = line.partition("=")
        name, _, parents = line.partition(">")
        name = _normalise(name)
        if not TAG_NAME.match(name):
            raise BadInput(f"{source}, line {number}: {raw.strip()!r} does not start with a tag name "
                           "(letters, digits, spaces, at most 80 characters)")
        tags.append(Tag(name, tuple(s for s in (_normalise(w) for w in synonyms.split(",")) if s),
                        tuple(p for p in (_normalise(w) for w in parents.split(",")) if p)))
    return tags


# -- words in plain queries ------------------------------------------------------------------------


def tags_in_query(query: str, vocabulary: Vocabulary, *, max_words: int = 4) -> list[str]:
    """The tags a plain query's words name, longest phrase first, each word used once: "an animal"
    -> ["animal"], "a musical instrument on a beach" -> ["musical instrument", "beach"]. Words that
    say nothing (articles, "photo of") are skipped; plurals find their singular."""
    words = _normalise(query).split()
    found: list[str] = []
    used = [w in STOP_WORDS for w in words]
    for size in range(min(max_words, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            if any(used[start:start + size]):
                continue
            name = vocabulary.lookup(" ".join(words[start:start + size]))
            if name is not None:
                used[start:start + size] = [True] * size
                if name not in found:
                    found.append(name)
    return found


# -- scoring ---------------------------------------------------------------------------------------


def prompts_for(encoder) -> tuple[str, ...]:
    """The prompts an encoder's tags are embedded with: its own (``tag_prompts``: the offline encoder's
    image vectors are mixtures of texts made with one template, so that template is what matches
    them), else :data:`PROMPTS`, CLIP's kind of ensemble."""
    return tuple(getattr(encoder, "tag_prompts", None) or PROMPTS)


def tag_matrix(vocabulary: Vocabulary, encode_texts: Callable[[list[str]], np.ndarray], *,
               prompts: tuple[str, ...] = PROMPTS, cache_key: str | None = None) -> np.ndarray:
    """(tags, dim) unit text vectors, in ``vocabulary.names`` order: each tag's prompts embedded,
    averaged, re-normalised. Cached on disk per ``cache_key`` (the model id), tag by tag: embedding a
    thousand tags' prompts takes tens of seconds on a small CPU, reading them back milliseconds, and
    a user's vocabulary file only costs its own new tags."""
    names = vocabulary.names
    path = _cache_path(cache_key, prompts) if cache_key else None
    known: dict[str, np.ndarray] = {}
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                known = {str(n): v for n, v in zip(data["names"], data["vectors"]) if np.isfinite(v).all()}
        except (OSError, ValueError, KeyError):
            known = {}
    missing = [n for n in names if n not in known]
    if missing:
        texts = [p.format(n) for n in missing for p in prompts]
        vectors = np.concatenate([np.asarray(encode_texts(texts[i:i + 256]), dtype=np.float32)
                                  for i in range(0, len(texts), 256)])
        fresh = vectors.reshape(len(missing), len(prompts), -1).mean(axis=1)
        fresh /= np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
        known.update(zip(missing, fresh))
        if path is not None:
            _save_cache(path, known)
    return np.stack([known[n] for n in names]).astype(np.float32, copy=False)


def _cache_path(model_id: str, prompts: tuple[str, ...]) -> Path:
    import platformdirs

    digest = hashlib.sha256(json.dumps([model_id, list(prompts)]).encode()).hexdigest()[:20]
    return Path(platformdirs.user_cache_dir("photoseek", appauthor=False)) / "tags" / f"tags-{digest}.npz"


def _save_cache(path: Path, known: dict[str, np.ndarray]) -> None:
    from photoseek.files import atomic_write

    names = sorted(known)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.savez(fh, names=np.asarray(names), vectors=np.stack([known[n] for n in names])))
    except OSError as exc:  # a read-only home only costs the time next run
        log.warning("could not cache tag embeddings in %s: %s", path.parent, exc)


@dataclass(frozen=True)
class PhotoTags:
    """One photo's tags: (tag, score, via) with ``via`` the tag an ancestor was derived from (None: scored)."""

    image_id: int
    tags: list[tuple[str, float, str | None]]


def choose_tags(scores: np.ndarray, names: list[str], vocabulary: Vocabulary, *, z_threshold: float = Z_THRESHOLD,
                z_gap: float = Z_GAP, max_direct: int = MAX_DIRECT) -> list[tuple[str, float, str | None]]:
    """The tags one photo keeps from its scores over the vocabulary (``names`` order): those at
    least ``z_threshold`` standard deviations above the photo's mean score and within ``z_gap`` of
    its best, the best ``max_direct``, then their ancestors (scored as their best descendant, ``via`` it)."""
    mean, std = float(scores.mean()), float(scores.std())
    if std <= 1e-9 or not len(scores):
        return []
    z = (scores - mean) / std
    order = np.argsort(-scores, kind="stable")
    floor = max(z_threshold, float(z[order[0]]) - z_gap)
    direct = [(names[i], float(scores[i])) for i in order[:max_direct] if z[i] >= floor]
    out: dict[str, tuple[float, str | None]] = {name: (score, None) for name, score in direct}
    for name, score in direct:
        for ancestor in vocabulary.ancestors(name):
            if ancestor not in out or (out[ancestor][1] is not None and out[ancestor][0] < score):
                out[ancestor] = (score, name)
    return sorted(((n, s, v) for n, (s, v) in out.items()), key=lambda t: (-t[1], t[2] is not None, t[0]))


def tag_photos(ids: np.ndarray, vectors: np.ndarray, matrix: np.ndarray, vocabulary: Vocabulary,
               **rule) -> list[PhotoTags]:
    """Tags for a batch of photos from their stored embeddings (no photo is decoded)."""
    names = vocabulary.names
    scores = np.asarray(vectors, dtype=np.float32) @ matrix.T
    return [PhotoTags(int(i), choose_tags(row, names, vocabulary, **rule)) for i, row in zip(ids, scores)]


# -- tagging an index ------------------------------------------------------------------------------

TAG_BATCH = 2000  # photos a transaction
VOCABULARY_VERSION, VOCABULARY_FILE = "tag_vocabulary", "tag_vocabulary_file"  # catalogue meta keys
DEFAULT = "default"


def vocabulary_for(catalogue, conn, setting: str | None) -> Vocabulary:
    """The vocabulary an index is tagged with: ``setting`` (a file, or "default") when given, else the
    one the index was last tagged with (recorded in its catalogue), else the shipped one."""
    if setting:
        return load_vocabulary(None if setting == DEFAULT else setting)
    recorded = catalogue.get_meta(conn, VOCABULARY_FILE)
    if not recorded or recorded == DEFAULT:
        return load_vocabulary()
    try:
        return load_vocabulary(recorded)
    except BadInput as exc:  # e.g. a server on another machine, without the file: search on, with the shipped tags
        log.warning("using the shipped tag vocabulary: %s", exc.message)
        return load_vocabulary()


def tag_pending(catalogue, vocabulary: Vocabulary, get_encoder: Callable[[], object], *,
                model_id: str, generation: int, stop=None) -> tuple[int, int]:
    """Tag every photo not yet tagged with ``vocabulary``, from its stored embedding (nothing is
    decoded). ``get_encoder`` returns the index's encoder; it is called only when there is something
    to tag. Each batch is one transaction (its tags, its photos marked tagged,
    the generation bumped so searchers reload). Returns (photos tagged, the new generation)."""
    version = vocabulary.version()
    with catalogue.engine.connect() as conn:
        pending = catalogue.untagged_ids(conn, version)
    done = 0
    if len(pending):
        encoder = get_encoder()
        matrix = tag_matrix(vocabulary, encoder.encode_texts, prompts=prompts_for(encoder), cache_key=model_id)
        for start in range(0, len(pending), TAG_BATCH):
            if stop is not None and stop.is_set():
                break
            with catalogue.engine.connect() as conn:
                ids, vectors = catalogue.embeddings_of(conn, pending[start:start + TAG_BATCH])
            tagged = tag_photos(ids, vectors, matrix, vocabulary)
            with catalogue.sessions.begin() as session:
                catalogue.write_tags(session, tagged, version)
                generation += 1
                catalogue.set_generation(session, generation)
            done += len(tagged)
    if stop is None or not stop.is_set():
        with catalogue.sessions.begin() as session:
            if catalogue.get_meta(session, VOCABULARY_VERSION) != version:
                catalogue.set_meta(session, VOCABULARY_VERSION, version)
                catalogue.set_meta(session, VOCABULARY_FILE, vocabulary.source)
    return done, generation
