"""How well does the bundled offline encoder find the demo photos? Recall@1/5/10 per variant.

    python bench/offline_quality.py            # all variants (about a minute on 2 cores, cold cache)
    python bench/offline_quality.py --quick    # only the shipped configs
    python bench/offline_quality.py --quick --model offline:lite0 --model offline:multilingual --languages de,fr,es,ru
        # English vs the multilingual text side, and the same queries translated (bench/offline_queries_i18n.py)

The 34 demo photos in data/samples/ are labelled below with the queries a person would type
to find them (a query listed under several photos has all of them as relevant answers).
Recall@k for one query is |relevant in top k| / min(k, |relevant|), so a perfect ranking
scores 1.0 at every k; the table shows the mean over queries, plus the mean reciprocal rank
of the first relevant photo (MRR), and P@5 = |relevant in top 5| / 5 (its ceiling, with one to four
relevant photos per query, is printed with it). ``--languages`` scores the hand translations
of the same queries against the same relevance labels.

The labels were written from looking at the photos, before tuning, and not changed after.
With 65 distinct queries the numbers move by ~0.015 per query, so prefer simple settings over a
variant that wins by a query or two.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.offline_queries_i18n import TRANSLATIONS  # noqa: E402
from photoseek.encoders import offline  # noqa: E402
from photoseek.imaging import load_photo  # noqa: E402

SAMPLES = REPO / "data" / "samples"

# file name -> queries a user would type to find it
# The hand-labelled queries now live in the package (photoseek tune checks generic recall with them).
from photoseek.demo_labels import LABELS  # noqa: E402,F401

CLASS_TEMPLATES = {
    "none": ["{}"],
    "photo": ["a photo of a {}."],
    "ensemble5": [
        "a photo of a {}.", "a close-up photo of a {}.", "a photo of the {}.", "a picture of a {}.", "an image of a {}.",
    ],
}
QUERY_TEMPLATES = {"plain": "{}", "photo": "a photo of {}."}
TOP_KS = [1, 3, 5, 10, 20, 1000]
KS = (1, 5, 10)
COLUMNS = ("R@1", "R@5", "R@10", "MRR", "P@5")


def queries_and_relevance(files: list[str]) -> tuple[list[str], list[set[int]]]:
    relevant: dict[str, set[int]] = defaultdict(set)
    for name, queries in LABELS.items():
        for q in queries:
            relevant[q].add(files.index(name))
    qs = sorted(relevant)
    return qs, [relevant[q] for q in qs]


def metrics(scores: np.ndarray, relevant: list[set[int]]) -> dict[str, float]:
    """scores: (queries, images). Returns mean R@1/5/10 and MRR."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {f"R@{k}": 0.0 for k in KS}
    out["P@5"] = 0.0
    mrr = 0.0
    for ranking, rel in zip(order, relevant):
        for k in KS:
            out[f"R@{k}"] += len(rel & set(ranking[:k].tolist())) / min(k, len(rel))
        out["P@5"] += len(rel & set(ranking[:5].tolist())) / 5
        first = next(i for i, idx in enumerate(ranking) if idx in rel)
        mrr += 1.0 / (first + 1)
    n = len(relevant)
    return {**{k: v / n for k, v in out.items()}, "MRR": mrr / n}


def image_probabilities(cfg: offline.OfflineConfig, files: list[Path], dtype: torch.dtype) -> torch.Tensor:
    model = offline.load_backbone(cfg).to(dtype=dtype, memory_format=torch.channels_last)
    pixels = np.stack([load_photo(f, cfg.image_size).pixels for f in files])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model(x.contiguous(memory_format=torch.channels_last).to(dtype)).float().softmax(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the configs shipped in photoseek/encoders/configs")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--misses", action="store_true", help="list the queries the shipped configs miss at rank 5")
    parser.add_argument("--model", action="append", metavar="ID",
                        help="only this shipped variant (offline:lite0, offline:multilingual, ...); repeatable")
    parser.add_argument("--languages", default="", metavar="LIST",
                        help="also score the queries translated into these languages (comma-separated: "
                        + ",".join(TRANSLATIONS) + ")")
    args = parser.parse_args()
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    unknown = set(languages) - set(TRANSLATIONS)
    if unknown:
        sys.exit(f"no translations for {sorted(unknown)}; have {sorted(TRANSLATIONS)}")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    files = sorted(p for p in SAMPLES.iterdir() if p.name in LABELS)
    missing = set(LABELS) - {p.name for p in files}
    if missing:
        sys.exit(f"labelled photos missing from {SAMPLES}: {sorted(missing)}")
    names = [p.name for p in files]
    queries, relevant = queries_and_relevance(names)
    print(f"{len(files)} photos, {len(queries)} queries, precision {args.precision}\n")

    variants = offline.available_variants()
    if args.model:
        from photoseek.encoders import canonical_model_id

        variants = [canonical_model_id(m).partition(":")[2] for m in args.model]
    shipped = {v: offline.OfflineConfig.load(v) for v in variants}
    t0 = time.perf_counter()
    text_models = {name: offline.load_text_model(name) for name in {cfg.text_model for cfg in shipped.values()}}
    by_backbone: dict[str, torch.Tensor] = {}
    for cfg in shipped.values():
        if cfg.backbone not in by_backbone:
            by_backbone[cfg.backbone] = image_probabilities(cfg, files, dtype)
    probs = {v: by_backbone[cfg.backbone] for v, cfg in shipped.items()}
    print(f"models loaded and photos classified in {time.perf_counter() - t0:.1f} s")

    matrices: dict[tuple, torch.Tensor] = {}

    def matrix(names_source: str, templates: tuple[str, ...], text_model: str) -> torch.Tensor:
        key = (names_source, templates, text_model)
        if key not in matrices:
            texts = offline.class_texts(offline.class_names(names_source), templates)
            matrices[key] = offline.class_matrix(lambda: text_models[text_model], texts, text_model=text_model)
        return matrices[key]

    query_vectors: dict[tuple, torch.Tensor] = {}

    def scores(cfg: offline.OfflineConfig, variant: str, lang: str = "en") -> np.ndarray:
        key = (cfg.text_model, cfg.query_template, lang)
        if key not in query_vectors:
            said = queries if lang == "en" else [TRANSLATIONS[lang][q] for q in queries]
            query_vectors[key] = offline.embed_texts(text_models[cfg.text_model],
                                                     [cfg.query_template.format(q) for q in said])
        img = offline.conse(probs[variant], matrix(cfg.class_names, cfg.class_templates, cfg.text_model), cfg.top_k)
        img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (query_vectors[key] @ img.T).numpy()

    def evaluate(cfg: offline.OfflineConfig, variant: str, lang: str = "en") -> dict[str, float]:
        return metrics(scores(cfg, variant, lang), relevant)

    rows = []
    if not args.quick:
        grid = itertools.product(shipped, ["clean", "clean+wordnet"], CLASS_TEMPLATES, QUERY_TEMPLATES, TOP_KS)
        for variant, names_source, ct, qt, k in grid:
            cfg = dataclasses.replace(
                shipped[variant], class_names=names_source, class_templates=tuple(CLASS_TEMPLATES[ct]),
                query_template=QUERY_TEMPLATES[qt], top_k=k,
            )
            rows.append(((variant, names_source, ct, qt, "all" if k >= 1000 else k), evaluate(cfg, variant)))
        header = "| backbone | class names | class templates | query template | top-k | R@1 | R@5 | R@10 | MRR |"
        print("\nAll variants (best first by R@5, then R@1):\n")
        print(header)
        print("|---|---|---|---|---|---|---|---|---|")
        for key, m in sorted(rows, key=lambda r: (-r[1]["R@5"], -r[1]["R@1"], -r[1]["MRR"])):
            print("| " + " | ".join(map(str, key)) + " | " + " | ".join(f"{m[x]:.3f}" for x in ("R@1", "R@5", "R@10", "MRR")) + " |")

        print("\nOne factor at a time (mean over all other settings):\n")
        factors = ["backbone", "class names", "class templates", "query template", "top-k"]
        for i, factor in enumerate(factors):
            groups: dict[str, list[dict[str, float]]] = defaultdict(list)
            for key, m in rows:
                groups[str(key[i])].append(m)
            cells = ", ".join(
                f"{g}: R@1 {np.mean([m['R@1'] for m in ms]):.3f} R@5 {np.mean([m['R@5'] for m in ms]):.3f}"
                for g, ms in groups.items()
            )
            print(f"- {factor}: {cells}")

    ceiling = np.mean([min(5, len(rel)) / 5 for rel in relevant])
    print(f"\nShipped configs (photoseek/encoders/configs); P@5 can reach {ceiling:.3f} at most:\n")
    print("| model id | text model | language | top-k | class names | class templates | query template | "
          + " | ".join(COLUMNS) + " |")
    print("|---" * (7 + len(COLUMNS)) + "|")
    for variant, cfg in shipped.items():
        for lang in ["en", *languages]:
            m = evaluate(cfg, variant, lang)
            print(
                f"| offline:{variant} | {cfg.text_model} | {lang} | {cfg.top_k} | {cfg.class_names} | "
                f"{len(cfg.class_templates)} | `{cfg.query_template}` | "
                + " | ".join(f"{m[x]:.3f}" for x in COLUMNS) + " |"
            )
            if args.misses:
                order = np.argsort(-scores(cfg, variant, lang), axis=1, kind="stable")
                said = queries if lang == "en" else [TRANSLATIONS[lang][q] for q in queries]
                for query, ranking, rel in zip(said, order, relevant):
                    if not rel & set(ranking[:5].tolist()):
                        print(f"    miss: {query!r}: top 3 {[names[i] for i in ranking[:3]]}, "
                              f"wanted {[names[i] for i in rel]}")


if __name__ == "__main__":
    main()
