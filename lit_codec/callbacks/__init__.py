"""Lightning callbacks: checkpoints by generator step, audio logging, ..."""

from lit_codec.callbacks.checkpoint import GeneratorStepCheckpoint

__all__ = ["GeneratorStepCheckpoint"]
