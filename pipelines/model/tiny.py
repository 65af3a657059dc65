"""A tiny random Whisper with the real multilingual tokenizer: the fast stand-in for unit tests.

Same interfaces, vocabulary, special tokens, generation config and 30 s window as the bundled base (so every
code path that handles tokens, languages, frames and layers is exercised), but 64-wide and 2 layers deep,
so it builds in well under a second and a forward takes milliseconds. Its outputs are meaningless.
"""

from __future__ import annotations

import functools

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from pipelines.model.bundled import build_generation_config, build_processor
from pipelines.model.loader import WhisperBundle

TINY_NAME = "tiny-random"


@functools.cache
def _processor() -> WhisperProcessor:
    """Built once per process (parsing the 3.9 MB tokenizer.json dominates the build time); read-only."""
    return build_processor()


def tiny_whisper(seed: int = 0) -> WhisperBundle:
    """A random 2-layer, 64-wide Whisper on CPU (float32), deterministic for a given `seed`."""
    torch.manual_seed(seed)
    processor = _processor()
    tokenizer = processor.tokenizer
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = build_generation_config(tokenizer, alignment_heads=[[1, 0], [1, 1]])
    return WhisperBundle(model=model, processor=processor, device=torch.device("cpu"), name=TINY_NAME)
