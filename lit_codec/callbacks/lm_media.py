"""Listen to a codec LM in validation: its teacher-forced predictions, decoded to audio.

:class:`LMValidationMedia` takes, for the first ``num_clips`` validation sequences (the
same every time: validation is deterministic), the frames of the target segment, and
decodes through the codec the tokens came from (on CPU, rank 0 only):

- ``audio/<task>/clip<i>/reference``: the target's codes as tokenized;
- ``audio/<task>/clip<i>/predicted``: at every target frame, the most likely code of each
  codebook given the true frames before it (teacher forcing: :meth:`CodecLM.teacher_forced_codes
  <lit_codec.models.codec_lm.CodecLM.teacher_forced_codes>`). Not a generation: it shows
  what the model has learnt per frame, cheaply, long before sampling sounds right.

W&B gets ``wandb.Audio``, TensorBoard ``add_audio``, other loggers (CSV) WAV files under
their folder (:func:`lit_codec.loggers.log_audio`). The codec must be the one the
vocabulary names (its fingerprint): with another one the callback warns once and logs
nothing (the codes would decode to noise).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_codec.callbacks.cadence import ValidationCadence
from lit_codec.loggers import log_audio

__all__ = ["LMValidationMedia"]


class LMValidationMedia(L.Callback):
    """Log reference and teacher-forced audio of validation target segments (rank 0).

    Args:
        codec: the codec of the tokens: a checkpoint, an export, or a shipped name
            (``"speech16k"``).
        num_clips: sequences to log per validation (the first ones).
        every_n_validations: log one validation pass out of this many.
        check_fingerprint: refuse a codec whose fingerprint is not the vocabulary's.
    """

    def __init__(
        self,
        codec: str = "speech16k",
        num_clips: int = 4,
        every_n_validations: int = 1,
        check_fingerprint: bool = True,
    ):
        super().__init__()
        self.codec_path = codec
        self.num_clips = num_clips
        self.every_n_validations = max(1, every_n_validations)
        self.check_fingerprint = check_fingerprint
        self._codec = None
        self._unusable = False
        self._cadence = ValidationCadence(self.every_n_validations)
        self._active = False
        self._logged = 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        due = self._cadence.due(trainer)
        self._active = (
            due and trainer.is_global_zero and trainer.logger is not None and not self._unusable
        )
        self._logged = 0

    def _load(self, vocabulary):
        if self._codec is None and not self._unusable:
            from lit_codec.codec import Codec

            codec = Codec.from_checkpoint(self.codec_path, map_location="cpu").eval()
            info = vocabulary.codec
            problem = None
            if codec.codebook_size != info.codebook_size or codec.n_q < info.n_q:
                problem = (f"{codec.n_q} x {codec.codebook_size} codes, the vocabulary "
                           f"{info.n_q} x {info.codebook_size}")  # fmt: skip
            elif self.check_fingerprint and codec.fingerprint != info.fingerprint:
                problem = f"fingerprint {codec.fingerprint}, the vocabulary's {info.fingerprint}"
            if problem:
                rank_zero_warn(
                    f"LMValidationMedia: codec {self.codec_path!r} is not the codec of the "
                    f"vocabulary ({problem}); no audio is logged"
                )
                self._unusable = True
                return None
            self._codec = codec
        return self._codec

    @torch.inference_mode()
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0
    ) -> None:
        if not self._active or self._logged >= self.num_clips:
            return
        if not isinstance(outputs, dict) or "output" not in outputs:
            return
        vocab = pl_module.vocabulary
        codec = self._load(vocab)
        if codec is None:
            self._active = False
            return
        predicted = pl_module.teacher_forced_codes(outputs["output"]).cpu()  # (B, F, n_q)
        ids = batch.ids.cpu()  # (B, F, n_q)
        start, stop = vocab.codebook_range(0)
        targets = batch.loss_mask.cpu().all(-1) & (ids[..., 0] >= start) & (ids[..., 0] < stop)
        for i in range(len(batch)):
            if self._logged >= self.num_clips:
                return
            frames = targets[i].nonzero()[:, 0]  # (T,) target codec frames, all >= 1
            if len(frames) == 0:
                continue
            reference = torch.from_numpy(vocab.codes_from_ids(ids[i, frames].numpy()))  # (T, n_q)
            guess = predicted[i, frames - 1]  # (T, n_q): row t - 1 predicts frame t
            name = f"audio/{batch.tasks[i]}/clip{self._logged}"
            for label, codes in (("reference", reference), ("predicted", guess)):
                audio = codec.decode(codes.T[None])[0, 0]  # (T * hop,)
                log_audio(trainer.logger, f"{name}/{label}", audio.float().numpy(),
                          codec.sample_rate, trainer.global_step)  # fmt: skip
            self._logged += 1
