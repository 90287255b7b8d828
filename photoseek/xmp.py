"""Automatic tags as keywords in XMP sidecar files (``photo.jpg.xmp``), for digiKam, darktable and
Lightroom: ``photoseek tags --xmp``. Off unless asked for.

Invariants: an original photo is never opened for writing; a sidecar photoseek did not write
(no ``photoseek:generator`` attribute) is never changed, only reported; a sidecar is replaced
atomically (a reader sees the old one or the new one). Keywords are ``dc:subject`` (every tag,
ancestors included) and ``lr:hierarchicalSubject`` (each scored tag's path from the top of the
hierarchy, ``animal|mammal|dog|golden retriever``), which all three programs read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from photoseek.files import atomic_write
from photoseek.tags import Vocabulary

GENERATOR = "photoseek"
MARK = "photoseek:generator"


@dataclass
class SidecarReport:
    written: int = 0
    unchanged: int = 0
    foreign: list[str] = field(default_factory=list)  # sidecars someone else wrote: left alone
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def sidecar_path(photo: str) -> Path:
    return Path(photo + ".xmp")


def hierarchy_paths(name: str, vocabulary: Vocabulary) -> list[str]:
    """Every path from a root of the hierarchy down to ``name``, as ``a|b|name``."""
    tag = vocabulary.tags.get(name)
    if tag is None or not tag.parents:
        return [name]
    return sorted({f"{above}|{name}" for parent in tag.parents for above in hierarchy_paths(parent, vocabulary)})


def render(tags: list[tuple[str, float, str | None]], vocabulary: Vocabulary, version: str) -> str:
    """The XMP packet for a photo's tags ((name, score, via), as the catalogue holds them)."""
    subjects = sorted({t for t, _, _ in tags})
    paths = sorted({p for t, _, via in tags if via is None for p in hierarchy_paths(t, vocabulary)})

    def bag(items: list[str]) -> str:
        return "".join(f"\n      <rdf:li>{escape(i)}</rdf:li>" for i in items)

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="photoseek">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"\n'
        '    xmlns:photoseek="https://photoseek.invalid/ns/1.0/"\n'
        f'    {MARK}={quoteattr(GENERATOR)} photoseek:vocabulary={quoteattr(version)}>\n'
        f'   <dc:subject>\n    <rdf:Bag>{bag(subjects)}\n    </rdf:Bag>\n   </dc:subject>\n'
        f'   <lr:hierarchicalSubject>\n    <rdf:Bag>{bag(paths)}\n    </rdf:Bag>\n   </lr:hierarchicalSubject>\n'
        '  </rdf:Description>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="w"?>\n'
    )


def write_sidecars(photos: list[tuple[str, list[tuple[str, float, str | None]]]], vocabulary: Vocabulary,
                   version: str) -> SidecarReport:
    """Write (or refresh) the sidecar of each (photo path, its tags)."""
    report = SidecarReport()
    for photo, tags in photos:
        path = sidecar_path(photo)
        text = render(tags, vocabulary, version)
        try:
            if path.exists() or path.is_symlink():
                if not path.is_file() or path.is_symlink():
                    report.foreign.append(str(path))
                    continue
                old = path.read_text(encoding="utf-8", errors="replace")
                if MARK not in old:
                    report.foreign.append(str(path))
                    continue
                if old == text:
                    report.unchanged += 1
                    continue
            atomic_write(path, text.encode("utf-8"))
            report.written += 1
        except OSError as exc:
            report.failed.append((str(path), exc.strerror or str(exc)))
    return report


def sidecars_for_index(catalogue, vocabulary: Vocabulary) -> SidecarReport:
    """Sidecars for every photo of the index that carries tags."""
    from sqlalchemy import select

    from photoseek.storage.schema import ImageRow
    from photoseek.tags import VOCABULARY_VERSION

    with catalogue.engine.connect() as conn:
        version = catalogue.get_meta(conn, VOCABULARY_VERSION) or vocabulary.version()
        rows = conn.execute(select(ImageRow.id, ImageRow.path).order_by(ImageRow.id)).all()
        photos = [(path, catalogue.tags_of(conn, image_id)) for image_id, path in rows]
    return write_sidecars([(os.fsdecode(p), t) for p, t in photos if t], vocabulary, version)
