"""Golden fixtures for beam search, recorded with ModelScope's OFA generator and OCR pipeline.

Run inside the reference environment (see make_model_fixtures.py):

    .venv-reference/bin/python tools/reference/make_decode_fixtures.py [--out tests/fixtures]

A micro OFA with the deterministic random weights of ``ofa_jax.testing`` is made *peaked* (tied
embeddings scaled, the eos row boosted) so that beams do not tie and hypotheses end at different
lengths; it is saved as a ModelScope model dir, ``pipeline(Tasks.ocr_recognition, model=DIR)`` is run
on four generated PNG images, and the generator's full beams (tokens, scores, positional scores)
are recorded for beam 5 and beam 1 with min_len/max_len both binding.

Writes ``decode_images/*.png`` and ``decode_micro.npz`` (preprocessed images as uint8, BatchNorm
statistics, hypotheses, pipeline strings).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from make_model_fixtures import build_model, calibrate_bn  # noqa: E402

from ofa_jax.config import PRESETS  # noqa: E402

# The transformation that makes random weights peaked (applied identically by the tests).
EMBED_SCALE = float(os.environ.get("EMBED_SCALE", 6.0))
EOS_BOOST = float(os.environ.get("EOS_BOOST", 2.2))
CODE_ROWS_SCALE = 0.2   # <code_*>/<bin_*> rows (ids >= 21133): rarely predicted, as in a real OCR model
BRANCH_SCALE = float(os.environ.get("BRANCH_SCALE", 4.0))  # decoder fc2 / cross-attn out_proj: less copying
SETTINGS = {  # name -> beam_search settings of configuration.json
    "beam5": {"beam_size": 5, "max_len_b": 10, "min_len": 3, "no_repeat_ngram_size": 0},
    "beam1": {"beam_size": 1, "max_len_b": 10, "min_len": 3, "no_repeat_ngram_size": 0},
    "beam5_ngram": {"beam_size": 5, "max_len_b": 10, "min_len": 2, "no_repeat_ngram_size": 2},
}
SEED = 11


def peak(sd: dict) -> dict:
    """Peaked, non-degenerate random weights.

    Scales the tied embedding (sharper logits, no beam ties), boosts the eos row (some hypotheses
    end early), shrinks the <code>/<bin> rows, and strengthens the decoder's FFN and cross-attention
    branches so the output depends on the image rather than copying the previous token.
    """
    e = sd["encoder.embed_tokens.weight"].clone() * EMBED_SCALE
    e[2] = e[2] * EOS_BOOST
    e[21133:] = e[21133:] * CODE_ROWS_SCALE
    for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight"):
        sd[k] = e
    for k in list(sd):
        if k.startswith("decoder.layers.") and (k.endswith("fc2.weight") or k.endswith("cross_attn.out_proj.weight")):
            sd[k] = sd[k] * BRANCH_SCALE
    return sd


def make_images(out_dir):
    rng = np.random.default_rng(5)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate([(320, 48), (200, 60), (90, 140), (480, 30)]):
        base = rng.integers(0, 256, 3)
        arr = np.clip(base + rng.normal(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
        arr[:, : w // 3] = 255 - arr[:, : w // 3]
        p = os.path.join(out_dir, f"sample_{i}.png")
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def save_model_dir(model, d, beam_search):
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), os.path.join(d, "pytorch_model.bin"))
    shutil.copy(os.path.join(ROOT, "ofa_jax", "assets", "vocab_zh.txt"), os.path.join(d, "vocab.txt"))
    conf = {"framework": "pytorch", "task": "ocr-recognition",
            "model": {"type": "ofa", "language": "zh", "patch_image_size": 480, "max_image_size": 480,
                      "beam_search": beam_search},
            "pipeline": {"type": "ofa-ocr-recognition"}}
    with open(os.path.join(d, "configuration.json"), "w") as f:
        json.dump(conf, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    args = ap.parse_args()
    from modelscope.pipelines import pipeline
    from modelscope.pipelines.util import batch_process
    from modelscope.utils.constant import Tasks

    torch.manual_seed(0)
    model, digest = build_model("micro", SEED)
    bn = calibrate_bn(model, (480, 480), SEED)
    model.load_state_dict(peak(model.state_dict()))
    paths = make_images(os.path.join(args.out, "decode_images"))
    arrays = {f"bn/{k}": v for k, v in bn.items()}
    meta = {"preset": "micro", "seed": SEED, "weights_digest": digest, "embed_scale": EMBED_SCALE,
            "eos_boost": EOS_BOOST, "code_rows_scale": CODE_ROWS_SCALE, "branch_scale": BRANCH_SCALE, "images": [os.path.basename(p) for p in paths], "settings": SETTINGS,
            "torch": torch.__version__}
    only = os.environ.get("ONLY")
    with tempfile.TemporaryDirectory() as tmp:
        for name, beam_search in SETTINGS.items():
            if only and name != only:
                continue
            d = os.path.join(tmp, name)
            os.makedirs(d)
            save_model_dir(model, d, beam_search)
            pipe = pipeline(Tasks.ocr_recognition, model=d)
            strings = [pipe(p)["text"][0] for p in paths]
            samples = [pipe.preprocessor({"image": p}) for p in paths]
            batch = batch_process(pipe.model, samples)
            patch = batch["net_input"]["patch_images"]
            pixels = np.rint((patch.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
            recon = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
            assert torch.equal(recon, patch), "uint8 storage of the preprocessed images would not be exact"
            with torch.no_grad():
                hyps = pipe.model.generator.generate([pipe.model.model], batch)
            K = beam_search["beam_size"]
            L = beam_search["max_len_b"] + 1
            tokens = np.full((len(paths), K, L), 1, np.int64)
            scores = np.full((len(paths), K), -np.inf, np.float32)
            pos = np.zeros((len(paths), K, L), np.float32)
            for i, hs in enumerate(hyps):
                for k, h in enumerate(hs):
                    n = len(h["tokens"])
                    tokens[i, k, :n] = h["tokens"].numpy()
                    scores[i, k] = float(h["score"])
                    pos[i, k, :n] = h["positional_scores"].numpy()
            arrays.update({f"{name}/tokens": tokens, f"{name}/scores": scores, f"{name}/positional_scores": pos,
                           f"{name}/strings": np.array(strings), f"{name}/src_tokens": batch["net_input"]["input_ids"].numpy()})
            arrays["pixels"] = pixels
            lens = (tokens != 1).sum(-1)
            print(name, "strings", strings, "lengths", lens.tolist(), "top scores", scores[:, 0].round(3).tolist())
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(os.path.join(args.out, "decode_micro.npz"), **arrays)


if __name__ == "__main__":
    main()
