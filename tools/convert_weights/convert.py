"""PyTorch OFA checkpoints <-> ofa-jax model dirs.

Sources: a ModelScope model dir (``config.json``, ``pytorch_model.bin`` or ``*.safetensors``,
``vocab.txt``, optional ``configuration.json``) or an OFA-Sys fairseq ``.pt`` (flags from its saved
``args``/``cfg``). PyTorch files are read with ``torch.load(weights_only=True)``: no arbitrary
pickle code runs (fairseq's ``argparse.Namespace`` is the one extra class allowed).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Optional

import numpy as np

from ofa_jax import buckets
from ofa_jax.config import CHINESE_VOCAB_SIZE, OFAConfig
from ofa_jax.modeldir import ModelDir, flatten, load_model_dir, save_model_dir, unflatten

from . import mapping

BUNDLED_VOCAB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "ofa_jax", "assets", "vocab_zh.txt")
EXTRA_TOKENS = 8192 + 1000  # <code_*> and <bin_*> appended by the tokenizer


class ConversionError(ValueError):
    """Conversion cannot proceed; the message is one line naming the file/keys and the problem."""


@dataclasses.dataclass
class Source:
    kind: str                 # "modelscope" | "fairseq"
    path: str
    config: OFAConfig
    state_dict: dict          # ModelScope key names -> numpy arrays
    vocab_path: Optional[str]
    generation: dict


# ----------------------------------------------------------------------------------------------
# Reading PyTorch files
# ----------------------------------------------------------------------------------------------
def _to_numpy(t):
    import torch
    if t.dtype == torch.bfloat16:  # numpy has no bf16: reinterpret the bits (bit-exact)
        import ml_dtypes
        return t.detach().cpu().contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.detach().cpu().numpy()


def _check_zip_crcs(path: str) -> None:
    """torch.load does not verify the CRC-32 that ``torch.save``'s zip archive stores for every member:
    damaged tensor bytes would load as wrong weights without a word. Check them first (~1 s per GB)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy (pre-1.6) format, or not a checkpoint at all: torch.load reports it
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None
    if bad is not None:
        raise ConversionError(f"{path}: corrupt: the checksum of {bad} does not match (damaged after it was "
                              "written: copy or download it again)")


def torch_load(path: str):
    """torch.load with weights_only=True; one-line errors for missing/corrupt/unsafe files."""
    if not os.path.isfile(path):
        raise ConversionError(f"file not found: {path}")
    try:
        import torch
    except ImportError:
        raise ConversionError("reading PyTorch checkpoints needs torch: pip install 'ofa-jax[convert]'") from None
    import argparse
    _check_zip_crcs(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/zipfile errors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "weights_only" in str(e):
            raise ConversionError(f"{path}: refusing to unpickle a non-tensor object ({msg}); "
                                  "only weights and plain containers are loaded") from None
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {msg}") from None


def load_state_dict_file(path: str) -> dict:
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise ConversionError(f"file not found: {path}")
        try:
            from safetensors.numpy import load_file
            return load_file(path)
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file: {e}") from None
    obj = torch_load(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k: _to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}


def _strip_prefix(sd: dict) -> dict:
    """ModelScope wraps OFAModel as ``model.``; accept both."""
    if sd and all(k.startswith("model.") for k in sd):
        return {k[len("model."):]: v for k, v in sd.items()}
    return sd


def read_modelscope_dir(path: str) -> Source:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConversionError(f"{path}: missing config.json (expected a ModelScope OFA model dir)")
    with open(cfg_path) as f:
        ms_cfg = json.load(f)
    if ms_cfg.get("model_type", "ofa") != "ofa":
        raise ConversionError(f"{cfg_path}: model_type is {ms_cfg.get('model_type')!r}, not 'ofa'")
    try:
        config = OFAConfig.from_modelscope(ms_cfg)
    except (ValueError, TypeError) as e:
        raise ConversionError(f"{cfg_path}: {e}") from None
    weights = [n for n in ("pytorch_model.bin", "model.safetensors", "pytorch_model.safetensors")
               if os.path.isfile(os.path.join(path, n))]
    weights += sorted(n for n in os.listdir(path) if n.endswith(".safetensors") and n not in weights)
    if not weights:
        raise ConversionError(f"{path}: no weights file (pytorch_model.bin or *.safetensors)")
    sd = _strip_prefix(load_state_dict_file(os.path.join(path, weights[0])))
    vocab = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab):
        raise ConversionError(f"{path}: missing vocab.txt")
    gen = {}
    conf_path = os.path.join(path, "configuration.json")
    if os.path.isfile(conf_path):
        with open(conf_path) as f:
            conf = json.load(f)
        model_conf = conf.get("model", {})
        gen.update(model_conf.get("beam_search", {}))
        if "patch_image_size" in model_conf:
            gen["patch_image_size"] = model_conf["patch_image_size"]
    return Source("modelscope", path, config, sd, vocab, gen)


def config_from_fairseq(args: dict, sd: dict) -> OFAConfig:
    """OFAConfig from the flags an OFA-Sys checkpoint saved (models/ofa/ofa.py names)."""
    g = lambda k, d=None: args.get(k, d)
    if g("scale_resids", False):
        raise ConversionError("fairseq checkpoint uses --scale-resids, which ofa-jax does not support")
    if bool(g("scale_attn", False)) != bool(g("scale_fc", False)):
        raise ConversionError("fairseq checkpoint sets only one of --scale-attn/--scale-fc; ofa-jax needs both or neither")
    if g("entangle_position_embedding", False):
        raise ConversionError("fairseq checkpoint uses --entangle-position-embedding; ofa-jax supports it only "
                              "from ModelScope configs (the fairseq variant is not parity-tested)")
    if g("max_source_positions", 1024) != g("max_target_positions", 1024):
        raise ConversionError("fairseq checkpoint has different max_source/target_positions; not supported")
    d = g("encoder_embed_dim")
    if d is None:
        raise ConversionError("fairseq checkpoint args lack encoder_embed_dim; is this an OFA checkpoint?")
    emb = sd.get("encoder.embed_tokens.weight")
    if emb is None:
        raise ConversionError("fairseq checkpoint has no encoder.embed_tokens.weight; is this an OFA checkpoint?")
    return OFAConfig(
        vocab_size=int(emb.shape[0]), d_model=d, encoder_layers=g("encoder_layers"), decoder_layers=g("decoder_layers"),
        encoder_attention_heads=g("encoder_attention_heads"), decoder_attention_heads=g("decoder_attention_heads"),
        encoder_ffn_dim=g("encoder_ffn_embed_dim"), decoder_ffn_dim=g("decoder_ffn_embed_dim"),
        resnet_type=g("resnet_type", "resnet101"), max_position_embeddings=g("max_source_positions", 1024),
        token_bucket_size=g("token_bucket_size", 256), image_bucket_size=g("image_bucket_size", 42),
        attn_scale_factor=float(g("attn_scale_factor", 2.0)), normformer=bool(g("scale_attn", False)),
        scale_heads=bool(g("scale_heads", False)),
        encoder_normalize_before=bool(g("encoder_normalize_before", True)),
        decoder_normalize_before=bool(g("decoder_normalize_before", True)),
        layernorm_embedding=bool(g("layernorm_embedding", True)),
        patch_layernorm_embedding=bool(g("patch_layernorm_embedding", True)),
        code_layernorm_embedding=bool(g("code_layernorm_embedding", True)),
        add_type_embedding=bool(g("add_type_embedding", True)), scale_embedding=not g("no_scale_embedding", True),
        share_decoder_input_output_embed=bool(g("share_decoder_input_output_embed", True)),
        activation_function=g("activation_fn", "gelu"), dropout=float(g("dropout", 0.1)),
        attention_dropout=float(g("attention_dropout", 0.0)), activation_dropout=float(g("activation_dropout", 0.0)),
        encoder_drop_path_rate=float(g("encoder_drop_path_rate", 0.0)),
        decoder_drop_path_rate=float(g("decoder_drop_path_rate", 0.0)),
        resnet_drop_path_rate=float(g("resnet_drop_path_rate", 0.0)))


def read_fairseq(path: str, vocab: Optional[str]) -> Source:
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' entry)")
    args = ckpt.get("args")
    if args is None and isinstance(ckpt.get("cfg"), dict):
        args = ckpt["cfg"].get("model")
    if args is None:
        raise ConversionError(f"{path}: fairseq checkpoint without saved args/cfg; cannot infer the architecture")
    args = vars(args) if hasattr(args, "__dict__") else dict(args)
    sd = {mapping.fairseq_to_modelscope_key(k): _to_numpy(v) for k, v in ckpt["model"].items() if hasattr(v, "shape")}
    config = config_from_fairseq(args, sd)
    if vocab is None and config.vocab_size == CHINESE_VOCAB_SIZE:
        print(f"note: no --vocab given; using the bundled Chinese OFA vocab ({CHINESE_VOCAB_SIZE} ids)", file=sys.stderr)
        vocab = BUNDLED_VOCAB
    if vocab is None:
        raise ConversionError(f"{path}: vocab size {config.vocab_size} is not the Chinese OFA vocab; pass --vocab PATH")
    return Source("fairseq", path, config, sd, vocab, {})


def read_source(src: str, vocab: Optional[str] = None) -> Source:
    if os.path.isdir(src):
        source = read_modelscope_dir(src)
        if vocab is not None:
            source.vocab_path = vocab
        return source
    if os.path.isfile(src):
        return read_fairseq(src, vocab)
    raise ConversionError(f"source not found: {src}")


# ----------------------------------------------------------------------------------------------
# State dict <-> variables
# ----------------------------------------------------------------------------------------------
def _to_flax(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return np.ascontiguousarray(a.T)
    if kind == "conv":
        return np.ascontiguousarray(a.transpose(2, 3, 1, 0))
    return a


def _to_torch(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return np.ascontiguousarray(a.T)
    if kind == "conv":
        return np.ascontiguousarray(a.transpose(3, 2, 0, 1))
    return a


def _expected_shapes(cfg: OFAConfig) -> dict:
    from ofa_jax.model import abstract_variables
    return {k: tuple(v.shape) for k, v in flatten(abstract_variables(cfg)).items()}


def _list(keys, n=6):
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def state_dict_to_variables(sd: dict, cfg: OFAConfig, where: str = "checkpoint", progress: bool = False):
    """ModelScope-named numpy state dict -> (variables, extras). Loud on any unknown/missing/misfit key."""
    rows = mapping.table(cfg)
    by_key = {r.torch_key: r for r in rows}
    extras_expected = set(mapping.extra_keys(cfg))
    unmapped = [k for k in sd if k not in by_key and k not in extras_expected and mapping.dropped_reason(k) is None]
    missing = [r.torch_key for r in rows if r.torch_key not in sd]
    if unmapped or missing:
        parts = []
        if unmapped:
            parts.append(f"{len(unmapped)} unexpected keys: {_list(unmapped)}")
        if missing:
            parts.append(f"{len(missing)} missing keys: {_list(missing)}")
        raise ConversionError(f"{where} does not match an OFA {cfg.resnet_type}/d{cfg.d_model}/"
                              f"{cfg.encoder_layers}+{cfg.decoder_layers} architecture: " + "; ".join(parts))
    shapes = _expected_shapes(cfg)
    produced = {r.flax_path for r in rows}
    if set(shapes) != produced:  # the table and the model definition must describe the same variables
        raise ConversionError(f"internal: table/model mismatch: {_list(set(shapes) ^ produced)}")
    if cfg.share_decoder_input_output_embed:
        for alias in mapping.ALIASES:
            if alias in sd and not np.array_equal(sd[alias], sd["encoder.embed_tokens.weight"]):
                raise ConversionError(f"{where}: {alias} differs from encoder.embed_tokens.weight, but the config "
                                      "ties them (share_decoder_input_output_embed)")
    flat, bad = {}, []
    it = rows
    if progress and len(rows) > 200:
        from tqdm import tqdm
        it = tqdm(rows, desc="converting", unit="tensor", file=sys.stderr, disable=None)  # no bar unless a TTY
    for r in it:
        a = _to_flax(np.asarray(sd[r.torch_key]), r.kind)
        if tuple(a.shape) != shapes[r.flax_path]:
            bad.append(f"{r.torch_key} {tuple(sd[r.torch_key].shape)}")
            continue
        flat[r.flax_path] = a
    if bad:
        raise ConversionError(f"{where}: {len(bad)} tensors have shapes that do not fit the config "
                              f"(checkpoint of another architecture?): {_list(bad, 4)}")
    extras = {k: np.asarray(sd[k]) for k in extras_expected if k in sd}
    return unflatten(flat), extras


def _default_extra(key: str, shape, cfg: OFAConfig) -> np.ndarray:
    if key.endswith(("ln.weight", "embedding.weight")) and len(shape) == 1:
        return np.ones(shape, np.float32)
    if len(shape) == 1:
        return np.zeros(shape, np.float32)
    if "rel_pos_table" in key:
        return np.zeros(shape, np.float32)
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[1] ** -0.5))


def _extra_shapes(cfg: OFAConfig) -> dict:
    d, h = cfg.d_model, cfg.decoder_attention_heads
    out = {"decoder.embed_image_positions.weight": (cfg.image_bucket_size ** 2 + 1, d),
           "decoder.image_pos_ln.weight": (d,), "decoder.image_pos_ln.bias": (d,),
           "decoder.code_layernorm_embedding.weight": (d,), "decoder.code_layernorm_embedding.bias": (d,)}
    for k in mapping.extra_keys(cfg):
        if "image_rel_pos_table_list" in k:
            out[k] = ((2 * cfg.image_bucket_size - 1) ** 2 + 3, h)
    return out


def variables_to_state_dict(variables: dict, extras: dict, cfg: OFAConfig) -> dict:
    """ofa-jax variables -> a complete ModelScope state dict (numpy), buffers and aliases included."""
    flat = flatten(variables)
    sd = {}
    for r in mapping.table(cfg):
        if r.flax_path not in flat:
            raise ConversionError(f"model dir lacks variable {r.flax_path}")
        sd[r.torch_key] = _to_torch(np.asarray(flat[r.flax_path]), r.kind)
    shapes = _extra_shapes(cfg)
    for k in mapping.extra_keys(cfg):
        sd[k] = np.asarray(extras[k]) if k in extras else _default_extra(k, shapes[k], cfg)
    if cfg.share_decoder_input_output_embed:
        for alias in mapping.ALIASES:
            sd[alias] = sd["encoder.embed_tokens.weight"]
    token = buckets.token_bucket_table(cfg.token_bucket_size, cfg.max_position_embeddings).astype(np.int64)
    image = buckets.image_bucket_table(cfg.image_bucket_size)
    for part in ("encoder", "decoder"):
        sd[f"{part}.token_rp_bucket"] = token
        sd[f"{part}.image_rp_bucket"] = image
    sd["decoder.image_position_idx"] = _decoder_image_position_idx(cfg)
    for r in mapping.table(cfg):
        if r.torch_key.endswith("running_mean"):
            sd[r.torch_key[: -len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return sd


def _decoder_image_position_idx(cfg: OFAConfig, code_image_size: int = 128) -> np.ndarray:
    """ModelScope's decoder buffer: [0] + window ids + [1024]*768 (image-code generation only)."""
    w = code_image_size // 8
    r, c = np.divmod(np.arange(w * w), w)
    ids = 1 + r * cfg.image_bucket_size + c
    return np.concatenate([[0], ids, [1024] * 768]).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------
def _check_vocab(vocab_path: str, cfg: OFAConfig):
    with open(vocab_path, encoding="utf-8") as f:
        n = len(f.read().split("\n")) - 1  # trailing newline; never splitlines() (U+2028 is a token)
    if n + EXTRA_TOKENS != cfg.vocab_size:
        raise ConversionError(f"{vocab_path}: {n} entries + {EXTRA_TOKENS} code/bin tokens != vocab_size "
                              f"{cfg.vocab_size} of the checkpoint")


def convert(src: str, dst: str, vocab: Optional[str] = None, dtype: Optional[str] = None, progress: bool = True):
    source = read_source(src, vocab)
    _check_vocab(source.vocab_path, source.config)
    variables, extras = state_dict_to_variables(source.state_dict, source.config, where=src, progress=progress)
    save_model_dir(dst, source.config, variables, source.vocab_path, generation=source.generation, extras=extras,
                   dtype=dtype, metadata={"converted_from": os.path.basename(os.path.normpath(src)),
                                          "source_format": source.kind})
    return source


def stock_pipeline_size(model_dir: str, patch_image_size, allow_non_square: bool = False):
    """The ``patch_image_size`` an export writes: one int where the model's input is square (what
    ModelScope's stock OCR pipeline, which resizes every image to one square side, can run). A
    rectangle ``[H, W]`` (a line-shaped model trained here) is a ConversionError saying why and what
    to do, unless ``allow_non_square``: then it is written as it is, for ``OfaForAllTasks`` with
    preprocessing of your own."""
    size = patch_image_size
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ConversionError(f"{model_dir}/generation.json: patch_image_size {list(size)} is neither N nor [H, W]")
        h, w = (int(x) for x in size)
        if h == w:
            return h
        if not allow_non_square:
            raise ConversionError(
                f"{model_dir}: its input is {h}x{w} (generation.json patch_image_size [{h}, {w}]), not square: "
                f"ModelScope's stock OCR pipeline, pipeline(Tasks.ocr_recognition), resizes every image to one "
                f"square side and cannot run it. Pass --allow-non-square to write it anyway (load it with "
                f"OfaForAllTasks and feed {h}x{w} inputs made as ofa_jax.preprocess.resize_and_pad_uint8 makes "
                f"them), or fine-tune a square model for the stock pipeline (--config.data.image_height=0 "
                f"--config.data.image_size=N)")
        return [h, w]
    return int(size)


def export_pytorch(model_dir: str, dst: str, fmt: str = "bin", allow_non_square: bool = False) -> str:
    """ofa-jax model dir -> a ModelScope model dir that ``pipeline(Tasks.ocr_recognition, model=dst)`` loads.

    A model with a non-square input (``patch_image_size: [H, W]``) is refused before anything is
    written (`stock_pipeline_size`), unless ``allow_non_square``."""
    md: ModelDir = load_model_dir(model_dir)
    size = stock_pipeline_size(model_dir, md.generation.get("patch_image_size", 480), allow_non_square)
    sd = variables_to_state_dict(md.variables, md.extras, md.config)
    os.makedirs(dst, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        unique = {k: np.array(v, order="C") for k, v in sd.items() if k not in mapping.ALIASES}  # keeps 0-d
        out = os.path.join(dst, "model.safetensors")
        save_file(unique, out, metadata={"format": "pt"})
    else:
        import torch
        base = {k: torch.from_numpy(np.array(v)) if not _is_bf16(v) else _bf16_to_torch(v)
                for k, v in sd.items() if k not in mapping.ALIASES}
        for alias in mapping.ALIASES:  # keep the tie: same storage, as PyTorch saved it
            if alias in sd:
                base[alias] = base["encoder.embed_tokens.weight"]
        out = os.path.join(dst, "pytorch_model.bin")
        torch.save(base, out)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(md.config.to_modelscope(), f, indent=2)
    gen = md.generation
    configuration = {
        "framework": "pytorch", "task": "ocr-recognition",
        "model": {"type": "ofa", "language": "zh", "patch_image_size": size, "max_image_size": size,
                  "beam_search": {k: gen[k] for k in ("beam_size", "max_len_b", "min_len", "no_repeat_ngram_size")
                                  if k in gen}},
        "pipeline": {"type": "ofa-ocr-recognition"},
    }
    with open(os.path.join(dst, "configuration.json"), "w") as f:
        json.dump(configuration, f, indent=2)
    with open(md.vocab_path, "rb") as s, open(os.path.join(dst, "vocab.txt"), "wb") as d:
        d.write(s.read())
    return out


def _is_bf16(a) -> bool:
    return str(np.asarray(a).dtype) == "bfloat16"


def _bf16_to_torch(a):
    import torch
    return torch.from_numpy(np.asarray(a).view(np.int16).copy()).view(torch.bfloat16)
