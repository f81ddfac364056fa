"""T5 text encoder: text -> continuous frames ``(n_tokens, d_model)`` from a local checkpoint.

UniAudio's text-to-audio and text-to-music tasks condition on the hidden states of a
frozen T5 encoder ("text_t5"): one frame per T5 token, spliced into the sequence as
continuous embeddings (the vocabulary's ``<embedding>`` placeholder id marks them).

The model is loaded with ``transformers`` from a folder on disk, never downloaded
(``local_files_only=True``): e.g. a ``t5-base`` or ``flan-t5-base`` folder written by
``save_pretrained`` or fetched beforehand with ``huggingface-cli download``. The tokenizer
comes from the same folder, or from a sentencepiece ``.model`` file (T5's ``spiece.model``:
its ids are T5's; ``</s>`` is appended as T5 does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_codec.tokenizers.base import require, sha256_file

__all__ = ["T5TextEncoder"]

_PIP = "transformers sentencepiece"


class T5TextEncoder:
    """Text -> the last hidden states of a local T5 encoder.

    Args:
        model_dir: folder with ``config.json`` and the weights of a T5 (or T5 encoder)
            checkpoint.
        tokenizer: a sentencepiece ``.model`` file; default: the tokenizer saved in
            ``model_dir``.
        max_tokens: texts are cut to this many tokens (T5 was trained on 512).
        device: where the encoder runs.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        tokenizer: str | os.PathLike | None = None,
        max_tokens: int = 512,
        device: str = "cpu",
    ):
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"T5TextEncoder: no T5 checkpoint in {str(path)!r} (config.json missing). Pass "
                f"model_dir= a local folder holding config.json and the weights, e.g. written "
                f"by T5EncoderModel.save_pretrained or 'huggingface-cli download t5-base "
                f"--local-dir DIR'; nothing is downloaded at run time."
            )
        transformers = require("transformers", _PIP, "T5TextEncoder")
        self.model_dir = path
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.model = transformers.T5EncoderModel.from_pretrained(path, local_files_only=True)
        self.model.eval().requires_grad_(False).to(self.device)
        self._sp = None
        self._tokenizer = None
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer)
        if self.tokenizer_path is not None:
            if not self.tokenizer_path.is_file():
                raise FileNotFoundError(
                    f"T5TextEncoder: sentencepiece model {str(self.tokenizer_path)!r} does not exist"
                )
            spm = require("sentencepiece", "sentencepiece", "T5TextEncoder")
            self._sp = spm.SentencePieceProcessor(model_file=str(self.tokenizer_path))
        else:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                path, local_files_only=True
            )

    @property
    def dim(self) -> int:
        """Width of the frames (``d_model``)."""
        return int(self.model.config.d_model)

    def metadata(self) -> dict[str, Any]:
        """Kind, checkpoint folder name, width, and hashes of config and weights."""
        weights = sorted(self.model_dir.glob("*.safetensors")) or sorted(
            self.model_dir.glob("*.bin")
        )
        return {
            "kind": "t5",
            "model": self.model_dir.name,
            "dim": self.dim,
            "config_hash": sha256_file(self.model_dir / "config.json"),
            "weights_hash": {w.name: sha256_file(w) for w in weights},
            "tokenizer": "model_dir" if self.tokenizer_path is None else self.tokenizer_path.name,
            "max_tokens": self.max_tokens,
        }

    def token_ids(self, text: str) -> list[int]:
        """T5 token ids of ``text``, ``</s>`` included, at most ``max_tokens``."""
        if self._sp is not None:
            ids = [*self._sp.encode(text), self._sp.eos_id()]
        else:
            ids = self._tokenizer(text)["input_ids"]
        if len(ids) > self.max_tokens:
            ids = [*ids[: self.max_tokens - 1], ids[-1]]  # keep </s>
        return ids

    @torch.inference_mode()
    def encode(self, text: str) -> np.ndarray:
        """The encoder's last hidden states.

        Args:
            text: one text.

        Returns:
            ``(n_tokens, dim)`` float32, one frame per T5 token.
        """
        ids = torch.tensor([self.token_ids(text)], device=self.device)  # (1, n)
        hidden = self.model(input_ids=ids).last_hidden_state  # (1, n, dim)
        return hidden[0].float().cpu().numpy()

    __call__ = encode
