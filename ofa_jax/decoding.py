"""Beam search with fairseq's semantics (what ModelScope's OFA generator does), cached and jit-compiled.

One ``lax.while_loop`` step per output position: the decoder runs one token per hypothesis against
a :class:`~ofa_jax.model.DecodeCache` (self-attention K/V appended, cross-attention K/V projected once
per image), then the fairseq ``BeamSearch`` step selects candidates. Shapes are static
(``max_len`` is known), images are independent (each has its own beams), and the loop exits early
once every image is finished.

fairseq rules kept exactly: top ``2*beam`` candidates per image (step 0 uses only beam 0); eos is
banned before ``min_len`` and forced at ``max_len``; pad is never chosen; an eos among the first
``beam`` candidates finalises a hypothesis with score ``sum(logp) / (len+1)**len_penalty`` (len+1
counts the eos); an image is done when it has ``beam`` finalised hypotheses or reaches ``max_len``;
the ``cands_to_ignore`` bookkeeping for beams that had to be filled with eos candidates; optional
``no_repeat_ngram_size``. Greedy decoding is ``beam_size=1`` under the same rules.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from ofa_jax.model import OFA
from ofa_jax.xla_options import compiler_options

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    beam_size: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 64
    min_len: int = 1
    len_penalty: float = 1.0
    normalize_scores: bool = True
    no_repeat_ngram_size: int = 0
    unk_penalty: float = 0.0

    def max_len(self, src_len: int) -> int:
        """fairseq: ``int(max_len_a * src_len + max_len_b)``; src_len is the prompt's token count."""
        n = int(self.max_len_a * src_len + self.max_len_b)
        if self.min_len > n:
            raise ValueError(f"min_len {self.min_len} is larger than max_len {n}")
        return n

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@flax.struct.dataclass
class BeamOutput:
    tokens: jax.Array             # (B, K, L) hypotheses without bos, eos-terminated, then pad
    lengths: jax.Array            # (B, K) tokens including eos
    scores: jax.Array             # (B, K) fairseq score (normalised unless normalize_scores=False)
    positional_scores: jax.Array  # (B, K, L) per-token log-probabilities


@flax.struct.dataclass
class _State:
    step: jax.Array
    cache: Any
    tokens: jax.Array           # (B, K, T+2) running hypotheses, bos at 0
    scores: jax.Array           # (B, K, T+1) cumulative log-prob after each step
    ignore: jax.Array           # (B, K) fairseq cands_to_ignore
    fin_tokens: jax.Array       # (B, K, T+2)
    fin_cum: jax.Array          # (B, K, T+1) cumulative scores of finalised hypotheses
    fin_scores: jax.Array       # (B, K)
    fin_len: jax.Array          # (B, K)
    fin_count: jax.Array        # (B,)
    finished: jax.Array         # (B,)


def _take(a, idx):
    """a (B, C, ...) gathered along axis 1 with idx (B, K)."""
    idx = idx.reshape(idx.shape + (1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, idx, axis=1)


def _ban_repeated_ngrams(lprobs, tokens, step, n):
    """fairseq NGramRepeatBlock: ban t if (last n-1 tokens, t) already occurred in the hypothesis."""
    b, k, length = tokens.shape
    last = jax.lax.dynamic_slice_in_dim(tokens, step + 2 - n, n - 1, axis=2)  # (B,K,n-1)
    windows = jnp.stack([tokens[:, :, i:length - n + 1 + i] for i in range(n)], axis=-1)  # (B,K,W,n)
    w = windows.shape[2]
    match = jnp.all(windows[..., :-1] == last[:, :, None, :], axis=-1) & (jnp.arange(w) + n - 1 <= step)
    match = match & (step + 2 - n >= 0)
    banned = windows[..., -1]
    upd = jnp.where(match, NEG_INF, jnp.inf)
    bi = jnp.broadcast_to(jnp.arange(b)[:, None, None], banned.shape)
    ki = jnp.broadcast_to(jnp.arange(k)[None, :, None], banned.shape)
    return lprobs.at[bi, ki, banned].min(upd)


def beam_search(model: OFA, variables, images, src_tokens, gen: GenerationConfig, pad_id=1, eos_id=2, bos_id=0,
                unk_id=3, image_valid=None, num_views: int = 1) -> BeamOutput:
    """Decodes a batch of images; call under ``jax.jit`` (see :func:`make_generate_fn`).

    ``num_views`` > 1: ``images`` holds that many views of each of B images, view-major (view v of
    image b at row ``v * B + b``; ``src_tokens`` has B rows), and every step scores a token by the mean
    of the views' log-probabilities (a product of experts over inputs), so one search follows the
    reading all views find likely (ofa_jax/views.py).
    """
    K = gen.beam_size
    max_len = gen.max_len(src_tokens.shape[1])
    B = images.shape[0] // num_views
    views = (lambda a: jnp.tile(a, (num_views,) + (1,) * (a.ndim - 1))) if num_views > 1 else (lambda a: a)
    if image_valid is not None:  # (B,) like src_tokens
        image_valid = views(image_valid)
    enc = model.apply(variables, images, views(src_tokens), image_valid, method=OFA.encode)
    cache = model.apply(variables, enc, K, max_len + 1, method=OFA.init_cache)
    T = max_len
    tokens = jnp.full((B, K, T + 2), pad_id, jnp.int32).at[:, :, 0].set(bos_id)
    state = _State(step=jnp.zeros((), jnp.int32), cache=cache, tokens=tokens,
                   scores=jnp.zeros((B, K, T + 1), jnp.float32), ignore=jnp.zeros((B, K), bool),
                   fin_tokens=jnp.full((B, K, T + 2), pad_id, jnp.int32),
                   fin_cum=jnp.zeros((B, K, T + 1), jnp.float32), fin_scores=jnp.full((B, K), NEG_INF, jnp.float32),
                   fin_len=jnp.zeros((B, K), jnp.int32), fin_count=jnp.zeros((B,), jnp.int32),
                   finished=jnp.zeros((B,), bool))
    two_k = 2 * K

    def cond(s: _State):
        return (s.step <= max_len) & ~jnp.all(s.finished)

    def body(s: _State):
        step = s.step
        cur = jax.lax.dynamic_index_in_dim(s.tokens, step, axis=2, keepdims=False)  # (B,K)
        logits, cache = model.apply(variables, views(cur), s.cache, method=OFA.decode_step)
        lprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B,K,V)
        if num_views > 1:
            lprobs = lprobs.reshape((num_views, B) + lprobs.shape[1:]).mean(axis=0)
        V = lprobs.shape[-1]
        vocab = jnp.arange(V)
        lprobs = jnp.where((step < gen.min_len) & (vocab == eos_id), NEG_INF, lprobs)
        lprobs = jnp.where(jnp.isnan(lprobs), NEG_INF, lprobs)
        lprobs = jnp.where(vocab == pad_id, NEG_INF, lprobs)
        if gen.unk_penalty:
            lprobs = lprobs - jnp.where(vocab == unk_id, gen.unk_penalty, 0.0)
        lprobs = jnp.where((step >= max_len) & (vocab != eos_id), NEG_INF, lprobs)
        if gen.no_repeat_ngram_size > 0:
            lprobs = _ban_repeated_ngrams(lprobs, s.tokens, step, gen.no_repeat_ngram_size)

        # --- fairseq BeamSearch.step ---
        prev = jax.lax.dynamic_index_in_dim(s.scores, jnp.maximum(step - 1, 0), axis=2, keepdims=False)
        cum = lprobs + prev[..., None]
        # step 0: all beams are identical; only beam 0 competes
        cum = jnp.where(step == 0, jnp.where(jnp.arange(K)[None, :, None] == 0, lprobs, NEG_INF), cum)
        n_cand = min(two_k, V - 1)
        # Top 2K of the (K*V) flattened scores, in two stages: per beam, then among the K*2K
        # survivors. Same set and order as one top_k (ties: lower beam, then lower token first), but
        # inside a while_loop XLA:CPU lowers one big top_k to a full sort (~25 ms per step for base).
        beam_vals, beam_toks = jax.lax.top_k(cum, n_cand)  # (B,K,n)
        cand_scores, pick = jax.lax.top_k(beam_vals.reshape(B, K * n_cand), n_cand)
        cand_beams = pick // n_cand
        cand_tokens = jnp.take_along_axis(beam_toks.reshape(B, K * n_cand), pick, axis=1)
        if n_cand < two_k:  # only for tiny vocabularies
            pad_n = two_k - n_cand
            cand_scores = jnp.pad(cand_scores, ((0, 0), (0, pad_n)), constant_values=NEG_INF)
            cand_beams = jnp.pad(cand_beams, ((0, 0), (0, pad_n)))
            cand_tokens = jnp.pad(cand_tokens, ((0, 0), (0, pad_n)), constant_values=pad_id)

        eos_mask = (cand_tokens == eos_id) & (cand_scores != NEG_INF)
        eos_k = eos_mask[:, :K] & ~s.ignore

        # --- finalise hypotheses ending in eos (first K candidates, in rank order) ---
        want = eos_k & ~s.finished[:, None]
        rank = s.fin_count[:, None] + jnp.cumsum(want, axis=1) - 1
        accept = want & (rank < K)
        slot_of = jnp.where(accept, rank, K)  # K = nowhere
        onehot = slot_of[:, :, None] == jnp.arange(K)[None, None, :]  # (B, cand, slot)
        has_new = jnp.any(onehot, axis=1)
        src = jnp.argmax(onehot, axis=1)  # candidate feeding each slot
        beams_k = _take(cand_beams[:, :K], src)
        new_rows = _take(s.tokens, beams_k)
        new_rows = jax.lax.dynamic_update_index_in_dim(new_rows, jnp.full((B, K), eos_id, jnp.int32), step + 1, axis=2)
        eos_score = _take(cand_scores[:, :K], src)
        new_cum = _take(s.scores, beams_k)
        new_cum = jax.lax.dynamic_update_index_in_dim(new_cum, eos_score, step, axis=2)
        final = eos_score / (step + 1.0) ** gen.len_penalty if gen.normalize_scores else eos_score
        fin_tokens = jnp.where(has_new[..., None], new_rows, s.fin_tokens)
        fin_cum = jnp.where(has_new[..., None], new_cum, s.fin_cum)
        fin_scores = jnp.where(has_new, final, s.fin_scores)
        fin_len = jnp.where(has_new, step + 1, s.fin_len)
        fin_count = s.fin_count + jnp.sum(accept, axis=1)
        finished = s.finished | (fin_count >= K) | (step >= max_len)

        # --- choose the K active hypotheses: first K candidates that are not eos/ignored ---
        em = eos_mask.at[:, :K].set(eos_k | s.ignore)
        key = em.astype(jnp.int32) * two_k + jnp.arange(two_k)[None, :]
        neg, active = jax.lax.top_k(-key, K)
        ignore = (-neg) >= two_k
        active_beams = _take(cand_beams, active)
        tokens = _take(s.tokens, active_beams)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, _take(cand_tokens, active), step + 1, axis=2)
        scores = _take(s.scores, active_beams)
        scores = jax.lax.dynamic_update_index_in_dim(scores, _take(cand_scores, active), step, axis=2)
        cache = cache.reorder(views(active_beams))
        return _State(step=step + 1, cache=cache, tokens=tokens, scores=scores, ignore=ignore, fin_tokens=fin_tokens,
                      fin_cum=fin_cum, fin_scores=fin_scores, fin_len=fin_len, fin_count=fin_count, finished=finished)

    s = jax.lax.while_loop(cond, body, state)
    order = jnp.argsort(-s.fin_scores, axis=1, stable=True)
    out_tokens = _take(s.fin_tokens, order)[:, :, 1:]
    cum = _take(s.fin_cum, order)
    pos = jnp.concatenate([cum[:, :, :1], cum[:, :, 1:] - cum[:, :, :-1]], axis=2)
    lengths = _take(s.fin_len, order)
    pos = jnp.where(jnp.arange(T + 1)[None, None, :] < lengths[..., None], pos, 0.0)
    return BeamOutput(tokens=out_tokens, lengths=lengths, scores=_take(s.fin_scores, order), positional_scores=pos)


def make_generate_fn(model: OFA, gen: GenerationConfig, backend=None, **ids):
    """jit-compiled ``fn(variables, images, src_tokens) -> BeamOutput`` (shapes are static per call).
    ``backend``: the platform it is compiled for, when not this process's (``ofa_jax.aot``)."""
    return jax.jit(functools.partial(beam_search, model, gen=gen, **ids), compiler_options=compiler_options(backend))
