"""tools/convert_weights: key coverage for every preset, bit-exact round trips, one-line errors."""
import argparse
import json
import os

import numpy as np
import pytest

try:
    import torch
except ImportError:  # the key-table and error tests below run without it; the others are marked `torch`
    torch = None

from ofa_jax import buckets
from ofa_jax.config import PRESETS
from ofa_jax.modeldir import flatten, load_model_dir
from ofa_jax.testing import load_manifest, random_state_dict
from tools.convert_weights import convert, export_pytorch, mapping
from tools.convert_weights.__main__ import main as cli
from tools.convert_weights.convert import BUNDLED_VOCAB, _expected_shapes

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def manifest(preset):
    return load_manifest(os.path.join(FIXTURES, f"manifest_{preset}.json"))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_reference_key_is_mapped_or_dropped(preset):
    """Against the key/shape manifest of a real ModelScope OFAModel for each preset."""
    cfg = PRESETS[preset]
    man = manifest(preset)
    rows = {r.torch_key: r for r in mapping.table(cfg)}
    extras = set(mapping.extra_keys(cfg))
    unmapped = [k for k in man if k not in rows and k not in extras and mapping.dropped_reason(k) is None]
    assert unmapped == []
    assert [k for k in rows if k not in man] == []
    # Shapes after the transform equal the Flax model's variables, and the table covers all of them.
    shapes = _expected_shapes(cfg)
    assert set(shapes) == {r.flax_path for r in rows.values()}
    for key, row in rows.items():
        shape = tuple(man[key][0])
        if row.kind == "linear":
            shape = shape[::-1]
        elif row.kind == "conv":
            shape = (shape[2], shape[3], shape[1], shape[0])
        assert shape == shapes[row.flax_path], key


def test_buckets_equal_reference_buffers():
    ref = np.load(os.path.join(FIXTURES, "rp_buckets.npz"))
    np.testing.assert_array_equal(buckets.token_bucket_table(256, 1024), ref["token"])
    np.testing.assert_array_equal(buckets.image_bucket_table(42), ref["image"])


def _modelscope_dir(tmp_path, preset="micro", seed=3, dtype=None):
    """A ModelScope-layout model dir with random weights and all buffers, as OFAModel.save_pretrained writes."""
    dtype = torch.float32 if dtype is None else dtype
    cfg = PRESETS[preset]
    man = manifest(preset)
    params = random_state_dict(man, seed)
    rng = np.random.default_rng(seed)
    token = torch.from_numpy(buckets.token_bucket_table(256, 1024).copy())
    image = torch.from_numpy(buckets.image_bucket_table(42).copy())
    sd = {}
    for k, (shape, _) in man.items():
        if k in params:
            sd[k] = torch.from_numpy(params[k]).to(dtype)
        elif k.endswith("running_mean"):
            sd[k] = torch.from_numpy(rng.normal(0, 0.1, shape).astype(np.float32)).to(dtype)
        elif k.endswith("running_var"):
            sd[k] = torch.from_numpy(rng.uniform(0.5, 2.0, shape).astype(np.float32)).to(dtype)
        elif k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("token_rp_bucket"):
            sd[k] = token
        elif k.endswith("image_rp_bucket"):
            sd[k] = image
        elif k == "decoder.image_position_idx":
            w = torch.arange(16)
            sd[k] = torch.cat([torch.tensor([0]), (w[None, :] + w[:, None] * 42 + 1).view(-1), torch.tensor([1024] * 768)])
    for alias in mapping.ALIASES:
        sd[alias] = sd["encoder.embed_tokens.weight"]
    assert set(sd) == set(man)
    d = tmp_path / "ms"
    d.mkdir()
    torch.save(sd, d / "pytorch_model.bin")
    (d / "config.json").write_text(json.dumps(cfg.to_modelscope()))
    (d / "vocab.txt").write_bytes(open(BUNDLED_VOCAB, "rb").read())
    (d / "configuration.json").write_text(json.dumps(
        {"task": "ocr-recognition", "model": {"type": "ofa", "patch_image_size": 480,
                                               "beam_search": {"beam_size": 5, "max_len_b": 64, "min_len": 1}}}))
    return d, sd


@pytest.mark.torch
def test_round_trip_is_bit_exact(tmp_path):
    src, sd = _modelscope_dir(tmp_path)
    convert(str(src), str(tmp_path / "jax"), progress=False)
    md = load_model_dir(str(tmp_path / "jax"))
    assert md.generation["beam_size"] == 5 and md.config == PRESETS["micro"]
    export_pytorch(str(tmp_path / "jax"), str(tmp_path / "back"))
    back = torch.load(tmp_path / "back" / "pytorch_model.bin", weights_only=True)
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype, k
        assert torch.equal(back[k], sd[k]), k
    # the tie survives: one storage for the shared embedding and its aliases
    assert back["decoder.output_projection.weight"].data_ptr() == back["encoder.embed_tokens.weight"].data_ptr()
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["d_model"] == 64 and cfg["resnet_type"] == "resnet18"


@pytest.mark.torch
def test_round_trip_bf16_and_safetensors(tmp_path):
    src, sd = _modelscope_dir(tmp_path, dtype=torch.bfloat16)
    convert(str(src), str(tmp_path / "jax"), progress=False)
    export_pytorch(str(tmp_path / "jax"), str(tmp_path / "back"), fmt="safetensors")
    from safetensors.torch import load_file
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    for k in back:
        assert torch.equal(back[k], sd[k]), k


def _fairseq_checkpoint(path, sd):
    """The same weights as an OFA-Sys fairseq ``.pt`` (its key names, ``args`` in ``cfg.model``)."""
    cfg = PRESETS["micro"]
    fs = {mapping.modelscope_to_fairseq_key(k): v for k, v in sd.items()
          if "num_batches_tracked" not in k and k != "decoder.image_position_idx"}
    fs["encoder.version"] = torch.tensor([3.0])
    fs["decoder.version"] = torch.tensor([3.0])
    assert "decoder.layers.0.encoder_attn.k_proj.weight" in fs and "encoder.layers.0.attn_ln.weight" in fs
    args = argparse.Namespace(
        encoder_embed_dim=cfg.d_model, encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_embed_dim=256, decoder_ffn_embed_dim=256,
        resnet_type="resnet18", scale_attn=True, scale_fc=True, scale_heads=True, activation_fn="gelu",
        no_scale_embedding=True, layernorm_embedding=True, patch_layernorm_embedding=True,
        code_layernorm_embedding=True, add_type_embedding=True, attn_scale_factor=2, token_bucket_size=256,
        image_bucket_size=42, max_source_positions=1024, max_target_positions=1024)
    torch.save({"args": None, "cfg": {"model": args}, "model": fs}, path)


@pytest.mark.torch
def test_fairseq_checkpoint(tmp_path):
    src, sd = _modelscope_dir(tmp_path)
    _fairseq_checkpoint(tmp_path / "ocr.pt", sd)
    convert(str(tmp_path / "ocr.pt"), str(tmp_path / "jax"), progress=False)
    md = load_model_dir(str(tmp_path / "jax"))
    assert md.config == PRESETS["micro"]
    ms = load_model_dir_from_ms(src, tmp_path)
    for k, v in flatten(md.variables).items():
        np.testing.assert_array_equal(v, ms[k], err_msg=k)


def load_model_dir_from_ms(src, tmp_path):
    convert(str(src), str(tmp_path / "jax_ms"), progress=False)
    return flatten(load_model_dir(str(tmp_path / "jax_ms")).variables)


# ---- errors: one line, naming the problem ---------------------------------------------------
def _cli_error(capsys, *argv):
    assert cli(list(argv)) == 2  # bad input, as every ofa-jax command
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_error_missing_file(tmp_path, capsys):
    err = _cli_error(capsys, str(tmp_path / "nope.pt"), str(tmp_path / "out"))
    assert "not found" in err and "nope.pt" in err


@pytest.mark.torch
def test_error_other_architecture(tmp_path, capsys):
    src, _ = _modelscope_dir(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(PRESETS["tiny"].to_modelscope())  # config claims tiny, weights are micro
    (src / "config.json").write_text(json.dumps(cfg))
    err = _cli_error(capsys, str(src), str(tmp_path / "out"))
    assert "does not match" in err and "missing keys" in err


@pytest.mark.torch
def test_error_shape_mismatch(tmp_path, capsys):
    src, sd = _modelscope_dir(tmp_path)
    sd["encoder.layers.0.fc1.weight"] = torch.zeros(99, 64)
    torch.save(sd, src / "pytorch_model.bin")
    err = _cli_error(capsys, str(src), str(tmp_path / "out"))
    assert "encoder.layers.0.fc1.weight (99, 64)" in err


@pytest.mark.torch
def test_error_not_ofa(tmp_path, capsys):
    src, _ = _modelscope_dir(tmp_path)
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 4)}, src / "pytorch_model.bin")
    err = _cli_error(capsys, str(src), str(tmp_path / "out"))
    assert "unexpected keys: bert.embeddings.word_embeddings.weight" in err


@pytest.mark.torch
def test_error_truncated_checkpoint(tmp_path, capsys):
    src, _ = _modelscope_dir(tmp_path)
    data = (src / "pytorch_model.bin").read_bytes()
    (src / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    err = _cli_error(capsys, str(src), str(tmp_path / "out"))
    assert "truncated or corrupt" in err


@pytest.mark.torch
def test_error_refuses_pickled_code(tmp_path, capsys):
    src, _ = _modelscope_dir(tmp_path)
    torch.save({"model": {"w": torch.zeros(1)}, "extra": np.float64}, tmp_path / "evil.pt")  # a non-tensor global
    err = _cli_error(capsys, str(tmp_path / "evil.pt"), str(tmp_path / "out"))
    assert "refusing to unpickle" in err


def test_print_table(capsys):
    assert cli(["--print-table", "micro"]) == 0
    out = capsys.readouterr().out
    assert "encoder.layers.0.self_attn.q_proj.weight" in out and "dropped" in out


def test_stock_pipeline_size():
    """ModelScope's stock OCR pipeline knows one square side: a square input is written as that int,
    a rectangle only when asked for, with the reason and the remedy in one line otherwise."""
    from tools.convert_weights.convert import ConversionError, stock_pipeline_size

    assert stock_pipeline_size("m", 480) == 480
    assert stock_pipeline_size("m", [64, 64]) == 64
    assert stock_pipeline_size("m", [32, 320], allow_non_square=True) == [32, 320]
    with pytest.raises(ConversionError, match=r"^m: its input is 32x320 .*--allow-non-square") as e:
        stock_pipeline_size("m", [32, 320])
    assert "\n" not in str(e.value)
