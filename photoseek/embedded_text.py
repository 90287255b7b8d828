"""Captions and keywords that photo software wrote into the file: EXIF, IPTC and XMP.

Read in the indexer's decode workers from an image Pillow has opened (not yet decoded), so
this module imports only Pillow and defusedxml, never torch or the database.

Invariants:

* Never raises: a malformed block (EXIF, IPTC or XMP) costs that block's text, not the photo.
* Bounded: a caption is at most ``MAX_CAPTION_CHARS`` characters, at most ``MAX_KEYWORDS``
  keywords of at most ``MAX_KEYWORD_CHARS`` each; XMP packets over ``MAX_XMP_BYTES`` are not
  parsed, and XML entities are refused (defusedxml), so a hostile packet cannot blow up.
* Clean: text is decoded (UTF-8 first, then Latin-1; UTF-16LE for Windows' XP tags), NULs and
  control characters removed, whitespace collapsed; duplicates (any case) kept once, in the
  order of preference below; placeholders cameras write by themselves ("OLYMPUS DIGITAL
  CAMERA", "SONY DSC", ...) dropped, as they describe no photo.

Caption, most descriptive first: XMP dc:title, IPTC Headline, EXIF XPTitle, then XMP
dc:description, IPTC Caption-Abstract, EXIF ImageDescription, EXIF XPComment, XPSubject;
distinct texts are joined by newlines. Keywords: XMP dc:subject, IPTC Keywords, EXIF XPKeywords
(split on ';').
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from PIL import Image

MAX_CAPTION_CHARS = 2000
MAX_KEYWORDS = 64
MAX_KEYWORD_CHARS = 100
MAX_XMP_BYTES = 1 << 20  # real XMP packets are a few KB; larger ones are mostly embedded thumbnails or junk

_TAG_IMAGE_DESCRIPTION = 0x010E
_TAG_XP_TITLE = 0x9C9B
_TAG_XP_COMMENT = 0x9C9C
_TAG_XP_KEYWORDS = 0x9C9E
_TAG_XP_SUBJECT = 0x9C9F
_TAG_XMP = 700  # TIFF's XMLPacket

_IPTC_HEADLINE = (2, 105)
_IPTC_CAPTION = (2, 120)
_IPTC_KEYWORDS = (2, 25)
_IPTC_CHARSET = (1, 90)

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# Descriptions cameras and phones fill in by themselves: not a caption anyone wrote.
_PLACEHOLDERS = frozenset(s.casefold() for s in (
    "OLYMPUS DIGITAL CAMERA", "SONY DSC", "DIGITAL CAMERA", "KONICA MINOLTA DIGITAL CAMERA", "MINOLTA DIGITAL CAMERA",
    "SAMSUNG DIGITAL CAMERA", "DCIM", "DSC", "Default", "Image", "Picture", "Photo", "default image description",
    "Exif_JPEG_PICTURE", "Exif JPEG", "JPEG", "LEICA", "Created with GIMP", "Screenshot", "untitled",
))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LINES = re.compile(r"\s*\n\s*")


def read_embedded_text(img: Image.Image, exif: Image.Exif | None) -> tuple[str | None, tuple[str, ...]]:
    """``(caption, keywords)`` written into ``img``'s file (see the module docstring); never raises."""
    titles: list[str] = []
    descriptions: list[str] = []
    keywords: list[str] = []
    xmp = _safe(lambda: _xmp_text(_xmp_packet(img)), ([], [], []))
    iptc = _safe(lambda: _iptc(img), {})
    charset_utf8 = _iptc_is_utf8(iptc)
    exif_text = _safe(lambda: _exif_text(exif), ([], [], [], []))

    titles += xmp[0]
    titles += [t for t in (_iptc_text(v, charset_utf8) for v in _values(iptc.get(_IPTC_HEADLINE))) if t]
    titles += exif_text[0]
    descriptions += xmp[1]
    descriptions += [t for t in (_iptc_text(v, charset_utf8) for v in _values(iptc.get(_IPTC_CAPTION))) if t]
    descriptions += exif_text[1]
    keywords += xmp[2]
    keywords += [t for t in (_iptc_text(v, charset_utf8) for v in _values(iptc.get(_IPTC_KEYWORDS))) if t]
    keywords += exif_text[2]

    caption = "\n".join(_distinct(clean(t) for t in titles + descriptions + exif_text[3]))
    if len(caption) > MAX_CAPTION_CHARS:
        caption = caption[:MAX_CAPTION_CHARS].rstrip()
    words = []
    for k in _distinct(clean(k, one_line=True) for k in keywords):
        words.append(k[:MAX_KEYWORD_CHARS].rstrip())
        if len(words) == MAX_KEYWORDS:
            break
    return caption or None, tuple(words)


def clean(text: str | None, *, one_line: bool = False) -> str:
    """``text`` without NULs and control characters, whitespace collapsed (newlines kept unless ``one_line``)."""
    if not text:
        return ""
    text = _CONTROL.sub("", text.replace("\x00", ""))
    text = _SPACES.sub(" ", text)
    text = _LINES.sub(" " if one_line else "\n", text).strip()
    return "" if text.casefold() in _PLACEHOLDERS else text


def decode_text(raw: bytes) -> str:
    """Bytes of unknown encoding as text: UTF-8 when they are valid UTF-8, else Latin-1 (never fails)."""
    raw = raw.split(b"\x00", 1)[0] if raw.endswith(b"\x00") else raw.replace(b"\x00", b"")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _distinct(texts: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for text in texts:
        key = text.casefold()
        if text and key not in seen:
            seen.add(key)
            yield text


def _safe(read, default):
    try:
        return read()
    except Exception:  # hostile metadata must cost its text, never the photo
        return default


def _values(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# -- EXIF ------------------------------------------------------------------------------------


def _exif_text(exif: Image.Exif | None) -> tuple[list[str], list[str], list[str], list[str]]:
    """(titles, descriptions, keywords, subjects) from EXIF's ImageDescription and Windows' XP tags."""
    if exif is None:
        return [], [], [], []
    titles, descriptions, keywords, subjects = [], [], [], []
    description = _exif_ascii(exif.get(_TAG_IMAGE_DESCRIPTION))
    if description:
        descriptions.append(description)
    title = _xp(exif.get(_TAG_XP_TITLE))
    if title:
        titles.append(title)
    comment = _xp(exif.get(_TAG_XP_COMMENT))
    if comment:
        descriptions.append(comment)
    subject = _xp(exif.get(_TAG_XP_SUBJECT))
    if subject:
        subjects.append(subject)
    xp_keywords = _xp(exif.get(_TAG_XP_KEYWORDS))
    if xp_keywords:
        keywords += [k for k in xp_keywords.split(";") if k.strip()]
    return titles, descriptions, keywords, subjects


def _exif_ascii(value) -> str | None:
    """EXIF's 'ASCII' text. Pillow decodes it as Latin-1, but phones and editors write UTF-8:
    when the Latin-1 reading is UTF-8 bytes in disguise, read it as UTF-8."""
    if isinstance(value, bytes):
        return decode_text(value)
    if not isinstance(value, str):
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _xp(value) -> str | None:
    """Windows' XP* tags: UTF-16LE in a BYTE array (Pillow gives bytes or a tuple of ints)."""
    if isinstance(value, tuple) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        value = bytes(value)
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return None
    if len(value) % 2:
        value = value[:-1]
    return value.decode("utf-16-le", "replace").split("\x00", 1)[0]


# -- IPTC ------------------------------------------------------------------------------------


def _iptc(img: Image.Image) -> dict:
    if img.format not in ("JPEG", "MPO", "TIFF"):
        return {}  # Pillow's reader would look for IPTC in other formats' own ways; photos keep it in these
    from PIL import IptcImagePlugin

    return IptcImagePlugin.getiptcinfo(img) or {}


def _iptc_is_utf8(iptc: dict) -> bool:
    charset = iptc.get(_IPTC_CHARSET)
    return isinstance(charset, bytes) and charset.startswith(b"\x1b%G")  # ISO 2022 escape for UTF-8


def _iptc_text(value, utf8: bool) -> str | None:
    if not isinstance(value, bytes):
        return None
    if utf8:
        return value.replace(b"\x00", b"").decode("utf-8", "replace")
    return decode_text(value)  # no charset declared: most software writes UTF-8 anyway, older Latin-1


# -- XMP -------------------------------------------------------------------------------------


def _xmp_packet(img: Image.Image) -> bytes | None:
    """The raw XMP packet, wherever this format keeps it (Pillow puts it in ``info``)."""
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = img.info.get(key)
        if value:
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        value = tags.get(_TAG_XMP)
        if isinstance(value, (bytes, str)) and value:
            return value.encode("utf-8") if isinstance(value, str) else value
    return None


def _xmp_text(packet: bytes | None) -> tuple[list[str], list[str], list[str]]:
    """(titles, descriptions, keywords) from an XMP packet's Dublin Core fields."""
    if not packet or len(packet) > MAX_XMP_BYTES:
        return [], [], []
    from defusedxml import ElementTree

    start = packet.find(b"<x:xmpmeta")
    if start < 0:
        start = packet.find(b"<rdf:RDF")
    end = max(packet.rfind(b"</x:xmpmeta>") + len(b"</x:xmpmeta>"), packet.rfind(b"</rdf:RDF>") + len(b"</rdf:RDF>"))
    if start < 0 or end <= start:
        return [], [], []
    root = ElementTree.fromstring(packet[start:end], forbid_dtd=True)
    titles, descriptions, keywords = [], [], []
    for description in root.iter(f"{_RDF}Description"):
        # Short form: <rdf:Description dc:title="..."> (rare, but valid RDF).
        for attr, bucket in ((f"{_DC}title", titles), (f"{_DC}description", descriptions)):
            if description.get(attr):
                bucket.append(description.get(attr))
    for element, bucket in ((f"{_DC}title", titles), (f"{_DC}description", descriptions), (f"{_DC}subject", keywords)):
        for node in root.iter(element):
            bucket += _rdf_items(node)
    return titles, descriptions, keywords


def _rdf_items(node) -> list[str]:
    """The texts of an rdf:Alt / rdf:Bag / rdf:Seq, or of the element itself; in an Alt, the
    x-default entry first."""
    items = [li for li in node.iter(f"{_RDF}li")]
    if not items:
        return [node.text] if node.text and node.text.strip() else []
    items.sort(key=lambda li: li.get(_XML_LANG) != "x-default")
    return [li.text for li in items if li.text and li.text.strip()]
