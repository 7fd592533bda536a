"""OFA's Chinese tokenizer: BERT WordPiece over OFA's id layout, ids identical to ModelScope's.

Id layout (the vocab file of a Chinese OFA model dir, ``vocab.txt``)::

    0..3            <s> <pad> </s> <unk>
    4..21131        bert-base-chinese (id = bert id + 4)
    21132           <mask>
    21133..29324    <code_0> .. <code_8191>   (not in the file: appended here, as ModelScope does)
    29325..30324    <bin_0> .. <bin_999>      (idem)

Encoding reproduces ModelScope's ``OFATokenizerZH`` (a transformers-4 "slow" BERT tokenizer with the
code/bin tokens added) step by step:

1. lowercase character by character (transformers' slow tokenizers do this for ``do_lower_case``; it is
   *not* ``str.lower()`` on the whole string: a final capital sigma becomes ``σ``, not ``ς``);
2. cut out the special and added tokens (``<s>``, ``</s>``, ``<code_17>``, ...) wherever they occur;
3. BERT's basic tokenization of each remaining piece: drop control and unassigned characters, turn
   whitespace into spaces, isolate CJK ideographs, NFC, split on whitespace, lowercase, strip accents
   (NFD, drop combining marks), split off punctuation;
4. WordPiece, greedy longest-match-first with ``##`` continuations (words over 100 characters and
   words with an unmatchable piece become ``<unk>``).

Step 3 is done here in Python with :mod:`unicodedata`, exactly as the reference does it, instead of by
the Rust normalizer of transformers 5's ``BertTokenizer``: the two disagree on characters that are
unassigned in CPython's Unicode tables but assigned in the Rust crate's (e.g. the newest emoji: the
reference drops them, the Rust normalizer maps them to ``<unk>``). Step 4 is the WordPiece model of a
transformers ``BertTokenizer`` built over the same vocabulary.

Decoding reproduces ``tokenizer.batch_decode(ids, skip_special_tokens=True)`` as ModelScope's OCR model
calls it, and :meth:`OFATokenizer.postprocess` the post-processing of its OCR pipeline (strip, then
remove the spaces next to any character outside ``[a-zA-Z0-9.,:!?]``).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from importlib import resources

__all__ = [
    "OCR_PROMPT",
    "NUM_CODE_TOKENS",
    "NUM_BIN_TOKENS",
    "OFATokenizer",
    "postprocess_ocr_text",
]

OCR_PROMPT = "图片上的文字是什么?"
NUM_CODE_TOKENS = 8192
NUM_BIN_TOKENS = 1000
VOCAB_FILENAME = "vocab.txt"

_BOS, _PAD, _EOS, _UNK, _MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
_SPECIAL_TOKENS = (_BOS, _PAD, _EOS, _UNK, _MASK)
_MAX_CHARS_PER_WORD = 100  # longer words become <unk> (BERT's WordPiece default)

# Candidates for added tokens; a match only counts if it is really in the vocabulary
# (``<code_8192>`` or ``<code_01>`` are plain text).
_ADDED_TOKEN_RE = re.compile(r"<(?:s|/s|pad|unk|mask|code_[0-9]+|bin_[0-9]+)>")
_ALNUM_RE = re.compile(r"[a-z0-9]+")

# ModelScope's OCR post-processing (``OfaForAllTasks.detokenizer``).
_OCR_SPACES_RE = re.compile(r"((?<=[^ a-zA-Z0-9.,:!?]) +| +(?=[^ a-zA-Z0-9.,:!?]))")


def postprocess_ocr_text(text: str) -> str:
    """ModelScope's OCR post-processing of a decoded string.

    Strips surrounding whitespace, then removes every run of spaces that follows or precedes a character
    outside ``[ a-zA-Z0-9.,:!?]``: ``"中 文 ab c"`` -> ``"中文ab c"``.
    """
    return _OCR_SPACES_RE.sub("", text.strip())


def _is_cjk(cp: int) -> bool:
    # The CJK blocks BERT treats as one-character words (unified ideographs, extensions A-E,
    # compatibility ideographs). Hangul, kana and full-width forms are not in it.
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # All non-alphanumeric ASCII counts (e.g. "$", "^", "`"), plus Unicode P* categories.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _clean_and_space(text: str) -> str:
    """Drop NUL, U+FFFD and control/format/unassigned/private-use characters; whitespace -> space;
    surround CJK ideographs with spaces."""
    out = []
    for ch in text:
        if ch in " \t\n\r":
            out.append(" ")
            continue
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "C":
            continue
        if cat == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    return "".join(out)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return pieces


def _basic_tokenize(text: str) -> list[str]:
    """BERT's basic tokenization with lowercasing (the reference's ``BasicTokenizer``)."""
    text = unicodedata.normalize("NFC", _clean_and_space(text))
    words: list[str] = []
    for word in text.split():  # str.split(): also splits on U+2028, U+2029, U+001C..U+001F
        if word not in _SPECIAL_TOKENS:
            word = _strip_accents(word.lower())
        # Checked again after lowercasing and accent stripping, as the reference does: "<\x00s>" and
        # "\u0301<s>" come out here as "<s>", kept whole (and looked up as <s>, id 0).
        words.extend([word] if word in _SPECIAL_TOKENS else _split_punctuation(word))
    # A word can vanish entirely (a lone combining mark); re-splitting drops empty pieces.
    return " ".join(words).split()


def _read_vocab(path: str | os.PathLike) -> list[str]:
    # Text mode with universal newlines, then split on "\n" only: this is what ``readlines()`` does.
    # ``str.splitlines()`` would also split on U+2028 (a token of bert-base-chinese) and shift ids.
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


class OFATokenizer:
    """Tokenizer of OFA's Chinese models (``OFATokenizerZH`` in ModelScope), ids identical to it.

    Build it with :meth:`from_model_dir` (a dir holding ``vocab.txt``), :meth:`from_vocab` or
    :meth:`default` (the vocabulary shipped with ofa-jax).
    """

    def __init__(self, vocab_tokens: Sequence[str]):
        tokens = list(vocab_tokens)
        if tuple(tokens[:4]) != (_BOS, _PAD, _EOS, _UNK):
            raise ValueError(f"vocab must start with <s> <pad> </s> <unk>, got {tokens[:4]}")
        if _MASK not in tokens:
            raise ValueError("vocab has no <mask> token")
        token_to_id: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if tok in token_to_id:
                raise ValueError(f"duplicate token {tok!r} at lines {token_to_id[tok] + 1} and {i + 1}")
            token_to_id[tok] = i
        # WordPiece runs over the file's tokens only, like the reference's (code/bin tokens are only
        # reachable as whole added tokens).
        self._wordpiece = _make_wordpiece(dict(token_to_id))
        # ModelScope adds <code_*> then <bin_*> with ``add_tokens``, which skips tokens already present.
        added = [f"<code_{i}>" for i in range(NUM_CODE_TOKENS)] + [f"<bin_{i}>" for i in range(NUM_BIN_TOKENS)]
        for tok in added:
            if tok not in token_to_id:
                token_to_id[tok] = len(tokens)
                tokens.append(tok)
        self._tokens = tokens
        self._token_to_id = token_to_id
        # Tokens cut out of the text before basic tokenization (see module docstring, step 2).
        self._added = frozenset(_SPECIAL_TOKENS) | frozenset(added)
        self._special_ids = frozenset(token_to_id[t] for t in _SPECIAL_TOKENS)
        # code/bin tokens decode as separate words: "<code_3> ##a" stays "<code_3> ##a".
        self._loose_ids = frozenset(token_to_id[t] for t in added)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_vocab(cls, path: str | os.PathLike) -> OFATokenizer:
        """From a vocab file in OFA layout (one token per line)."""
        return cls(_read_vocab(path))

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike) -> OFATokenizer:
        """From a model dir (ModelScope or ofa-jax layout) holding ``vocab.txt``."""
        path = os.path.join(model_dir, VOCAB_FILENAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {VOCAB_FILENAME} in model dir {model_dir}")
        return cls.from_vocab(path)

    @classmethod
    def default(cls) -> OFATokenizer:
        """The Chinese OFA vocabulary shipped with ofa-jax (the one of the released OCR checkpoints)."""
        with resources.as_file(resources.files("ofa_jax") / "assets" / "vocab_zh.txt") as path:
            return cls.from_vocab(path)

    # -- ids ----------------------------------------------------------------------------------------

    @property
    def bos_id(self) -> int:
        return self._token_to_id[_BOS]

    @property
    def pad_id(self) -> int:
        return self._token_to_id[_PAD]

    @property
    def eos_id(self) -> int:
        return self._token_to_id[_EOS]

    @property
    def unk_id(self) -> int:
        return self._token_to_id[_UNK]

    @property
    def mask_id(self) -> int:
        return self._token_to_id[_MASK]

    @property
    def vocab_size(self) -> int:
        """Number of ids, code and bin tokens included (30325 for the Chinese models)."""
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def token_to_id(self, token: str) -> int:
        return self._token_to_id.get(token, self.unk_id)

    def id_to_token(self, index: int) -> str:
        index = int(index)
        return self._tokens[index] if 0 <= index < len(self._tokens) else _UNK

    def code_id(self, i: int) -> int:
        """Id of ``<code_i>`` (image codes)."""
        return self._token_to_id[f"<code_{i}>"]

    def bin_id(self, i: int) -> int:
        """Id of ``<bin_i>`` (quantised coordinates)."""
        return self._token_to_id[f"<bin_{i}>"]

    # -- encoding -----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Text -> token strings (no bos/eos)."""
        return [self._tokens[i] for i in self._encode_ids(text)]

    def encode(
        self,
        text: str,
        add_bos_eos: bool = False,
        *,
        add_bos: bool | None = None,
        add_eos: bool | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """Text -> ids, as ModelScope's ``OfaBasePreprocessor.tokenize_text``.

        By default the bare ids, no ``<s>``/``</s>``. ``add_bos_eos=True`` wraps them in both (the
        encoder prompt, see :meth:`encode_prompt`); ``add_bos``/``add_eos`` override it for one end (a
        training target is ``encode(label, add_eos=True)``). ``max_length`` truncates the text's ids
        before bos/eos are added; ModelScope uses ``max_src_length``/``max_tgt_length``, 256 by default.
        """
        ids = self._encode_ids(text)
        if max_length is not None:
            if max_length < 1:
                # (transformers 4 reads max_length=0 as "no limit"; refuse rather than guess)
                raise ValueError(f"max_length must be >= 1, got {max_length}")
            ids = ids[:max_length]
        if add_bos if add_bos is not None else add_bos_eos:
            ids.insert(0, self.bos_id)
        if add_eos if add_eos is not None else add_bos_eos:
            ids.append(self.eos_id)
        return ids

    def encode_prompt(self, prompt: str = OCR_PROMPT) -> list[int]:
        """The encoder's text input: ``<s> prompt </s>``."""
        return self.encode(prompt, add_bos_eos=True)

    def _encode_ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        # Step 1: per-character lowercasing. Added tokens are all lowercase already, so lowering them
        # too changes nothing; and "<S>" becomes "<s>", which the reference then also reads as bos.
        text = "".join([ch.lower() for ch in text])
        ids: list[int] = []
        start = 0
        for m in _ADDED_TOKEN_RE.finditer(text):
            if m.group() not in self._added:
                continue
            if m.start() > start:
                ids.extend(self._encode_plain(text[start : m.start()]))
            ids.append(self._token_to_id[m.group()])
            start = m.end()
        if start < len(text):
            ids.extend(self._encode_plain(text[start:]))
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in _basic_tokenize(text):
            if len(word) > _MAX_CHARS_PER_WORD:
                ids.append(self.unk_id)
            else:
                ids.extend(tok.id for tok in self._wordpiece.tokenize(word))
        return ids

    def spell_alnum(self, ids: Sequence[int]) -> list[int]:
        """``ids`` with every wordpiece of several ASCII letters/digits split into one piece per character
        (``["g20", "##96"]`` -> ``["g", "##2", "##0", "##9", "##6"]``); other ids unchanged.

        A training-target option of our own, not the reference's: WordPiece spells a random letter or
        digit run with whichever of thousands of pieces fits (``XAJ`` -> ``xa ##j``), so a line reader
        must learn each piece as a class; spelled out, the 36 characters and their ``##`` forms are all
        it needs. Decoding is unchanged (``decode`` joins ``##`` pieces either way)."""
        out: list[int] = []
        for i in ids:
            tok = self._tokens[i] if 0 <= i < len(self._tokens) else ""
            body = tok[2:] if tok.startswith("##") else tok
            if len(body) > 1 and _ALNUM_RE.fullmatch(body):
                first = tok[:3] if tok.startswith("##") else tok[0]
                out.append(self._token_to_id[first])
                out.extend(self._token_to_id["##" + ch] for ch in body[1:])
            else:
                out.append(i)
        return out

    # -- decoding -----------------------------------------------------------------------------------

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_token(i) for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text: tokens joined with spaces, ``" ##"`` removed.

        With ``skip_special_tokens`` (the default, as ModelScope's OCR model decodes) ``<s> <pad> </s>
        <unk> <mask>`` and ids outside the vocabulary are dropped. ``<code_*>``/``<bin_*>`` tokens stand
        as separate words. No other clean-up: ``"a , b"`` stays ``"a , b"``.
        """
        parts: list[str] = []
        run: list[str] = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._tokens):
                i = self.unk_id  # the reference maps unknown ids to <unk>
            if skip_special_tokens and i in self._special_ids:
                continue
            if i in self._loose_ids:
                if run:
                    s = self._join(run)
                    if s:
                        parts.append(s)
                    run = []
                parts.append(self._tokens[i])
            else:
                run.append(self._tokens[i])
        if run:
            parts.append(self._join(run))
        return " ".join(parts)

    @staticmethod
    def _join(tokens: list[str]) -> str:
        return " ".join(tokens).replace(" ##", "").strip()

    def postprocess(self, text: str) -> str:
        """ModelScope's OCR post-processing (see :func:`postprocess_ocr_text`)."""
        return postprocess_ocr_text(text)

    def decode_ocr(self, ids: Iterable[int]) -> str:
        """Generated ids -> the string ModelScope's OCR pipeline returns: ``postprocess(decode(ids))``."""
        return postprocess_ocr_text(self.decode(ids))


_NO_TORCH_ADVICE = "PyTorch was not found."


def _import_transformers():
    """``import transformers`` without its one advisory line ``[transformers] PyTorch was not found.
    Models won't be available ...``, which it logs on import wherever torch is not installed (ofa-jax
    uses only its tokenizer, so every command would print it). A logging filter on the
    ``transformers`` logger drops records with exactly that text while the import runs; every other
    record, and any import error, passes as it is."""
    import logging

    class _DropNoTorchAdvice(logging.Filter):
        def filter(self, record):
            return not str(record.msg).startswith(_NO_TORCH_ADVICE)

    logger, drop = logging.getLogger("transformers"), _DropNoTorchAdvice()
    logger.addFilter(drop)
    try:
        import transformers
    finally:
        logger.removeFilter(drop)
    return transformers


def _make_wordpiece(vocab: dict[str, int]):
    """The WordPiece model of a transformers ``BertTokenizer`` over ``vocab``.

    transformers 5.x: the vocabulary must be given as ``vocab=`` (a dict); ``vocab_file=`` is silently
    ignored there and yields a 5-token vocabulary.
    """
    transformers = _import_transformers()
    from transformers import BertTokenizer

    if int(transformers.__version__.split(".")[0]) < 5:
        raise ImportError(
            f"ofa_jax.tokenizer needs transformers >= 5 (its tokenizers-backed BertTokenizer), "
            f"found {transformers.__version__}"
        )
    bert = BertTokenizer(
        vocab=vocab,
        do_lower_case=True,
        unk_token=_UNK,
        sep_token=_EOS,
        pad_token=_PAD,
        cls_token=_BOS,
        mask_token=_MASK,
    )
    if len(bert.get_vocab()) != len(vocab):
        raise RuntimeError(
            f"transformers' BertTokenizer kept {len(bert.get_vocab())} of {len(vocab)} vocab entries"
        )
    model = bert.backend_tokenizer.model
    if model.max_input_chars_per_word != _MAX_CHARS_PER_WORD or model.continuing_subword_prefix != "##":
        raise RuntimeError("unexpected WordPiece settings in transformers' BertTokenizer")
    return model
