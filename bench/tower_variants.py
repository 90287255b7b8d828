"""What else could make the image tower faster on this CPU? Measure each option once, side by side.

    python bench/tower_variants.py [--model ViT-B-32:/path/ckpt.pt] [--batch 32] [--seconds 8]

Variants of the ViT-B-32 image tower on ready tensors (the benchmark's "limit"): the shipped
configuration (bf16 where native, channels-last input), without channels-last, fp32, one
torch thread, TorchScript (trace + freeze) and torch.compile (inductor; its compile time is
reported separately). Prints images/s and the speed-up over the shipped configuration, plus
the cosine between each variant's embeddings and the shipped ones (a fast variant must also
be right). Without --model, ViT-B-32 with random weights (same speed as trained ones).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from photoseek.encoders import load_encoder


def images_per_second(fn, x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up
        n, started = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - started < seconds:
            fn(x)
            n += 1
        return n * len(x) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="MODEL:CHECKPOINT (default: ViT-B-32 with random weights)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (slow to compile)")
    args = p.parse_args()

    model_id = args.model
    if model_id is None:
        import tempfile

        import open_clip

        torch.manual_seed(0)
        path = f"{tempfile.mkdtemp()}/vit-b-32-random.pt"
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
        model_id = f"ViT-B-32:{path}"
    shipped = load_encoder(model_id)
    visual = shipped.model.visual
    size = shipped.input_spec.size
    x32 = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x32.to(shipped.dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(visual(x).float(), dim=-1)

    rows: list[tuple[str, float, float, str]] = []

    def run(name: str, fn, inp: torch.Tensor, note: str = "") -> None:
        ips = images_per_second(fn, inp, args.seconds)
        with torch.inference_mode():
            out = torch.nn.functional.normalize(fn(inp).float(), dim=-1)
        cosine = float((out * reference).sum(dim=-1).min())
        rows.append((name, ips, cosine, note))
        print(f"  {name:44s} {ips:7.1f} images/s  min cosine {cosine:.5f} {note}", flush=True)

    threads = torch.get_num_threads()
    print(f"{model_id.split(':')[0]}, batch {args.batch}, {threads} torch threads, shipped dtype {shipped.dtype}")
    run(f"shipped ({str(shipped.dtype).removeprefix('torch.')}, channels-last)", visual, x)
    run("without channels-last", visual, x.contiguous())
    fp32 = copy.deepcopy(visual).float()
    run("fp32, channels-last", fp32, x32.contiguous(memory_format=torch.channels_last))
    del fp32
    torch.set_num_threads(1)
    run("one torch thread", visual, x)
    torch.set_num_threads(threads)
    with torch.inference_mode():
        started = time.perf_counter()
        scripted = torch.jit.freeze(torch.jit.trace(visual, x).eval())
        scripted(x)
        scripted(x)
    run("TorchScript (trace + freeze)", scripted, x, f"(prepared in {time.perf_counter() - started:.0f} s)")
    del scripted
    if not args.no_compile:
        try:
            compiled = torch.compile(visual)
            started = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
            run("torch.compile (inductor)", compiled, x, f"(compiled in {time.perf_counter() - started:.0f} s)")
        except Exception as exc:  # no C++ compiler, unsupported op...
            print(f"  torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}")

    base = rows[0][1]
    print("\n| variant | images/s | vs shipped | min cosine to shipped |\n|---|---:|---:|---:|")
    for name, ips, cosine, note in rows:
        print(f"| {name} {note} | {ips:.1f} | {ips / base:.2f}x | {cosine:.5f} |")


if __name__ == "__main__":
    main()
