"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``) with one end-of-text special token.

Byte-level means every string is encodable (no unknown token) and ``decode(encode(s)) == s``.
The tokenizer is saved as the ``tokenizers`` JSON file, written atomically.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError, DataError
from ..store import write_text

EOS_TOKEN = "<|endoftext|>"
_MIN_VOCAB = 256 + 1  # every byte plus the end-of-text token


class Tokenizer:
    """A thin wrapper: ``vocab_size``, ``eos_id``, ``encode_batch``, ``encode``, ``decode``."""

    def __init__(self, tok) -> None:  # tok: tokenizers.Tokenizer
        eos = tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise DataError(f"tokenizer has no {EOS_TOKEN} token; train it with proxyscale.data.train_tokenizer")
        # a document that happens to contain the literal "<|endoftext|>" must not inject a
        # document boundary: encode it as ordinary bytes; EOS is only ever added explicitly
        tok.encode_special_tokens = True
        self._tok = tok
        self.eos_id: int = int(eos)
        self.vocab_size: int = int(tok.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def token_bytes(self, ids: Sequence[int]) -> list[bytes]:
        """The bytes each id stands for (the end-of-text token: none). A token may hold part of a
        multi-byte UTF-8 character, so only whole runs of tokens need to decode."""
        table = _byte_of_char()
        return [b"" if int(i) == self.eos_id else bytes(table[ch] for ch in self._tok.id_to_token(int(i)))
                for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; the end-of-text token decodes to nothing."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_json(self) -> str:
        return self._tok.to_str()

    @property
    def sha256(self) -> str:
        """A content hash of the tokenizer (for naming steps that depend on it)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        write_text(path, self.to_json())


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """The byte-level BPE alphabet read back: each of the 256 characters a token is spelled
    with -> the byte it stands for. Printable Latin-1 bytes stand for themselves; the others
    (controls, space, soft hyphen ...) are shifted, in byte order, to code points 256 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in set(keep)]
    table = {chr(b): b for b in keep}
    table.update({chr(256 + k): b for k, b in enumerate(shifted)})
    return table


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: Path | None = None) -> Tokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens (the end-of-text token included) on
    ``texts``; save it to ``path`` when given."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < _MIN_VOCAB:
        raise ConfigError(f"vocab_size must be at least {_MIN_VOCAB} (256 bytes + end-of-text), got {vocab_size}")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= _MIN_VOCAB - 1:
        raise DataError("tokenizer training saw no text; give it a non-empty training sample")
    wrapped = Tokenizer(tok)
    if path is not None:
        wrapped.save(Path(path))
    return wrapped


def load_tokenizer(path: Path) -> Tokenizer:
    """Load a tokenizer saved by :func:`train_tokenizer`."""
    from tokenizers import Tokenizer as HFTokenizer

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: tokenizer file is missing; re-run the step that trains it")
    try:
        tok = HFTokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a plain Exception on malformed JSON
        raise DataError(f"{p}: not a tokenizers JSON file ({e}); re-train the tokenizer") from None
    return Tokenizer(tok)
