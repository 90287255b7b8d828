"""Speed must not cost correctness.

* The fast path for progressive JPEGs (AC scans dropped before a 1/8-scale decode) gives
  the same pixels, bit for bit, as decoding the whole file.
* The image and text towers in bfloat16 agree with float32 on real photos and queries:
  cosine >= 0.999 for every one, and the top-10 neighbours stay the same (up to swaps
  between near-ties).

No CLIP weights can be downloaded in CI, so ViT-B-32 runs with random weights: the
arithmetic (and so the rounding) is the same as with trained weights.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from photoseek import imaging
from helpers import top10_stable

REPO = Path(__file__).resolve().parent.parent
REAL_LARGE = REPO / "data" / "large"  # two real progressive camera JPEGs (10 MP), see data/PHOTOS_README.md

needs_turbo = pytest.mark.skipif(not features.check_feature("libjpeg_turbo"), reason="fast path needs libjpeg-turbo")


def _reference_pixels(data: bytes, size: int) -> np.ndarray:
    """Pillow's own draft-mode decode of the whole file."""
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (size, size))
    img.load()
    return np.asarray(img.convert("RGB"))


def _progressive(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", progressive=True, **save)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_photo(samples_dir) -> Image.Image:
    """A real photo at 2400 x 1920: large enough for a 1/8-scale decode to 224."""
    with Image.open(samples_dir / "mountain.jpg") as img:
        return img.convert("RGB").resize((2400, 1920), Image.BICUBIC)


@needs_turbo
@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["4:4:4", "4:2:2", "4:2:0"])
def test_fast_progressive_decode_is_bit_exact(big_photo, subsampling):
    data = _progressive(big_photo, quality=90, subsampling=subsampling)
    reduced = imaging.progressive_dc_stream(data)
    assert reduced is not None and len(reduced) < len(data) // 2
    img, info = imaging.open_image(data, draft_size=224)
    assert (info.width, info.height) == (2400, 1920)
    assert np.array_equal(np.asarray(img), _reference_pixels(data, 224))


@needs_turbo
def test_fast_progressive_decode_grey_and_restart_markers(big_photo):
    grey = _progressive(big_photo.convert("L"), quality=85)
    img, _ = imaging.open_image(grey, draft_size=224)
    assert np.array_equal(np.asarray(img), _reference_pixels(grey, 224))
    try:
        restarts = _progressive(big_photo, quality=85, restart_marker_rows=1)
    except TypeError:  # Pillow without restart-marker support
        pytest.skip("this Pillow cannot write restart markers")
    img, _ = imaging.open_image(restarts, draft_size=224)
    assert np.array_equal(np.asarray(img), _reference_pixels(restarts, 224))


@needs_turbo
def test_fast_path_leaves_other_files_alone(big_photo):
    baseline = io.BytesIO()
    big_photo.save(baseline, "JPEG", quality=90)
    assert imaging.progressive_dc_stream(baseline.getvalue()) is None  # nothing to drop
    small = _progressive(big_photo.resize((1200, 960)), quality=90)  # decodes at 1/4: AC data is used
    img, _ = imaging.open_image(small, draft_size=224)
    assert np.array_equal(np.asarray(img), _reference_pixels(small, 224))
    # A truncated progressive file is still reported as corrupt, not silently decoded from its DC scans.
    data = _progressive(big_photo, quality=90)
    with pytest.raises(imaging.DecodeError, match="corrupt or truncated"):
        imaging.open_image(data[: len(data) * 2 // 3], draft_size=224)


@needs_turbo
def test_fast_progressive_decode_real_photos():
    checked = 0
    for path in sorted(REAL_LARGE.glob("*.jpg")):
        data = path.read_bytes()
        img, _ = imaging.open_image(data, draft_size=224)
        assert np.array_equal(np.asarray(img), _reference_pixels(data, 224)), path.name
        checked += imaging.progressive_dc_stream(data) is not None
    assert checked > 0


# -- bf16 against fp32 ---------------------------------------------------------------------------


def _photos(samples_dir: Path, limit: int = 48) -> np.ndarray:
    paths = sorted(p for p in samples_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if REAL_LARGE.is_dir():
        paths += sorted(REAL_LARGE.glob("*.jpg"))[: max(0, limit - len(paths))]
    return np.stack([imaging.load_photo(p, 224).pixels for p in paths[:limit]])


def _embed(encoder, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([encoder.encode_pixels(pixels[i:i + 16]) for i in range(0, len(pixels), 16)])


QUERIES = ["a cat", "a cup of coffee", "a rocket", "a sea turtle", "a guitar", "a dog on a beach at sunset",
           "a snowy mountain", "an old red car", "two kids playing football in the park", "a bowl of soup",
           "a lighthouse in the fog", "a birthday cake with candles"]


@pytest.fixture(scope="module")
def vit_b32_fp32_and_bf16(tmp_path_factory):
    """ViT-B-32 with random weights, loaded in fp32 and as photoseek runs it here ("auto": bf16)."""
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    from photoseek.encoders import load_encoder
    from photoseek.encoders.precision import native_bf16_supported

    if not native_bf16_supported():
        pytest.skip("no native bf16 on this CPU: photoseek uses fp32 here")
    cached = REPO / "bench" / "results" / "cache" / "vit-b-32-random.pt"
    if cached.is_file():
        checkpoint = cached
    else:
        torch.manual_seed(0)
        checkpoint = tmp_path_factory.mktemp("clip") / "vit-b-32-random.pt"
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), checkpoint)
    bf16 = load_encoder(f"ViT-B-32:{checkpoint}", precision="auto")
    assert bf16.dtype == torch.bfloat16  # what photoseek uses on this CPU
    return load_encoder(f"ViT-B-32:{checkpoint}", precision="fp32"), bf16


@pytest.mark.slow
def test_vit_b32_bf16_agrees_with_fp32(vit_b32_fp32_and_bf16, samples_dir):
    fp32_encoder, bf16_encoder = vit_b32_fp32_and_bf16
    pixels = _photos(samples_dir)
    fp32 = _embed(fp32_encoder, pixels)
    bf16 = _embed(bf16_encoder, pixels)
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    s32, s16 = fp32 @ fp32.T, bf16 @ bf16.T
    np.fill_diagonal(s32, -np.inf)  # a photo is not its own neighbour
    np.fill_diagonal(s16, -np.inf)
    top10_stable(s32, s16, tolerance=0.002)


@pytest.mark.slow
def test_vit_b32_text_tower_bf16_agrees_with_fp32(vit_b32_fp32_and_bf16, samples_dir):
    """Queries too: each text vector within cosine 0.999 of fp32, and each query's top 10
    photos (ranked against fp32 photo vectors, as an index built in fp32 would be) unchanged."""
    fp32_encoder, bf16_encoder = vit_b32_fp32_and_bf16
    photos = _embed(fp32_encoder, _photos(samples_dir))
    fp32, bf16 = fp32_encoder.encode_texts(QUERIES), bf16_encoder.encode_texts(QUERIES)
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    top10_stable(fp32 @ photos.T, bf16 @ photos.T, tolerance=0.002)


@pytest.mark.slow
def test_offline_encoder_stays_fp32(offline_encoder):
    """bf16 would make the offline tower ~2.5x faster, but its ConSE vectors do not survive it
    (cosine down to ~0.994 on real photos, top-10 lists reshuffled): "auto" must keep fp32."""
    import torch

    assert offline_encoder.dtype == torch.float32
