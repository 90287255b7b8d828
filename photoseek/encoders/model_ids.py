"""The shape of an open_clip model id, read without open_clip or torch (the indexer settles its model
before importing either, so that scanning and decoding start at once)."""

from __future__ import annotations

from photoseek.errors import EncoderUnavailable

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def split_model_id(model_id: str) -> tuple[str, str]:
    """``"ViT-B-32:laion2b_s34b_b79k"`` -> ``("ViT-B-32", "laion2b_s34b_b79k")``; a path may contain ':' itself."""
    name, sep, pretrained = model_id.partition(":")
    if not sep or not name or not pretrained:
        raise EncoderUnavailable(
            f"model {model_id!r}: expected MODEL:PRETRAINED, e.g. 'ViT-B-32:laion2b_s34b_b79k' "
            "or 'ViT-B-32:/path/to/checkpoint.pt' (or 'offline' for the bundled encoder)"
        )
    return name.strip().replace("/", "-"), pretrained.strip()


def looks_like_path(pretrained: str) -> bool:
    return (
        "/" in pretrained
        or "\\" in pretrained
        or pretrained.startswith(("~", "."))
        or pretrained.lower().endswith(CHECKPOINT_SUFFIXES)
    )
