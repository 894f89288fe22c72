"""Hugging Face tokenizers, seen as maps between token ids and *bytes*.

Cross-tokenizer alignment (``jaxdistill.align``) works in byte space: two tokenizations of the same
text agree on where a span starts and ends only through byte offsets. Those offsets come from the
byte length of every token id, computed here from the vocabulary itself, never from ``decode()``
strings or offset mappings (both are lossy: ``decode`` merges partial UTF-8 sequences and strips
spaces, offsets are wrong for some tokenizers and refer to normalised text).

Two vocabulary families are understood:

* byte-level BPE (GPT-2, Llama-3, Qwen): a token string is written in the GPT-2 alphabet, one
  printable unicode character per byte; inverting that map gives the token's bytes.
* SentencePiece (Llama-2, Mistral v1, through ``transformers``' conversion): ``▁`` is one space byte,
  ``<0xNN>`` byte-fallback pieces are one byte, other characters are their UTF-8 bytes.

Special (control) tokens such as BOS, EOS or chat markers hold no text and have 0 bytes. Added
tokens that are not special (Qwen's ``<think>``) stand for their literal text and keep its bytes.

SentencePiece tokenizers prepend a "dummy prefix" space to the text; that byte is not part of the
text, so :meth:`Tokenizer.encode_with_byte_lengths` removes it from the first token's length.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Tokenizer", "load_tokenizer", "gpt2_unicode_to_byte"]

_SENTENCEPIECE_SPACE = "\u2581"  # '▁', SentencePiece's word-boundary marker
_BYTE_FALLBACK_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: printable character -> the byte it stands for.

    Byte-level BPE writes each byte as one printable character: the printable Latin-1 bytes stand
    for themselves and the other 68 bytes (controls, space, ...) are shifted to U+0100 onwards, in
    byte order (so a space is 'Ġ' = U+0120 and a newline is 'Ċ' = U+010A).
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    char_of_byte = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in char_of_byte:
            char_of_byte[b] = chr(256 + shifted)
            shifted += 1
    return {char: b for b, char in char_of_byte.items()}


def _decoder_types(decoder: dict | None) -> list[str]:
    """All decoder step types in a ``tokenizer.json`` decoder (flattening ``Sequence``)."""
    if not decoder:
        return []
    if decoder.get("type") == "Sequence":
        return [t for step in decoder.get("decoders", []) for t in _decoder_types(step)]
    return [decoder.get("type", "")]


@dataclass(frozen=True)
class _ByteTable:
    """The bytes of every token id of one vocabulary (computed once per tokenizer)."""

    token_bytes: tuple[bytes, ...]  # [vocab]
    byte_lengths: np.ndarray  # [vocab] int32, read-only
    special_ids: frozenset[int]


class Tokenizer:
    """A loaded HF tokenizer plus what alignment needs: special ids and per-token bytes.

    ``encode`` does not add special tokens unless asked (``add_special_tokens=True``): alignment and
    the RL loop place BOS and chat markers themselves. ``hf`` is the underlying ``transformers``
    tokenizer for anything not wrapped here.
    """

    def __init__(self, hf_tokenizer: Any, path: str | Path):
        self.hf = hf_tokenizer
        self.path = Path(path)
        backend = hf_tokenizer.backend_tokenizer
        # Only the decoder's spec is read (serialising the whole tokenizer costs ~0.6 s for Qwen).
        decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else None
        decoder_types = _decoder_types(decoder)
        if "ByteLevel" in decoder_types:
            self.kind = "byte_level"
        elif "Metaspace" in decoder_types or (
            "Replace" in decoder_types and _SENTENCEPIECE_SPACE in json.dumps(decoder, ensure_ascii=False)
        ):
            self.kind = "sentencepiece"
        else:
            raise ValueError(
                f"tokenizer at {self.path} has decoder {decoder_types or 'none'}: only byte-level BPE "
                "(GPT-2/Llama-3/Qwen style) and SentencePiece vocabularies have token byte lengths "
                "that jaxdistill can compute from the vocabulary"
            )
        self._byte_fallback = bool(getattr(backend.model, "byte_fallback", False)) or (
            "ByteFallback" in decoder_types
        )
        self._table: _ByteTable | None = None
        self.adds_prefix_space = self._probe_prefix_space()

    # -- plain tokenizer surface -------------------------------------------------------------
    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        """The real vocabulary size (base vocabulary plus added tokens), ``len(hf_tokenizer)``.

        Model embedding tables are often padded beyond it (Qwen: 151669 real vs 151936 rows).
        """
        return len(self.hf)

    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    @property
    def eos_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def pad_id(self) -> int | None:
        return self.hf.pad_token_id

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of special (control) tokens: they hold no text bytes."""
        return self._byte_table().special_ids

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        """``transformers``' ``apply_chat_template``, with a clear error when there is no template."""
        if not self.has_chat_template:
            raise ValueError(
                f"tokenizer at {self.path} has no chat template (tokenizer_config.json has no "
                "'chat_template'); format the prompt as plain text instead"
            )
        return self.hf.apply_chat_template(messages, **kwargs)

    # -- bytes ---------------------------------------------------------------------------------
    @property
    def token_bytes(self) -> tuple[bytes, ...]:
        """The text bytes of every token id, ``[vocab_size]`` (``b""`` for special tokens)."""
        return self._byte_table().token_bytes

    @property
    def token_byte_lengths(self) -> np.ndarray:
        """int32 ``[vocab_size]``: the byte length of every token id (0 for special tokens).

        Read-only; to gather with ids of a model whose embedding is padded past the vocabulary, use
        :meth:`byte_length_table`.
        """
        return self._byte_table().byte_lengths

    def byte_length_table(self, size: int | None = None) -> np.ndarray:
        """``token_byte_lengths`` zero-padded to ``size`` rows (e.g. the model's padded vocab)."""
        lengths = self.token_byte_lengths
        if size is None or size == lengths.shape[0]:
            return lengths
        if size < lengths.shape[0]:
            raise ValueError(f"size {size} is smaller than the real vocabulary ({lengths.shape[0]})")
        return np.concatenate([lengths, np.zeros(size - lengths.shape[0], np.int32)])

    def bytes_of(self, ids: Sequence[int]) -> list[bytes]:
        """The vocabulary bytes of each id (no dummy-prefix handling: see encode_with_byte_lengths)."""
        table = self.token_bytes
        return [table[i] for i in ids]

    def encode_with_byte_lengths(
        self, text: str, add_special_tokens: bool = False
    ) -> tuple[list[int], np.ndarray]:
        """Token ids of ``text`` and, per token, how many bytes of the tokenized text it covers.

        Equal to ``token_byte_lengths[ids]`` except that a SentencePiece dummy-prefix space, which
        the tokenizer adds and the text does not hold, is removed from the first token holding it
        (that token may become 0 bytes long, e.g. a lone '▁'). The covered bytes are those of the
        text after the tokenizer's normaliser (Qwen applies NFC): the aligner reports any difference.

        Returns: ids (list of T ints), byte_lengths int32 [T].
        """
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        lengths = self.token_byte_lengths[np.asarray(ids, dtype=np.int64)].astype(np.int32)
        if self.adds_prefix_space and ids:
            pieces = self.bytes_of(ids)
            held = b"".join(pieces)
            text_spaces = len(text) - len(text.lstrip(" "))
            held_spaces = len(held) - len(held.lstrip(b" "))
            if held_spaces == text_spaces + 1:
                first = next(k for k, piece in enumerate(pieces) if piece)
                lengths[first] -= 1
        return ids, lengths

    def _probe_prefix_space(self) -> bool:
        """Whether encoding prepends a space the text does not have (SentencePiece dummy prefix)."""
        probe = "x"
        held = b"".join(self.bytes_of(self.encode(probe)))
        return held == b" " + probe.encode()

    def _byte_table(self) -> _ByteTable:
        if self._table is None or len(self._table.token_bytes) != self.vocab_size:
            self._table = self._build_byte_table()
        return self._table

    def _build_byte_table(self) -> _ByteTable:
        backend = self.hf.backend_tokenizer
        vocab_size = self.vocab_size
        added = backend.get_added_tokens_decoder()  # id -> AddedToken
        special_ids = frozenset(i for i, tok in added.items() if tok.special)
        unicode_to_byte = gpt2_unicode_to_byte()
        token_bytes: list[bytes] = [b""] * vocab_size
        for piece, token_id in backend.get_vocab(with_added_tokens=False).items():
            if token_id >= vocab_size:
                continue
            token_bytes[token_id] = self._piece_bytes(piece, unicode_to_byte)
        for token_id, tok in added.items():
            if token_id < vocab_size:
                # Added tokens match raw text: a non-special one stands for its literal content.
                token_bytes[token_id] = b"" if tok.special else tok.content.encode("utf-8")
        lengths = np.fromiter((len(b) for b in token_bytes), dtype=np.int32, count=vocab_size)
        lengths.setflags(write=False)
        return _ByteTable(tuple(token_bytes), lengths, special_ids)

    def _piece_bytes(self, piece: str, unicode_to_byte: dict[str, int]) -> bytes:
        if self.kind == "byte_level":
            try:
                return bytes(unicode_to_byte[c] for c in piece)
            except KeyError as missing:
                raise ValueError(
                    f"token {piece!r} of the byte-level vocabulary at {self.path} has character "
                    f"{missing} outside the GPT-2 byte alphabet; the vocabulary is not byte-level"
                ) from None
        if self._byte_fallback:
            match = _BYTE_FALLBACK_PIECE.fullmatch(piece)
            if match:
                return bytes([int(match.group(1), 16)])
        return piece.replace(_SENTENCEPIECE_SPACE, " ").encode("utf-8")

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, kind={self.kind}, vocab_size={self.vocab_size})"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a Hugging Face tokenizer folder into a :class:`Tokenizer` (cached per folder).

    Accepted folders: ``tokenizer.json`` (any fast tokenizer); ``vocab.json`` + ``merges.txt``
    (GPT-2 style byte-level BPE); ``tokenizer.model`` (SentencePiece, converted by ``transformers``,
    which needs the ``sentencepiece`` package). A ``tokenizer_config.json`` beside them supplies
    the tokenizer class, special tokens and chat template. Remote code is never trusted.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.exists():
        raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{folder} is a file; load_tokenizer takes the folder that holds tokenizer.json, "
            "vocab.json + merges.txt, or tokenizer.model"
        )
    files = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model", "tokenizer_config.json")
    stamps = tuple((name, (folder / name).stat().st_mtime_ns) for name in files if (folder / name).exists())
    return _load_cached(str(folder), stamps)


_GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def _declares_generic_class(folder: Path) -> bool:
    """Whether ``tokenizer_config.json`` names the generic fast tokenizer class (no model-specific one)."""
    config = folder / "tokenizer_config.json"
    if not config.exists():
        return False
    try:
        return json.loads(config.read_text()).get("tokenizer_class") in _GENERIC_TOKENIZER_CLASSES
    except (json.JSONDecodeError, AttributeError):
        return False


@functools.lru_cache(maxsize=16)
def _load_cached(folder_str: str, stamps: tuple[tuple[str, int], ...]) -> Tokenizer:
    folder = Path(folder_str)
    present = {name for name, _ in stamps}
    has_config = "tokenizer_config.json" in present
    if "tokenizer.json" in present:
        source = "tokenizer.json"
    elif {"vocab.json", "merges.txt"} <= present:
        source = "vocab.json+merges.txt"
    elif "tokenizer.model" in present:
        source = "tokenizer.model"
        if importlib.util.find_spec("sentencepiece") is None:
            raise ImportError(
                f"{folder}/tokenizer.model is a SentencePiece model: converting it needs the "
                "'sentencepiece' package (pip install sentencepiece), or save the tokenizer as "
                "tokenizer.json once with transformers where sentencepiece is installed"
            )
    else:
        raise FileNotFoundError(
            f"no tokenizer files in {folder}: expected tokenizer.json, or vocab.json + merges.txt, "
            f"or tokenizer.model (found: {sorted(p.name for p in folder.iterdir()) or 'nothing'})"
        )

    import transformers

    if source == "tokenizer.json" and _declares_generic_class(folder):
        # A model folder also holds config.json, and transformers 5's AutoTokenizer then picks the class
        # registered for its model_type (qwen2 -> Qwen2Tokenizer), which rebuilds the normalizer and
        # pre-tokenizer from Qwen's defaults: a custom tokenizer.json (e.g. merged digits) would silently
        # split text differently. A folder that declares the generic class gets exactly its tokenizer.json.
        hf = transformers.PreTrainedTokenizerFast.from_pretrained(folder)
    elif has_config or source != "vocab.json+merges.txt":
        hf = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    else:
        # No config to name a class: vocab.json + merges.txt is GPT-2's byte-level BPE layout.
        hf = transformers.GPT2Tokenizer.from_pretrained(folder)
    if not hasattr(hf, "backend_tokenizer"):
        raise TypeError(
            f"transformers loaded {type(hf).__name__} from {folder}, which has no fast (tokenizers) "
            "backend; jaxdistill needs one to read the vocabulary"
        )
    return Tokenizer(hf, folder)
