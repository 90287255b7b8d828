"""Which floating-point type the image towers run in on this CPU."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


@functools.lru_cache(maxsize=1)
def native_bf16_supported() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX-BF16).

    oneDNN also *emulates* bf16 on plain AVX-512 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``
    says yes there), but emulated bf16 is slower than fp32, so only native support counts.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        caps = torch._C._cpu._get_cpu_capability()
    except Exception:  # private API: gone or changed in some torch version
        caps = None
    if isinstance(caps, dict):
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    try:
        return bool(torch._C._cpu._is_avx512_bf16_supported() or torch._C._cpu._is_amx_tile_supported())
    except Exception:
        return False


def resolve_dtype(precision: str) -> torch.dtype:
    """``"auto"`` -> bf16 where the CPU has native bf16, else fp32; ``"bf16"`` / ``"fp32"`` as asked."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if not native_bf16_supported():
            log.warning("bf16 requested but this CPU has no native bf16: expect it to be slower than fp32")
        return torch.bfloat16
    return torch.bfloat16 if native_bf16_supported() else torch.float32
