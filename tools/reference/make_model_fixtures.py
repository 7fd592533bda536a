"""Golden fixtures for model parity, recorded with ModelScope's PyTorch OFA (the reference).

Run inside the reference environment (``bash tools/reference/setup_reference_env.sh .venv-reference``):

    .venv-reference/bin/python tools/reference/make_model_fixtures.py [--out tests/fixtures]

It writes, per case, ``model_<case>.npz`` with the inputs, calibrated BatchNorm statistics and the
reference outputs (ResNet features, encoder output, decoder logits), and ``manifest_<preset>.json``
with every state-dict key, shape and dtype of a ModelScope ``OFAModel`` for all presets (built on
the meta device: no memory). Weights are not stored: both sides regenerate them with
``ofa_jax.testing.random_state_dict`` (its digest is stored to catch generator drift).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from modelscope.models.multi_modal.ofa import OFAModel  # noqa: E402
from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig as MSConfig  # noqa: E402

from ofa_jax.config import PRESETS  # noqa: E402
from ofa_jax.testing import digest, pixels_to_float, random_state_dict  # noqa: E402

PROMPT = [0, 1749, 4279, 681, 4642, 3156, 2103, 3225, 788, 724, 140, 2]  # 图片上的文字是什么?

# case name -> (preset, image (H, W), decoder length, store ResNet features, store float64 outputs
#               [, OFAConfig overrides])
CASES = {
    "micro": ("micro", (64, 160), 9, True, True),
    # position embeddings added to the inputs (our from-scratch line models; no released checkpoint)
    "micro_entangle": ("micro", (32, 128), 9, False, True, {"entangle_position_embedding": True}),
    "tiny_wide": ("tiny", (128, 320), 9, False, True),
    "tiny_480": ("tiny", (480, 480), 8, False, False),  # features would be 7 MB; encoder output covers them
}
F64_VOCAB_SLICE = 4096  # float64 logits are stored for the first ids only (size)



def ms_config(preset: str, overrides=None) -> MSConfig:
    return MSConfig(**PRESETS[preset].replace(**(overrides or {})).to_modelscope())


def manifest(preset: str) -> dict:
    # Meta device: no memory even for huge. Drop-path rates call .item() on a linspace, so that one
    # op runs on the CPU.
    linspace = torch.linspace
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
    try:
        with torch.device("meta"):
            model = OFAModel(ms_config(preset))
    finally:
        torch.linspace = linspace
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()}


def build_model(preset: str, seed: int, overrides=None):
    torch.manual_seed(seed)
    model = OFAModel(ms_config(preset, overrides)).eval()
    man = {k: [list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()}
    params = random_state_dict(man, seed)
    sd = model.state_dict()
    for k, v in params.items():
        sd[k] = torch.from_numpy(v)
    model.load_state_dict(sd, strict=True)
    return model, digest(params)


@torch.no_grad()
def calibrate_bn(model, size, seed):
    """Running stats = statistics of the data, so activations stay O(1) through deep ResNets."""
    resnet = model.encoder.embed_images
    bns = [m for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    resnet.train()
    rng = np.random.default_rng(seed + 1)
    for _ in range(2):
        resnet(torch.from_numpy(rng.uniform(-1, 1, (2, 3) + size).astype(np.float32)))
    resnet.eval()
    for m in bns:
        m.momentum = 0.1
    return {k: v.numpy().copy() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


@torch.no_grad()
def record(case: str, preset: str, size, tgt_len: int, with_resnet: bool, with_f64: bool, overrides=None,
           seed: int = 0):
    model, dig = build_model(preset, seed, overrides)
    bn = calibrate_bn(model, size, seed)
    rng = np.random.default_rng(seed + 2)
    pixels = rng.integers(0, 256, (2,) + tuple(size) + (3,), dtype=np.uint8)  # NHWC, stored as uint8
    images = pixels_to_float(pixels)
    src = np.array([PROMPT, PROMPT[:7] + [2] + [1] * 4], dtype=np.int64)  # row 2 padded
    prev = rng.integers(4, 21132, (2, tgt_len)).astype(np.int64)
    prev[:, 0] = 0
    prev[1, tgt_len - 3:] = 1  # padded decoder row
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    feats = model.encoder.embed_images(x)
    out = model(input_ids=torch.from_numpy(src), patch_images=x, patch_masks=torch.tensor([True, True]),
                decoder_input_ids=torch.from_numpy(prev), return_dict=True)
    arrays = dict(pixels=pixels, src_tokens=src, prev_tokens=prev,
                  encoder_out=out.encoder_last_hidden_state.numpy(), logits=out.logits.numpy())
    if with_resnet:
        arrays["resnet"] = feats.permute(0, 2, 3, 1).numpy()
    if with_f64:
        # The same model in float64: separates implementation differences (should be ~1e-12) from
        # float32 rounding noise (the reference's own fp32 error vs fp64 is ~1e-4 on deep ResNets).
        m64, x64 = model.double(), x.double()
        out64 = m64(input_ids=torch.from_numpy(src), patch_images=x64, patch_masks=torch.tensor([True, True]),
                    decoder_input_ids=torch.from_numpy(prev), return_dict=True)
        arrays["f64/encoder_out"] = out64.encoder_last_hidden_state.numpy()
        arrays["f64/logits_head"] = out64.logits[..., :F64_VOCAB_SLICE].numpy()
        if with_resnet:
            arrays["f64/resnet"] = m64.encoder.embed_images(x64).permute(0, 2, 3, 1).numpy()
        model.float()
    arrays.update({f"bn/{k}": v for k, v in bn.items()})
    meta = dict(case=case, preset=preset, seed=seed, weights_digest=dig, torch=torch.__version__,
                overrides=overrides or {})
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for preset in PRESETS:
        with open(os.path.join(args.out, f"manifest_{preset}.json"), "w") as f:
            json.dump(manifest(preset), f, indent=0, sort_keys=True)
        print("manifest", preset)
    # Reference buffers, to check our recomputed buckets (they compress to a few KB).
    enc = OFAModel(ms_config("micro")).encoder
    np.savez_compressed(os.path.join(args.out, "rp_buckets.npz"), token=enc.token_rp_bucket.numpy(),
                        image=enc.image_rp_bucket.numpy())
    for case in args.cases:
        preset, size, tgt, with_resnet, with_f64, *overrides = CASES[case]
        arrays = record(case, preset, size, tgt, with_resnet, with_f64, *overrides)
        np.savez_compressed(os.path.join(args.out, f"model_{case}.npz"), **arrays)
        print("case", case, {k: v.shape for k, v in arrays.items() if not k.startswith("bn/")})


if __name__ == "__main__":
    main()
