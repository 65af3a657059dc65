"""Read a CTranslate2 Whisper `model.bin` and map it onto transformers' `WhisperForConditionalGeneration`.

The multilingual Whisper weights we ship offline come in CTranslate2's binary format (Systran's conversion for
faster-whisper). This module parses that format (little-endian: header, named typed variables, aliases; the
layout CTranslate2's `models/model.cc` reads) and renames the variables to transformers' state-dict keys, so
the model runs through transformers' own Whisper code. No rescaling: both apply head_dim^-0.5 at run time.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np
import torch
from transformers import WhisperConfig

from pipelines.errors import AtlasError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
"""CT2 dtype codes we can read (5 = bfloat16 has no numpy type and is not used by Whisper conversions)."""


class CT2FormatError(AtlasError):
    """The bytes are not a CTranslate2 Whisper model we can read."""


@dataclass
class CT2Model:
    """The variables of one CT2 model, by name (aliases resolved to their targets)."""

    spec: str
    variables: dict[str, np.ndarray]

    def scalar(self, name: str) -> int:
        return int(self.variables[name].reshape(-1)[0])


class _Reader:
    """A cursor over the model bytes."""

    def __init__(self, data: bytes | memoryview):
        self.data = memoryview(data)
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        n = self.unpack("H")
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError("CTranslate2 model.bin is truncated: reinstall the weight packages")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def read_ct2(data: bytes | memoryview) -> CT2Model:
    """Parse a whole CT2 `model.bin` (format version 6) held in memory."""
    reader = _Reader(data)
    version = reader.unpack("I")
    if version != 6:
        raise CT2FormatError(f"unsupported CTranslate2 model.bin format version {version} (expected 6)")
    spec = reader.string()
    reader.unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        code = reader.unpack("B")
        if code not in _DTYPES:
            raise CT2FormatError(f"variable {name} has unsupported CTranslate2 dtype code {code}")
        raw = reader.take(reader.unpack("I"))
        variables[name] = np.frombuffer(raw, dtype=_DTYPES[code]).reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return CT2Model(spec=spec, variables=variables)


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return len({m.group(1) for name in variables if (m := pattern.match(name))})


def whisper_config(ct2: CT2Model) -> WhisperConfig:
    """The transformers config implied by the variable shapes (generation settings live elsewhere)."""
    v = ct2.variables
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=ct2.scalar("encoder/num_heads"),
        decoder_attention_heads=ct2.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        decoder_start_token_id=50258,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )


def _linear(out: dict, hf: str, v: dict, ct: str) -> None:
    out[f"{hf}.weight"] = v[f"{ct}/weight"]
    out[f"{hf}.bias"] = v[f"{ct}/bias"]


def _norm(out: dict, hf: str, v: dict, ct: str) -> None:
    out[f"{hf}.weight"] = v[f"{ct}/gamma"]
    out[f"{hf}.bias"] = v[f"{ct}/beta"]


def _split_attention(out: dict, hf: str, fused_W: np.ndarray, fused_b: np.ndarray, names: list[str]) -> None:
    """Split a fused projection (q,k,v or k,v) row-wise; HF's k_proj has no bias (CT2 stores zeros there)."""
    for name, W, b in zip(names, np.split(fused_W, len(names)), np.split(fused_b, len(names))):
        out[f"{hf}.{name}.weight"] = W
        if name != "k_proj":
            out[f"{hf}.{name}.bias"] = b


def _layer(out: dict, v: dict, stack: str, i: int) -> None:
    hf, ct = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
    sa = f"{ct}/self_attention"
    _split_attention(
        out,
        f"{hf}.self_attn",
        v[f"{sa}/linear_0/weight"],
        v[f"{sa}/linear_0/bias"],
        ["q_proj", "k_proj", "v_proj"],
    )
    _linear(out, f"{hf}.self_attn.out_proj", v, f"{sa}/linear_1")
    _norm(out, f"{hf}.self_attn_layer_norm", v, f"{sa}/layer_norm")
    if stack == "decoder":
        ca = f"{ct}/attention"
        _linear(out, f"{hf}.encoder_attn.q_proj", v, f"{ca}/linear_0")
        _split_attention(
            out,
            f"{hf}.encoder_attn",
            v[f"{ca}/linear_1/weight"],
            v[f"{ca}/linear_1/bias"],
            ["k_proj", "v_proj"],
        )
        _linear(out, f"{hf}.encoder_attn.out_proj", v, f"{ca}/linear_2")
        _norm(out, f"{hf}.encoder_attn_layer_norm", v, f"{ca}/layer_norm")
    _linear(out, f"{hf}.fc1", v, f"{ct}/ffn/linear_0")
    _linear(out, f"{hf}.fc2", v, f"{ct}/ffn/linear_1")
    _norm(out, f"{hf}.final_layer_norm", v, f"{ct}/ffn/layer_norm")


def hf_state_dict(ct2: CT2Model, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """transformers state-dict keys -> float32 tensors (the float16 -> float32 upcast is exact)."""
    v = ct2.variables
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(out, f"model.encoder.{conv}", v, f"encoder/{conv}")
    out["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    out["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["proj_out.weight"] = v["decoder/embeddings/weight"]
    for stack, n in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(n):
            _layer(out, v, stack, i)
        _norm(out, f"model.{stack}.layer_norm", v, f"{stack}/layer_norm")
    return {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in out.items()}
