"""How long ``photoseek tune`` trains on N pairs (issue 13: a few thousand pairs in under a minute on 2 cores).

Synthetic pairs in the offline encoder's 384-d space: N photos (unit vectors), each captioned by a
noisy copy of its vector, searched among themselves plus 3x as many distractor photos. The
figures are training time (torch on CPU, threads as the machine gives) and held-out recall.

    python bench/tune.py --pairs 3000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from photoseek.tuning import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--noise", type=float, default=1.5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    unit = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    photos = unit(rng.standard_normal((args.pairs * 4, args.dim)))
    ids = np.arange(len(photos), dtype=np.int64)
    # What a tune should learn: the words sit a low-rank step away from their photos (x + 2 V U x), plus noise.
    u, v = (rng.standard_normal((8, args.dim)) / np.sqrt(args.dim) for _ in range(2))
    x = photos[:args.pairs]
    texts = unit(x + 2 * np.sqrt(args.dim) * (x @ u.T) @ v + args.noise / np.sqrt(args.dim)
                 * rng.standard_normal((args.pairs, args.dim)))
    import torch

    torch.zeros(1).requires_grad_()  # torch's first use outside the timing
    started = time.monotonic()
    _, report = train(photos[:args.pairs], texts, ids[:args.pairs], photos, ids)
    print(f"{args.pairs} pairs, {args.dim}-d, {len(photos)} photos searched, torch threads {torch.get_num_threads()}: "
          f"{time.monotonic() - started:.1f} s, best after {report.epochs} epochs; test recall@{report.k} "
          f"{report.recall_before:.3f} -> {report.recall_after:.3f}, MRR {report.mrr_before:.3f} -> {report.mrr_after:.3f}")


if __name__ == "__main__":
    main()
