"""Beam search parity with ModelScope's generator and OCR pipeline (tools/reference/make_decode_fixtures.py)."""
import os

import jax
import numpy as np
import pytest

from ofa_jax.decoding import GenerationConfig, make_generate_fn
from ofa_jax.model import OFA
from ofa_jax.preprocess import normalize_uint8, preprocess_image
from ofa_jax.tokenizer import OFATokenizer
from tools.convert_weights import state_dict_to_variables

from reference_weights import FIXTURES, decode_case


@pytest.fixture(scope="module")
def case():
    sd, data, meta, cfg = decode_case()
    variables, _ = state_dict_to_variables(sd, cfg)
    return cfg, variables, data, meta


def test_preprocessing_reproduces_the_pipeline_inputs(case):
    cfg, variables, data, meta = case
    for i, name in enumerate(meta["images"]):
        ours = preprocess_image(os.path.join(FIXTURES, "decode_images", name))
        np.testing.assert_array_equal(ours, normalize_uint8(data["pixels"][i]))


@pytest.mark.parametrize("setting", ["beam5", "beam1", "beam5_ngram"])
def test_beams_match_reference(case, setting):
    cfg, variables, data, meta = case
    s = meta["settings"][setting]
    gen = GenerationConfig(beam_size=s["beam_size"], max_len_b=s["max_len_b"], min_len=s["min_len"],
                           no_repeat_ngram_size=s["no_repeat_ngram_size"])
    fn = make_generate_fn(OFA(cfg), gen)
    images = np.stack([normalize_uint8(p) for p in data["pixels"]])
    out = jax.device_get(fn(variables, images, data[f"{setting}/src_tokens"]))
    ref_tokens, ref_scores = data[f"{setting}/tokens"], data[f"{setting}/scores"]
    ref_len = (ref_tokens != 1).sum(-1)
    if s["beam_size"] > 1:
        assert ref_len.min() < ref_len.max(), "fixture should mix early-eos and max-length hypotheses"
    np.testing.assert_array_equal(out.lengths, ref_len)
    np.testing.assert_array_equal(out.tokens[:, :, : ref_tokens.shape[2]], ref_tokens)
    np.testing.assert_allclose(out.scores, ref_scores, atol=1e-4)
    np.testing.assert_allclose(out.positional_scores[:, :, : ref_tokens.shape[2]],
                               data[f"{setting}/positional_scores"], atol=1e-4)
    tok = OFATokenizer.default()
    strings = [tok.decode_ocr(out.tokens[i, 0, : out.lengths[i, 0]]) for i in range(len(images))]
    assert strings == list(data[f"{setting}/strings"])
