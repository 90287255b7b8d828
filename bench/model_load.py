"""What loading an encoder costs a fresh process: resident memory (and its peak, the kernel's
high-water mark) after importing torch, after importing open_clip, after loading the encoder and
after one batch of 32 through its image tower; seconds for each step.

    python bench/model_load.py                 # ViT-B-32, random weights (bench/run.py's checkpoint)
    python bench/model_load.py --model offline
    PYTHONPATH=/path/to/other/photoseek python bench/model_load.py   # the same for other code
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _status() -> tuple[float, float]:
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="clip", help="clip (ViT-B-32, random weights) or offline")
    args = p.parse_args(argv)
    started = time.perf_counter()

    def step(what: str) -> None:
        rss, hwm = _status()
        print(f"{time.perf_counter() - started:6.2f} s  {what:28s} RSS {rss:6.0f} MB  peak {hwm:6.0f} MB", flush=True)

    step("start")
    import torch

    step("import torch")
    if args.model == "clip":
        import open_clip  # noqa: F401

        step("import open_clip")
        sys.path.insert(0, str(HERE))
        import run as bench_run

        model_id = f"{bench_run.CLIP_ARCH}:{bench_run.random_clip_checkpoint()}"
    else:
        model_id = "offline"
    import numpy as np

    from photoseek.encoders import load_encoder

    encoder = load_encoder(model_id)
    step(f"load {model_id.split(':')[0]} ({str(encoder.dtype).replace('torch.', '')})")
    size = encoder.input_spec.size
    with torch.inference_mode():
        encoder.encode_pixels(np.zeros((32, size, size, 3), np.uint8))
    step("one batch of 32 images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
