"""Lightning callbacks: checkpoints by generator step, quality metrics off the loop, media logging."""

from lit_codec.callbacks.checkpoint import GeneratorStepCheckpoint
from lit_codec.callbacks.media import ValidationMedia
from lit_codec.callbacks.quality import QualityMetrics

__all__ = ["GeneratorStepCheckpoint", "QualityMetrics", "ValidationMedia"]
