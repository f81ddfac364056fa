"""Text tokenizers with ids of their own: UTF-8 bytes, and BPE/unigram pieces (sentencepiece).

:class:`ByteTokenizer` needs nothing and knows every language: 256 ids, one per byte.
:class:`BPETokenizer` wraps a sentencepiece model trained by :meth:`BPETokenizer.train`
on your own text (nothing is downloaded): shorter sequences than bytes for a vocabulary
of a few thousand pieces. Neither adds ``<start>``/``<end>``: the task templates of the
codec LM mark segments with the vocabulary's own specials.

For continuous T5 text embeddings see :class:`lit_codec.tokenizers.t5.T5TextEncoder`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lit_codec.tokenizers.base import require, sha256_bytes

__all__ = ["BPETokenizer", "ByteTokenizer"]


class ByteTokenizer:
    """Text -> its UTF-8 bytes as ids ``0..255``.

    Args:
        errors: how :meth:`decode` treats byte sequences that are not UTF-8
            (``"replace"``, ``"strict"``, ``"ignore"``; as in ``bytes.decode``).
    """

    def __init__(self, errors: Literal["replace", "strict", "ignore"] = "replace"):
        self.errors = errors

    @property
    def vocab_size(self) -> int:
        return 256

    def symbols(self) -> list[str]:
        """``<0x00>`` .. ``<0xFF>`` (the spelling of sentencepiece's byte pieces)."""
        return [f"<0x{b:02X}>" for b in range(256)]

    def metadata(self) -> dict[str, Any]:
        return {"kind": "bytes", "encoding": "utf-8"}

    def encode(self, text: str) -> np.ndarray:
        """``(n_bytes,)`` int64 ids of the UTF-8 bytes of ``text``."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    __call__ = encode

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors=self.errors)


class BPETokenizer:
    """Text -> sentencepiece piece ids, from a model file trained on your own text.

    Args:
        model_path: a sentencepiece ``.model`` file (e.g. written by :meth:`train`).
    """

    def __init__(self, model_path: str | os.PathLike):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"sentencepiece model {str(path)!r} does not exist; train one with "
                f"BPETokenizer.train(texts, {str(path)!r}, vocab_size=...)"
            )
        spm = require("sentencepiece", "sentencepiece", "BPETokenizer")
        self.model_path = path
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        self._hash = self._pieces_hash()

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str | os.PathLike,
        model_path: str | os.PathLike,
        vocab_size: int = 1000,
        model_type: Literal["bpe", "unigram", "char", "word"] = "bpe",
        character_coverage: float = 1.0,
        byte_fallback: bool = True,
        exact_vocab_size: bool = True,
    ) -> BPETokenizer:
        """Train a sentencepiece model on text and load it.

        Training is deterministic (one thread, fixed seed), so the same text gives the
        same model file and hash.

        Args:
            texts: sentences, or the path of a text file with one sentence per line.
            model_path: where to write the model (``.model``; a ``.vocab`` is written beside it).
            vocab_size: number of pieces, specials included.
            model_type: sentencepiece algorithm.
            character_coverage: fraction of characters covered by pieces (1.0 for small
                alphabets; 0.9995 for CJK).
            byte_fallback: spell characters outside the pieces as UTF-8 byte pieces
                instead of ``<unk>`` (needs ``vocab_size`` > 256 + the alphabet).
            exact_vocab_size: fail when the text is too small for ``vocab_size`` pieces;
                ``False`` makes a smaller model instead.
        """
        spm = require("sentencepiece", "sentencepiece", "BPETokenizer")
        model_path = Path(model_path)
        if model_path.suffix != ".model":
            raise ValueError(f"model_path must end in .model, got {str(model_path)!r}")
        model_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            if isinstance(texts, (str, os.PathLike)):
                source = Path(texts)
                if not source.is_file():
                    raise FileNotFoundError(f"text file {str(source)!r} does not exist")
            else:
                source = Path(tmp) / "text.txt"
                with source.open("w", encoding="utf-8") as f:
                    for line in texts:
                        f.write(" ".join(line.split()) + "\n")
            if hasattr(spm, "set_random_generator_seed"):
                spm.set_random_generator_seed(0)
            spm.SentencePieceTrainer.train(
                input=str(source),
                model_prefix=str(model_path.with_suffix("")),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                byte_fallback=byte_fallback,
                hard_vocab_limit=exact_vocab_size,
                # no <s>/</s>: segments are marked by the LM vocabulary's specials
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                num_threads=1,
                minloglevel=2,
            )
        return cls(model_path)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def symbols(self) -> list[str]:
        """The pieces (``▁`` marks a word start; ``<unk>`` is id 0)."""
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def metadata(self) -> dict[str, Any]:
        """Kind, model file name, vocabulary size and ``pieces_hash``.

        ``pieces_hash`` is the sha256 prefix of the pieces, their scores and types: it
        names the tokenization, whereas the model file also records the paths it was
        trained from.
        """
        return {
            "kind": "sentencepiece",
            "model": self.model_path.name,
            "pieces_hash": self._hash,
            "vocab_size": self.vocab_size,
        }

    def _pieces_hash(self) -> str:
        sp = self._sp
        lines = [
            f"{sp.id_to_piece(i)}\t{sp.get_score(i)!r}\t"
            f"{int(sp.is_unknown(i))}{int(sp.is_control(i))}{int(sp.is_byte(i))}{int(sp.is_unused(i))}"
            for i in range(sp.get_piece_size())
        ]
        return sha256_bytes("\n".join(lines).encode())

    def encode(self, text: str) -> np.ndarray:
        """``(n_pieces,)`` int64 piece ids of ``text``."""
        return np.asarray(self._sp.encode(text), dtype=np.int64)

    __call__ = encode

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])
