"""Hostile and odd files: each is indexed correctly or skipped with a reason; the run finishes."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from sqlalchemy import select

import helpers
from photoseek.storage import schema as db
from photoseek.imaging import DecodeError, load_photo, open_image
from photoseek.indexer import Indexer
from photoseek.store import IndexFiles

# Files that cannot be shown as a picture, and the start of the reason we give.
BAD = {
    "broken.png": "not an image",
    "decompression_bomb.gif": "image too large",
    "empty.jpg": "empty file",
    "header_only.gif": "not an image",
    "not_an_image.jpg": "not an image",
    "truncated_photo.jpg": "corrupt or truncated",
    "ultrahdr.jpg": "corrupt or truncated",  # Pillow's test copy is cut short
}


def test_every_edge_file_is_indexed_or_skipped_with_reason(tmp_path, edge_dir, offline_encoder, settings_factory):
    photos = tmp_path / "edge"
    shutil.copytree(edge_dir, photos)
    index_dir = tmp_path / "index"
    summary = Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([photos], encoder=offline_encoder)

    engine = helpers.sqlite_engine(IndexFiles(index_dir).database)
    with engine.connect() as conn:
        indexed = {p.rsplit("/", 1)[1] for p in conn.execute(select(db.ImageRow.path)).scalars()}
        skipped = {p.rsplit("/", 1)[1]: r for p, r in conn.execute(select(db.SkippedFile.path, db.SkippedFile.reason))}
    engine.dispose()

    all_files = {p.name for p in edge_dir.iterdir()}
    assert indexed | set(skipped) == all_files
    assert not indexed & set(skipped)
    assert set(skipped) == set(BAD)
    for name, reason in skipped.items():
        assert reason.startswith(BAD[name]), (name, reason)
    assert summary.skipped == len(BAD) and summary.added == len(all_files) - len(BAD)

    # A second run does not retry unchanged bad files, nor lose them from the record.
    again = Indexer(index_dir, settings_factory(index_dir), show_progress=False).run([photos], encoder=offline_encoder)
    assert again.embedded == 0 and again.skipped == 0


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied(edge_dir, orientation):
    upright = load_photo(edge_dir / "hopper.jpg", 128).pixels.astype(np.int16)
    rotated_file = edge_dir / f"hopper_orientation_{orientation}.jpg"
    corrected = load_photo(rotated_file, 128).pixels.astype(np.int16)
    raw = np.asarray(Image.open(rotated_file).convert("RGB").resize((128, 128)), dtype=np.int16)
    assert np.abs(corrected - upright).mean() < 6  # JPEG noise only
    assert np.abs(raw - upright).mean() > 3 * np.abs(corrected - upright).mean()


@pytest.mark.parametrize("name,mode", [("pil_sample_cmyk.jpg", "CMYK"), ("1_trns.png", "1"), ("16bit.cropped.tif", "I;16"),
                                       ("anim_frame1.webp", None), ("frozenpond.mpo", None), ("hopper.bmp", None)])
def test_any_mode_becomes_rgb(edge_dir, name, mode):
    if mode:
        assert Image.open(edge_dir / name).mode == mode
    img, info = open_image((edge_dir / name).read_bytes())
    assert img.mode == "RGB" and img.size == (info.width, info.height)


def test_transparency_is_laid_on_white(edge_dir):
    img, _ = open_image((edge_dir / "1_trns.png").read_bytes())
    transparent = Image.open(edge_dir / "1_trns.png").convert("RGBA").getchannel("A")
    pixels = np.asarray(img)[np.asarray(transparent) == 0]
    assert len(pixels) and (pixels == 255).all()


def test_camera_metadata_is_read(edge_dir):
    _, info = open_image((edge_dir / "flower.webp").read_bytes())
    assert (info.camera_make, info.camera_model) == ("Canon", "Canon PowerShot S40")
    assert info.taken_at.year == 2003


def test_pixel_cap_refuses_bombs_before_decoding():
    img = Image.new("RGB", (5000, 5000))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with pytest.raises(DecodeError, match="image too large"):
        open_image(buf.getvalue(), max_pixels=10_000_000)
