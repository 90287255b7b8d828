"""Loading CLIP weights lean (photoseek.encoders.lean_load): one copy of the image tower, in its
run-time precision, and the text tower only once a text is encoded; the vectors are open_clip's own.

ViT-B-32 with random weights (no weights can be downloaded in CI), compared with the model as
open_clip itself loads it from the same file, in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import top10_stable
from photoseek import imaging

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from photoseek.encoders import clip_text, load_encoder  # noqa: E402
from photoseek.encoders import lean_load, pages  # noqa: E402

QUERIES = ["a cat", "a dog on a beach at sunset", "a snowy mountain", "an old red car", "a bowl of soup"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lean") / "vit-b-32-random.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def reference(checkpoint):
    """open_clip's own float32 model from the same file."""
    return open_clip.create_model("ViT-B-32", pretrained=str(checkpoint)).eval()


@pytest.fixture(scope="module")
def photos(samples_dir) -> np.ndarray:
    paths = sorted(p for p in samples_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:24]
    return np.stack([imaging.load_photo(p, 224).pixels for p in paths])


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory):
    """A user cache folder without any exported tower, for this module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def lean(checkpoint, empty_cache):
    """The encoder as the indexer loads it, first in an empty cache (so it exports the text tower)."""
    return load_encoder(f"ViT-B-32:{checkpoint}")


@pytest.fixture(scope="module")
def lean_texts(checkpoint, lean):
    """Another such encoder, for the tests that encode texts (``lean`` keeps its text tower unloaded)."""
    return load_encoder(f"ViT-B-32:{checkpoint}")


def _reference_images(model, encoder, pixels: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(encoder.input_spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.input_spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.encode_image((x - mean) / std, normalize=True).numpy()


def _reference_texts(model, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_text(open_clip.get_tokenizer("ViT-B-32")(texts), normalize=True).numpy()


def test_indexing_loads_one_image_tower_in_its_precision_and_no_text_tower(checkpoint, lean):
    encoder = lean
    visual = dict(encoder._model.visual.named_parameters())
    assert visual and all(p.dtype == encoder.dtype and p.device.type == "cpu" for p in visual.values())
    # The text tower waits on the meta device (no memory) until a text is encoded.
    assert not encoder.text_tower_loaded
    assert encoder._model.token_embedding.weight.device.type == "meta"
    # ... but it was read once, to export it for searches without torch.
    exported = clip_text.path_for(encoder.model_id)
    assert (exported / "meta.json").is_file()
    encoder = load_encoder(f"ViT-B-32:{checkpoint}")
    encoder.encode_texts(["a photo"])
    assert encoder.text_tower_loaded
    assert encoder._model.token_embedding.weight.dtype == encoder.dtype


def test_image_vectors_are_open_clips_own(lean, reference, photos):
    encoder = lean
    ours = np.concatenate([encoder.encode_pixels(photos[i:i + 12]) for i in range(0, len(photos), 12)])
    theirs = _reference_images(reference, encoder, photos)
    assert (ours * theirs).sum(axis=1).min() >= 0.999
    s_ref, s_ours = theirs @ theirs.T, ours @ ours.T
    np.fill_diagonal(s_ref, -np.inf)
    np.fill_diagonal(s_ours, -np.inf)
    top10_stable(s_ref, s_ours, tolerance=0.002)
    if encoder.dtype == torch.float32:  # no conversion at all: the same numbers
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_text_vectors_are_open_clips_own_once_loaded(lean_texts, reference, photos):
    encoder = lean_texts
    ours, theirs = encoder.encode_texts(QUERIES), _reference_texts(reference, QUERIES)
    assert (ours * theirs).sum(axis=1).min() >= 0.999
    images = _reference_images(reference, encoder, photos)
    top10_stable(theirs @ images.T, ours @ images.T, tolerance=0.002)
    # The tower exported at load gives open_clip's float32 answer too.
    exported = clip_text.ClipTextTower(encoder.model_id, clip_text.path_for(encoder.model_id))
    assert (exported.encode_texts(QUERIES) * theirs).sum(axis=1).min() >= 0.999


def test_safetensors_and_wrapped_checkpoints_load_the_same(checkpoint, lean_texts, tmp_path):
    """A .safetensors file (read with pread, tensor by tensor) and a torch.save of {'state_dict':
    {'module.' + key: ...}} (a training script's checkpoint) give the .pt file's vectors exactly."""
    from safetensors.torch import save_file

    state = torch.load(checkpoint, weights_only=True)
    safe = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, safe)
    wrapped = tmp_path / "trained.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    want = lean_texts
    for path in (safe, wrapped):
        got = load_encoder(f"ViT-B-32:{path}")
        assert not got.text_tower_loaded  # read lean, not open_clip's way
        np.testing.assert_array_equal(got.encode_pixels(pixels), want.encode_pixels(pixels))
        np.testing.assert_array_equal(got.encode_texts(QUERIES), want.encode_texts(QUERIES))


def test_a_checkpoint_the_lean_loader_does_not_read_loads_open_clips_way(checkpoint, lean, tmp_path):
    """Keys in OpenAI's old text layout (open_clip converts them) are not read lean: the model
    comes from open_clip's loader, both towers loaded, with the same vectors."""
    state = torch.load(checkpoint, weights_only=True)
    with torch.device("meta"):
        model = open_clip.create_model("ViT-B-32", pretrained=None, device="meta")
    with pytest.raises(lean_load.NotLean):
        renamed = tmp_path / "renamed.pt"
        torch.save({("text." + k if k.startswith("transformer.") else k): v for k, v in state.items()}, renamed)
        lean_load.load_into(model, str(renamed), dtype=torch.float32)
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)  # not a zip: no memory map
    encoder = load_encoder(f"ViT-B-32:{legacy}")
    assert encoder.text_tower_loaded
    pixels = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(encoder.encode_pixels(pixels), lean.encode_pixels(pixels))


def _rss_file_mb() -> float:
    """This process's resident file-backed pages (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_an_export_hands_back_the_checkpoint_pages_it_read_and_nothing_else(tmp_path):
    """Writing a model's exports reads the whole checkpoint through a memory map: each array's pages
    leave the process once it is written, so the export never holds the checkpoint whole. Memory
    that is not a mapping of the checkpoint (a copy, an ordinary array) is never touched."""
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(16 * 2**20, dtype=np.float32).reshape(4096, 4096))  # 64 MB
    mapped = np.load(path, mmap_mode="c")
    release = pages.releaser(str(path))
    before = _rss_file_mb()
    assert float(mapped.T[:, :].sum()) > 0  # read every page, as np.save of a transposed view does
    assert _rss_file_mb() - before > 50
    release(mapped.T)
    assert _rss_file_mb() - before < 5
    assert float(mapped[-1, -1]) == 16 * 2**20 - 1  # read again from the file, unchanged
    ordinary = np.ones((4096, 4096), np.float32)
    release(ordinary)
    release(np.array(mapped[:1024]))  # a copy of mapped data lives in ordinary memory
    assert float(ordinary.sum()) == 4096 * 4096
