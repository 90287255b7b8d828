"""An index's encoder for query images only, without torch, where one was exported: a CLIP model's
ViT image tower (:mod:`.clip_image`) or the offline encoder's network (:mod:`.offline_image`)."""

from __future__ import annotations


def load_image_encoder(model_id: str):
    """The image side alone of the encoder ``model_id`` built an index with, once exported (loading the
    full encoder exports it); None otherwise (then load the full encoder)."""
    if model_id.partition(":")[0] == "offline":
        from photoseek.encoders import offline_image

        return offline_image.load(model_id)
    from photoseek.encoders import clip_image

    return clip_image.load(model_id)
