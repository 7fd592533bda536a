"""Broken model dirs through ``python -m ofa_jax.decode``: exit status 2 and one line naming the file
and what is wrong, never a traceback. (Broken PyTorch checkpoints: tests/test_convert.py.)"""
import json
import os
import shutil

import pytest

from ofa_jax.config import PRESETS
from ofa_jax.decode import main as decode_main
from ofa_jax.modeldir import save_model_dir
from tools.convert_weights import state_dict_to_variables
from tools.convert_weights.convert import BUNDLED_VOCAB

from reference_weights import FIXTURES, decode_case

IMAGE = os.path.join(FIXTURES, "decode_images", "sample_0.png")


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    sd, _, _, cfg = decode_case()
    variables, extras = state_dict_to_variables(sd, cfg)
    d = tmp_path_factory.mktemp("good")
    save_model_dir(str(d), cfg, variables, BUNDLED_VOCAB, generation={"patch_image_size": 64, "beam_size": 1,
                                                                      "max_len_b": 3}, extras=extras)
    return d


def _broken(good_dir, tmp_path, how):
    d = tmp_path / "model"
    shutil.copytree(good_dir, d)
    how(d)
    return d


def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _other_architecture(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(d_model=PRESETS["tiny"].d_model, encoder_ffn_dim=PRESETS["tiny"].encoder_ffn_dim)
    (d / "config.json").write_text(json.dumps(cfg))


CASES = {
    "missing vocab": (lambda d: (d / "vocab.txt").unlink(), "{d}: missing vocab.txt"),
    "missing config": (lambda d: (d / "config.json").unlink(), "{d}: missing config.json"),
    "missing params": (lambda d: (d / "params.safetensors").unlink(), "{d}: missing params.safetensors"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{not json"), "{d}/config.json: "),
    "generation not JSON": (lambda d: (d / "generation.json").write_text("[1, 2"), "{d}/generation.json: unreadable"),
    "truncated params": (lambda d: _truncate(d / "params.safetensors"), "{d}/params.safetensors: unreadable"),
    "params of another architecture": (_other_architecture,
                                       "{d}/params.safetensors does not match {d}/config.json (d_model 256"),
    "vocab of another size": (lambda d: (d / "vocab.txt").write_text("<s>\n<pad>\n</s>\n<unk>\na\n<mask>\n"),
                              "{d}/vocab.txt: 9198 tokens (with the <code_*>/<bin_*> ones) where config.json has vocab_size 30325"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_model_dir_is_one_line(good_dir, tmp_path, capsys, case):
    how, expect = CASES[case]
    d = _broken(good_dir, tmp_path, how)
    rc = decode_main(["--model", str(d), IMAGE])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: ") and expect.format(d=d) in lines[0], lines[0]


def test_good_dir_decodes(good_dir, capsys):
    assert decode_main(["--model", str(good_dir), IMAGE]) == 0
    assert capsys.readouterr().out.startswith(IMAGE + "\t")
