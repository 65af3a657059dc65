"""Per-size defaults for the five multilingual Whisper sizes: the one table that extract and train read.

A model is recognised by its encoder width (`d_model` differs between every size, so activations, which
record only it, are recognised too); a width not in the table (a distilled or random model) takes the row
of the nearest width. Only whisper-base's row is measured (the SAE sweep and the extraction runs in
benchmarks/RESULTS.md); the others scale it: the same final-output layer, twice `d_model` latents with
k = d_model / 8 as base's sweep chose, encoder batches sized to the model's memory, larger SAE batches where
the frames of a GPU-sized run make steps the bottleneck. `markdown_table()` renders the table into
docs/SCALING.md (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSize:
    name: str
    hub_id: str
    """Hugging Face id (`--model` takes it, or a local folder of the same files)."""
    d_model: int
    encoder_layers: int
    encoder_params_m: int
    """Encoder parameters, millions (the encoder is what extraction runs)."""
    d_sae: int
    """Default SAE latents."""
    k: int
    """Default active latents per frame."""
    extract_batch_cpu: int
    """Windows (30 s) per encoder call on a CPU."""
    extract_batch_cuda: int
    """Windows per encoder call on a GPU (bf16 autocast; fits a 16 GB card with room to spare)."""
    train_batch: int
    """Frames per SAE step."""

    @property
    def layer(self) -> int:
        """Default extraction site: the final encoder output (what the decoder reads)."""
        return self.encoder_layers

    def extract_batch(self, device_type: str) -> int:
        """Windows per encoder call on a device of this type (`cuda`, `cpu`, ...)."""
        return self.extract_batch_cuda if device_type == "cuda" else self.extract_batch_cpu


SIZES = (
    ModelSize("tiny", "openai/whisper-tiny", 384, 4, 8, 768, 48, 8, 128, 256),
    ModelSize("base", "openai/whisper-base", 512, 6, 21, 1024, 64, 4, 64, 256),
    ModelSize("small", "openai/whisper-small", 768, 12, 88, 1536, 96, 2, 32, 512),
    ModelSize("medium", "openai/whisper-medium", 1024, 24, 307, 2048, 128, 1, 16, 1024),
    ModelSize("large-v3", "openai/whisper-large-v3", 1280, 32, 637, 2560, 160, 1, 16, 1024),
)


def size_for_width(d_model: int) -> ModelSize:
    """The row of this encoder width, else of the nearest one (ties: the smaller model)."""
    return min(SIZES, key=lambda size: (abs(size.d_model - d_model), size.d_model))


def markdown_table() -> str:
    """The table as docs/SCALING.md shows it."""
    head = (
        "| size | hub id | d_model | encoder layers | encoder params | default layer | SAE latents | k "
        "| extract batch CPU / GPU (windows) | train batch (frames) |"
    )
    rule = "|" + " --- |" * 10
    rows = [
        f"| {s.name} | `{s.hub_id}` | {s.d_model} | {s.encoder_layers} | {s.encoder_params_m}M "
        f"| {s.layer} (final) | {s.d_sae:,} | {s.k} | {s.extract_batch_cpu} / {s.extract_batch_cuda} "
        f"| {s.train_batch} |"
        for s in SIZES
    ]
    return "\n".join([head, rule, *rows])
