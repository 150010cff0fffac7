"""Stage 4: the caption models, one class per architecture, one file per family.

    base         what every model shares (`CaptionModel`: the standardised image, the word
                 branch, the head, `start` / `step` / `call`), the registry and
                 `build_caption_model`, which rebuilds a model from its record's ModelConfig
    lstm         merge and the three injects: one LSTM, four places for the image
    attention    soft attention (Show, Attend and Tell) over a grid of positions
    transformer  a Transformer decoder: causal self-attention, cross-attention, feed-forward

A new architecture is one class with its decorator line, in its family's file or a new one
imported here.
"""
# The order the families are imported in is the order ARCHITECTURES lists them.
# isort: skip_file
from .base import (ARCHITECTURES, CaptionModel, architecture, architecture_class,
                   build_caption_model, grid_architectures, set_feature_statistics)
from .lstm import InitInject, LSTMCaptionModel, Merge, ParInject, PreInject
from .attention import AttentionLSTM, SoftAttention
from .transformer import CausalSelfAttention, CrossAttention, DecoderBlock, FeedForward, Transformer

__all__ = ["ARCHITECTURES", "architecture", "architecture_class", "grid_architectures",
           "CaptionModel", "build_caption_model", "set_feature_statistics",
           "LSTMCaptionModel", "Merge", "InitInject", "PreInject", "ParInject",
           "AttentionLSTM", "SoftAttention",
           "CausalSelfAttention", "CrossAttention", "FeedForward", "DecoderBlock", "Transformer"]
