"""Which writing systems an encoder's text side reads, and a hint when a query is in another.

An English-only encoder given "кошка" still returns photos, ranked by noise. Telling the
user costs one pass over the query's letters: the dominant Unicode script (Cyrillic, Han,
Arabic, Greek, ...) is cheap and certain, unlike guessing a language. A query in a Latin-script
language other than English ("eine Katze") is not detected: its letters are the same.

Pure functions, no model and no torch: the web service, the page and the command line call
:func:`language_hint` with the index's model id.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MULTILINGUAL_OFFLINE = "offline:multilingual"
MULTILINGUAL_CLIP = "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"

# Unicode character-name prefix -> script. Kana and Han are both Japanese or Chinese text.
_PREFIXES = (
    ("LATIN", "Latin"), ("CYRILLIC", "Cyrillic"), ("GREEK", "Greek"), ("ARABIC", "Arabic"),
    ("HEBREW", "Hebrew"), ("CJK", "Han"), ("HIRAGANA", "Kana"), ("KATAKANA", "Kana"),
    ("HALFWIDTH KATAKANA", "Kana"), ("HANGUL", "Hangul"), ("THAI", "Thai"), ("DEVANAGARI", "Devanagari"),
    ("BENGALI", "Bengali"), ("TAMIL", "Tamil"), ("TELUGU", "Telugu"), ("GUJARATI", "Gujarati"),
    ("GURMUKHI", "Gurmukhi"), ("KANNADA", "Kannada"), ("MALAYALAM", "Malayalam"), ("SINHALA", "Sinhala"),
    ("ARMENIAN", "Armenian"), ("GEORGIAN", "Georgian"), ("ETHIOPIC", "Ethiopic"), ("KHMER", "Khmer"),
    ("LAO", "Lao"), ("MYANMAR", "Myanmar"), ("TIBETAN", "Tibetan"), ("MONGOLIAN", "Mongolian"),
)

# What each text side reads. English-only models read Latin letters (and only English well).
ENGLISH_ONLY = frozenset({"Latin"})
# USE multilingual v3: ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh.
USE_MULTILINGUAL = frozenset({"Latin", "Cyrillic", "Arabic", "Han", "Kana", "Hangul", "Thai"})
USE_LANGUAGES = "Arabic, Chinese, Dutch, English, French, German, Italian, Japanese, Korean, Polish, " \
                "Portuguese, Russian, Spanish, Thai, Turkish"


def char_script(ch: str) -> str | None:
    """The script of one letter ("Latin", "Cyrillic", "Han", ...), or None for a non-letter."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    for prefix, script in _PREFIXES:
        if name.startswith(prefix):
            return script
    return name.split(" ", 1)[0].capitalize() if name else "Unknown"


def script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in text:
        script = char_script(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def dominant_script(text: str) -> str | None:
    """The script most of the text's letters are in (ties: the first seen); None without letters."""
    counts = script_counts(text)
    return max(counts, key=counts.get) if counts else None


def unsupported_script(text: str, supported: frozenset[str]) -> str | None:
    """The script of the text when more than half of its letters are in scripts outside
    ``supported`` (that script: the commonest of them), else None: "кошка" gets a hint from an
    English-only encoder, "Moscow at night" or "the Москва river" does not."""
    counts = script_counts(text)
    total = sum(counts.values())
    outside = {s: n for s, n in counts.items() if s not in supported}
    if not total or sum(outside.values()) * 2 <= total:
        return None
    return max(outside, key=outside.get)


def supported_scripts(model_id: str | None) -> frozenset[str] | None:
    """The scripts an encoder's text side reads; None: any (or unknown, so no hint)."""
    if not model_id:
        return None
    name = model_id.partition(":")[0].lower()
    if model_id == MULTILINGUAL_OFFLINE:
        return USE_MULTILINGUAL
    if name == "offline":
        return ENGLISH_ONLY
    # open_clip: XLM-RoBERTa (100 languages) and NLLB (200) text towers, and SigLIP's i18n
    # tokenizer, read many scripts; every other pretrained CLIP was trained on English captions.
    if name.startswith(("xlm-roberta", "nllb")) or "i18n" in name:
        return None
    return ENGLISH_ONLY


@dataclass(frozen=True)
class LanguageHint:
    script: str  # the query's script, e.g. "Cyrillic"
    model: str  # the index's encoder
    suggested_model: str | None  # one that reads it
    message: str


def language_hint(model_id: str | None, texts: list[str] | tuple[str, ...]) -> LanguageHint | None:
    """A hint when the query's words are mostly in a script the index's encoder cannot read, else None."""
    supported = supported_scripts(model_id)
    text = " ".join(t for t in texts if t)
    script = unsupported_script(text, supported) if supported is not None and text else None
    if script is None:
        return None
    if supported == USE_MULTILINGUAL:
        suggested = MULTILINGUAL_CLIP
        message = (f"This query is in {script} script, which this index's encoder ({model_id}) does not read: it "
                   f"knows {USE_LANGUAGES}, so these results are likely unrelated to it. A CLIP model with a "
                   f"multilingual text side reads about 100 languages: index with --model {suggested} "
                   "(its weights need one download).")
    else:
        offline = model_id is not None and model_id.startswith("offline:")
        readable_offline = script in USE_MULTILINGUAL
        suggested = MULTILINGUAL_OFFLINE if offline and readable_offline else MULTILINGUAL_CLIP
        if suggested == MULTILINGUAL_OFFLINE:
            also = f" (or --model {MULTILINGUAL_CLIP}, whose weights need one download)"
        elif readable_offline:
            also = f" (or --model {MULTILINGUAL_OFFLINE}: bundled, no download, lower quality)"
        else:
            also = " (its weights need one download)"
        message = (f"This query is in {script} script, but this index's encoder ({model_id}) understands English "
                   f"only, so these results are likely unrelated to it. Search in English, or re-index with a "
                   f"multilingual encoder: photoseek index --rebuild --model {suggested}{also}.")
    return LanguageHint(script=script, model=model_id or "", suggested_model=suggested, message=message)
