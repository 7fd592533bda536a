"""Training losses: ModelScope's label-smoothed cross-entropy for OFA, and R-Drop's symmetric KL.

ModelScope's ``AdjustLabelSmoothedCrossEntropyCriterion`` (the OFA fine-tuning criterion) keeps the
target positions that are not pad, and per kept token computes

    loss_t = (1 - eps - eps_i) * nll_t + eps_i * sum_v(-log p_t(v)),   eps_i = eps / (V - 1)

then averages over the kept tokens (``ntokens``). With R-Drop the batch is fed twice (the two copies
see different dropout), the average covers both copies, and ``reg_alpha`` times the symmetric KL
``(KL(p||q) + KL(q||p)) / 2`` -- a *sum* over tokens and vocabulary, not a mean -- is added.

The functions here return sums and the token count rather than means so that gradient
accumulation over micro-batches gives exactly the loss of the whole batch (divide once at the end).
Options of the criterion that the OCR recipe leaves off (constraint ranges, ``drop_worst_ratio``,
``ignore_prefix_size``, ``ignore_eos``, CTC) are not implemented.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothed_nll(logits, target, mask, epsilon: float):
    """Sums over the tokens where ``mask`` is True.

    logits (B,T,V) any float dtype (log-softmax is taken in float32), target (B,T) int, mask (B,T) bool.
    Returns ``(loss_sum, nll_sum, ntokens)``; ModelScope's loss is ``loss_sum / ntokens``.
    """
    lprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    vocab = lprobs.shape[-1]
    nll = -jnp.take_along_axis(lprobs, target[..., None].astype(jnp.int32), axis=-1)[..., 0]
    smooth = -jnp.sum(lprobs, axis=-1)
    eps_i = epsilon / (vocab - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    m = mask.astype(jnp.float32)
    return jnp.sum(loss * m), jnp.sum(nll * m), jnp.sum(m)


def rdrop_kl(logits_p, logits_q, mask):
    """``(KL(p||q) + KL(q||p)) / 2`` summed over masked tokens and the vocabulary (torch ``kl_div``
    with reduction='sum', as ModelScope's ``kl_loss``). Inputs (B,T,V) logits of the two copies."""
    p = jax.nn.log_softmax(logits_p.astype(jnp.float32), axis=-1)
    q = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
    # kl_div(input=p, target=exp(q)) = sum exp(q) * (q - p); symmetric average of both directions.
    per_tok = jnp.sum(jnp.exp(q) * (q - p) + jnp.exp(p) * (p - q), axis=-1) / 2
    return jnp.sum(per_tok * mask.astype(jnp.float32))


def ofa_criterion(logits, target, mask, epsilon: float = 0.1, use_rdrop: bool = False, reg_alpha: float = 1.0):
    """The whole criterion as ModelScope computes it, as one scalar (for tests and single batches).

    With ``use_rdrop`` the first and second halves of the batch are the two copies of the same samples.
    Returns ``(loss, nll_loss, ntokens)`` with loss and nll averaged over non-pad tokens.
    """
    loss_sum, nll_sum, n = label_smoothed_nll(logits, target, mask, epsilon)
    loss, nll = loss_sum / n, nll_sum / n
    if use_rdrop:
        half = logits.shape[0] // 2
        loss = loss + reg_alpha * rdrop_kl(logits[:half], logits[half:], mask[:half])
    return loss, nll, n
