"""Plain PyTorch building blocks. Nothing in this package imports Lightning."""

from lit_codec.nn.augment import NoiseMixer, NoisyBatch
from lit_codec.nn.balancer import BalancerOutput, LossBalancer
from lit_codec.nn.codebook_patterns import (
    PATTERNS,
    CodebookPattern,
    DelayPattern,
    FlatPattern,
    MultiScalePattern,
    ParallelPattern,
    get_pattern,
)
from lit_codec.nn.configurable import Configurable, build_module, module_config
from lit_codec.nn.conv import StreamingConv1d, StreamingConvTranspose1d, fold_weight_norm, streaming
from lit_codec.nn.convnext_codec import ConvNeXtDecoder, ConvNeXtEncoder, ConvNeXtGenerator
from lit_codec.nn.discriminators import (
    CombinedDiscriminator,
    DiscriminatorOutput,
    MultiBandMultiScaleSTFTDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    MultiScaleWaveformDiscriminator,
    STFTDiscriminator,
)
from lit_codec.nn.frame_stepper import FrameStepper, StepActivation, StepBuilder
from lit_codec.nn.fsq import FiniteScalarQuantizer, ResidualFSQ
from lit_codec.nn.kv_cache import KVCache
from lit_codec.nn.losses import (
    AdversarialLoss,
    FeatureMatchingLoss,
    MultiResolutionCompressedSTFTLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    STOILoss,
    WaveformL1Loss,
    feature_matching_loss,
)
from lit_codec.nn.multiscale_lm import DecodeState, LMLoss, LMOutput, MultiScaleLM
from lit_codec.nn.quantization import QuantizerOutput, ResidualVectorQuantizer, VectorQuantizer
from lit_codec.nn.rope import RotaryEmbedding
from lit_codec.nn.seanet import SEANetDecoder, SEANetEncoder, SEANetGenerator
from lit_codec.nn.spectral import MelSpectrogram, mel_filterbank
from lit_codec.nn.transformer import PerStepLinear, Transformer, TransformerConfig, count_parameters

__all__ = [
    "AdversarialLoss",
    "BalancerOutput",
    "CombinedDiscriminator",
    "Configurable",
    "ConvNeXtDecoder",
    "ConvNeXtEncoder",
    "ConvNeXtGenerator",
    "DiscriminatorOutput",
    "FeatureMatchingLoss",
    "FiniteScalarQuantizer",
    "FrameStepper",
    "LossBalancer",
    "MelSpectrogram",
    "MultiBandMultiScaleSTFTDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiResolutionCompressedSTFTLoss",
    "STOILoss",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "MultiScaleSTFTDiscriminator",
    "MultiScaleWaveformDiscriminator",
    "NoiseMixer",
    "NoisyBatch",
    "QuantizerOutput",
    "ResidualFSQ",
    "ResidualVectorQuantizer",
    "SEANetDecoder",
    "SEANetEncoder",
    "SEANetGenerator",
    "STFTDiscriminator",
    "StepActivation",
    "StepBuilder",
    "StreamingConv1d",
    "StreamingConvTranspose1d",
    "VectorQuantizer",
    "WaveformL1Loss",
    "build_module",
    "feature_matching_loss",
    "fold_weight_norm",
    "mel_filterbank",
    "module_config",
    "streaming",
    "MultiScaleLM",
    "LMOutput",
    "LMLoss",
    "DecodeState",
    "Transformer",
    "TransformerConfig",
    "PerStepLinear",
    "KVCache",
    "RotaryEmbedding",
    "count_parameters",
    "CodebookPattern",
    "MultiScalePattern",
    "FlatPattern",
    "DelayPattern",
    "ParallelPattern",
    "PATTERNS",
    "get_pattern",
]
