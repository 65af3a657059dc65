"""Live analysis and steering of an uploaded clip: the jobs the inference worker runs, and their payloads.

`analyze` encodes the clip once, transcribes it, and encodes every real frame with the SAE: the response holds
the transcript, language probabilities, a log-mel spectrogram (PNG, rendered server-side: a browser FFT
cannot show Whisper's own log-mel) and the top features over time ("search via inference" in Neuronpedia,
FREUD's upload view). `steer` returns baseline / SAE-reconstructed / steered transcripts from one encoder
pass (pipelines.steering) plus a word diff; the reconstructed and steered ones carry their `measures`
against the baseline (text language, loop flag, CER, success toward the target language). Both run on the
worker thread (backend.services.inference).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.schemas import TranscriptMeasures
from backend.services.spectrogram import palette_png
from backend.services.uploads import Upload
from pipelines.constants import FRAME_SECONDS

if TYPE_CHECKING:
    from pipelines.steering import SteeringResources, SteeringSpec

FEATURES_PER_FRAME = 5
TIMELINE_FEATURES = 16
"""Rows of the timeline heatmap: the features with the most activation over the clip."""
SPECTROGRAM_HEIGHT = 160


def analyze(res: "SteeringResources", upload: Upload, max_new_tokens: int) -> dict[str, Any]:
    """Transcript, language probabilities, spectrogram and per-frame top SAE features of one clip."""
    import torch

    from pipelines.model.transcribe import WHISPER_DECODING, transcribe_encoded
    from pipelines.steering import encode_clip, transcription_dict

    clip = encode_clip(res.bundle, upload.audio, res.layer)
    with torch.no_grad():
        (transcription,) = transcribe_encoded(
            res.bundle,
            clip.final_BTD,
            max_new_tokens=max_new_tokens,
            n_frames=[clip.n_frames],
            decoding=res.decoding or WHISPER_DECODING,
        )
        latents_TF = res.sae.encode(clip.site_TD).float().cpu()
    rows = timeline(latents_TF, res.labels)
    return {
        **_upload_payload(upload),
        **transcription_dict(transcription),
        "n_frames": clip.n_frames,
        "frame_seconds": FRAME_SECONDS,
        "spectrogram": spectrogram_data_uri(clip.input_features_BMT[0, :, : 2 * clip.n_frames].cpu().numpy()),
        "frames": frame_top_features(latents_TF),
        "timeline": rows,
        "timeline_png": heatmap_data_uri(np.asarray(rows["acts"], np.float32).reshape(-1, clip.n_frames)),
    }


def steer(res: "SteeringResources", upload: Upload, spec: "SteeringSpec") -> dict[str, Any]:
    """Baseline, reconstructed and steered transcripts of one clip, with the features used and a word diff."""
    from pipelines.steering import steer as run_steering

    result = run_steering(res, upload.audio, spec).to_dict()
    for name in ("reconstructed", "steered"):  # the documented shape (backend.schemas.TranscriptMeasures)
        result[name]["measures"] = TranscriptMeasures.model_validate(result[name]["measures"]).model_dump()
    return {**_upload_payload(upload), **result}


def _upload_payload(upload: Upload) -> dict[str, Any]:
    return {"filename": upload.filename, "duration": round(upload.duration, 3), "truncated": upload.truncated}


def frame_top_features(latents_TF: Any, k: int = FEATURES_PER_FRAME) -> list[dict[str, Any]]:
    """Per encoder frame: its time and its top-k active features as [id, activation] pairs."""
    k = min(k, latents_TF.shape[1])
    values_TK, ids_TK = latents_TF.topk(k, dim=1)
    frames = []
    for t, (vals, ids) in enumerate(zip(values_TK.tolist(), ids_TK.tolist())):
        active = [[i, round(v, 3)] for i, v in zip(ids, vals) if v > 0]
        frames.append({"t": round(t * FRAME_SECONDS, 2), "features": active})
    return frames


def timeline(latents_TF: Any, labels: dict[int, str], n: int = TIMELINE_FEATURES) -> dict[str, Any]:
    """The `n` features with the most activation over the clip and their activation per frame (heatmap)."""
    totals_F = latents_TF.sum(0)
    n = min(n, int((totals_F > 0).sum()))
    ids = totals_F.topk(n).indices.tolist() if n else []
    rows = latents_TF[:, ids].T.numpy() if ids else np.zeros((0, latents_TF.shape[0]))
    return {
        "features": [
            {"id": i, "label": labels.get(i, ""), "max": round(float(row.max()), 3)}
            for i, row in zip(ids, rows)
        ],
        "acts": np.round(rows, 3).tolist(),
    }


def heatmap_data_uri(acts_KT: np.ndarray, row_height: int = 12) -> str:
    """Feature x frame activations as a PNG data URI, each row scaled to its own maximum."""
    peak_K1 = acts_KT.max(axis=1, keepdims=True) if acts_KT.size else np.ones((0, 1))
    scaled = np.divide(acts_KT, peak_K1, out=np.zeros_like(acts_KT), where=peak_K1 > 0)
    return _png_data_uri(scaled, max(acts_KT.shape[1], 1), max(row_height * acts_KT.shape[0], 1))


def _png_data_uri(scaled: np.ndarray, width: int, height: int) -> str:
    """0..1 values as a PNG data URI of the given size, in the spectrogram endpoint's palette."""
    pixels = (np.clip(scaled, 0, 1) * 255).astype(np.uint8) if scaled.size else np.zeros((1, 1), np.uint8)
    png = palette_png(pixels, (width, height))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def spectrogram_data_uri(mel_MT: np.ndarray, height: int = SPECTROGRAM_HEIGHT) -> str:
    """A log-mel (n_mels, frames) as a PNG data URI: low bins at the bottom, one column per 10 ms."""
    lo, hi = float(mel_MT.min()), float(mel_MT.max())
    scaled = np.zeros_like(mel_MT) if hi <= lo else (mel_MT - lo) / (hi - lo)
    return _png_data_uri(scaled[::-1], max(mel_MT.shape[1], 1), height)
