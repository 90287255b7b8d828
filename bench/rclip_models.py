"""rclip's model files built locally from open_clip random weights, for timing rclip where the
Hugging Face hub is out of reach.

rclip 3.3 (rclip/model_download.py) looks for, under its data folder (``$RCLIP_DATADIR``):

    ViT-B-32-256-datacomp_s34b_b86k/visual.onnx    image tower, input "input" float32 [N,3,256,256]
    ViT-B-32-256-datacomp_s34b_b86k/textual.onnx   text tower, input "input" int64 [N,77]
    tokenizer/bpe_simple_vocab_16e6.txt.gz         CLIP's BPE vocabulary

and downloads them from the hub only when a file is missing. This module exports open_clip's
"ViT-B-32-256" the way rclip's own scripts/convert_model.py does (TorchScript exporter, opset
18, float32, output "output", a dynamic batch axis) but from random weights
(``torch.manual_seed(0)``): the same graph, shapes and dtypes, hence the same speed and
memory; only the rankings are meaningless.

Invariants: the files are made once into ``bench/results/cache/rclip-models`` (a
``manifest.json`` names what they were made from, and a different recipe rebuilds them);
each export is checked against open_clip's own tower with ONNX Runtime before it is kept;
``fresh_datadir`` gives every rclip run its own data folder (its own, empty ``db.sqlite3``)
holding symlinks to those files, so the user's own rclip data is never read or written.

Needs torch, open_clip (photoseek's own dependencies), ``onnx`` (the exporter writes
through it) and ``onnxruntime`` (comes with photoseek): ``pip install -e '.[bench-rclip]'``.

    python bench/rclip_models.py            # build (once) and print the folder
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "results" / "cache" / "rclip-models"

ARCH = "ViT-B-32-256"  # open_clip's name for the architecture rclip ships
MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"  # rclip's folder name (model_download.MODEL_SUBDIR)
VISUAL, TEXTUAL = "visual.onnx", "textual.onnx"
VOCAB = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
IMAGE_SIZE, CONTEXT_LENGTH = 256, 77
OPSET = 18
SEED = 0
RECIPE = {"arch": ARCH, "weights": f"random, torch.manual_seed({SEED})", "opset": OPSET, "dtype": "float32",
          "exporter": "torchscript", "rclip": "3.3"}
FILES = (f"{MODEL_SUBDIR}/{VISUAL}", f"{MODEL_SUBDIR}/{TEXTUAL}", VOCAB)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_built(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file() or not all((folder / f).is_file() for f in FILES):
        return False
    try:
        return json.loads(manifest.read_text()).get("recipe") == RECIPE
    except ValueError:
        return False


def build(folder: Path = DEFAULT_DIR) -> Path:
    """The three files rclip needs, in ``folder`` (made once; returns ``folder``)."""
    if is_built(folder):
        return folder
    try:
        import onnx  # noqa: F401  (torch's exporter writes the model through it)
    except ImportError:
        raise SystemExit("bench/rclip_models.py needs the 'onnx' package to export rclip's model: "
                         "pip install -e '.[bench-rclip]' (or pip install onnx) in photoseek's environment") from None
    import open_clip
    import torch

    log(f"  exporting {ARCH} with random weights to ONNX for rclip (once, about a minute) into {folder}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / MODEL_SUBDIR).mkdir(parents=True)
    torch.manual_seed(SEED)
    model = open_clip.create_model(ARCH, pretrained=None).eval()

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = model.visual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.visual(x)

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(x)

    towers = {VISUAL: (Visual(), torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)),
              TEXTUAL: (Textual(), torch.zeros(1, CONTEXT_LENGTH, dtype=torch.long))}
    for name, (module, example) in towers.items():
        torch.onnx.export(module.eval(), (example,), str(tmp / MODEL_SUBDIR / name), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    _check(model, tmp / MODEL_SUBDIR)
    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (tmp / VOCAB).parent.mkdir(parents=True)
    shutil.copy2(vocab, tmp / VOCAB)
    (tmp / "manifest.json").write_text(json.dumps({"recipe": RECIPE, "torch": torch.__version__,
                                                   "open_clip": open_clip.__version__}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def _check(model, folder: Path) -> None:
    """Both exports give open_clip's outputs (batch of 2, so the dynamic batch axis is exercised)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    image = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    text = torch.zeros(2, CONTEXT_LENGTH, dtype=torch.long)
    text[:, 0], text[0, 1], text[1, 1], text[:, 2] = 49406, 320, 539, 49407  # <start> "a" / "an" <end>
    with torch.no_grad():
        expected = {VISUAL: (image, model.visual(image)), TEXTUAL: (text, model.encode_text(text))}
    for name, (inp, want) in expected.items():
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"input": inp.numpy()})
        diff = float(np.max(np.abs(got - want.numpy())))
        if got.shape != (2, 512) or diff > 1e-3:
            raise RuntimeError(f"the ONNX export of {name} disagrees with open_clip: shape {got.shape}, "
                               f"max abs difference {diff:.2e}")


def fresh_datadir(models: Path, dest: Path) -> Path:
    """An empty rclip data folder (``RCLIP_DATADIR``) whose model files link to ``models``."""
    if dest.exists():
        shutil.rmtree(dest)
    for rel in FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((models / rel).resolve(), dest / rel)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"folder for the files [default: {DEFAULT_DIR}]")
    args = p.parse_args(argv)
    folder = build(args.out)
    print(folder)
    log(f"  use it as rclip's data folder: RCLIP_DATADIR={folder} HF_HUB_OFFLINE=1 rclip ... "
        "(rclip then also keeps its db.sqlite3 there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
