"""Whisper's encoder as the atlas sees it: log-mel features in, frame activations at any layer out.

Layer numbering follows transformers' `output_hidden_states`: layer 0 is the input embedding (convolutions +
positions), layer L is the output of `encoder.layers[L-1]`, and layer N is the final output after the last
layer norm (what the decoder reads; the default site, as in the SAE paper this project follows). Every window
is 30 s: 3000 log-mel frames -> 1500 encoder frames of 20 ms; a clip's real audio occupies the first
`real_frames(n_samples)` of them and the rest is padding, which callers mask out.

Intermediate layers are read and edited with hooks on transformers' own modules (the model code is never
forked). Hooks live on the shared model, so callers that share a bundle across threads must serialise use.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from pipelines.constants import FRAMES_PER_WINDOW, SAMPLE_RATE, SAMPLES_PER_FRAME
from pipelines.model.loader import WhisperBundle


def real_frames(n_samples: int) -> int:
    """Encoder frames holding real audio for a clip of `n_samples` samples (the rest is padding)."""
    return min(-(-int(n_samples) // SAMPLES_PER_FRAME), FRAMES_PER_WINDOW)


def features_for(bundle: WhisperBundle, audios: list[np.ndarray]) -> torch.Tensor:
    """(B, 80, 3000) log-mel of 16 kHz float32 mono clips, each padded (or cut) to one 30 s window."""
    fe = bundle.processor.feature_extractor
    feats = fe(
        [np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=SAMPLE_RATE, return_tensors="pt"
    )
    return feats.input_features.to(bundle.device)


def check_layer(bundle: WhisperBundle, layer: int) -> int:
    if not 0 <= layer <= bundle.n_layers:
        raise ValueError(f"layer must be in 0..{bundle.n_layers} for {bundle.name}, got {layer}")
    return layer


class _Captured(Exception):
    """Raised by a hook to stop the encoder once the wanted layer is reached (the rest is not computed)."""

    def __init__(self, hidden_BTD: torch.Tensor):
        self.hidden_BTD = hidden_BTD


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def encode(bundle: WhisperBundle, input_features_BMT: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """(B, 1500, D) float32 activations at `layer` (default N, the final output); later layers are skipped.

    Layer L < N is the input of `encoder.layers[L]`, so a pre-hook there captures it and stops the forward.
    Edits installed with `edit_layer` apply, including at the captured layer.
    """
    encoder = bundle.model.model.encoder
    layer = bundle.n_layers if layer is None else check_layer(bundle, layer)
    feats = input_features_BMT.to(bundle.device)
    with bundle.autocast():
        if layer == bundle.n_layers:
            return encoder(feats).last_hidden_state.float()

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            raise _Captured(_hidden_arg(args, kwargs))

        handle = encoder.layers[layer].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            encoder(feats)
        except _Captured as stop:
            return stop.hidden_BTD.float()
        finally:
            handle.remove()
    raise RuntimeError("the encoder finished without reaching the capture hook")


@contextmanager
def edit_layer(
    bundle: WhisperBundle, layer: int, edit: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """While active, every encoder forward replaces the activations at `layer` (B, T, D) with `edit(them)`.

    Layer 0 edits the input of the first block (a pre-hook); layer L >= 1 edits the output of block L-1, and
    layer N the final layer norm's output (forward hooks, run before transformers' own output recorders so
    `output_hidden_states` reports the edited values). Nested edits of one layer apply innermost first.
    """
    encoder = bundle.model.model.encoder
    check_layer(bundle, layer)

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    def post_hook(module: nn.Module, args: tuple, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    if layer == 0:
        handle = encoder.layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True)
    elif layer == bundle.n_layers:
        handle = encoder.layer_norm.register_forward_hook(post_hook, prepend=True)
    else:
        handle = encoder.layers[layer - 1].register_forward_hook(post_hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()
