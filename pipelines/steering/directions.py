"""The vector maths of steering on one clip's real frames h_TD (T real frames, D model width).

- add (activation addition with SAE decoder directions, as Neuronpedia's steering and Templeton et al.,
  "Scaling Monosemanticity", 2024): h' = h + c_f * W_dec[f] for each chosen feature f.
- clamp (the SAE's latent set to a value, FREUD-style): z = sae.encode(h), z'_f = v,
  h' = sae.decode(z') + (h - sae.decode(z)). The error term h - sae(h) is kept, so a clamp that changes no
  latent returns h exactly; we compute it as h + (decode(z') - decode(z)), the same sum in an order whose
  difference is exactly zero when z' = z.
- scale (conditional steering): h' = h + (s - 1) * sum_f z_f W_dec[f] for the chosen features, i.e. their
  contribution multiplied by s, so frames where they do not fire are untouched (s = 0 ablates them).
- a clip's language gradient: d(logit(target) - logit(source)) / dh over the real frames, whose dot product
  with a unit decoder direction is that feature's first-order language effect on this clip.

Only real frames are edited; the 30 s window's padding is left alone by the callers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from pipelines.steering.spec import Scale, SteeringError

if TYPE_CHECKING:  # the model stack loads with the model, not with this module
    from pipelines.model.loader import WhisperBundle
    from pipelines.sae import SparseAutoencoder


def mean_frame_norm(h_TD: torch.Tensor) -> float:
    return float(h_TD.norm(dim=-1).mean())


def unit_rows(W_KD: torch.Tensor) -> torch.Tensor:
    return W_KD / W_KD.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def reconstruct(sae: SparseAutoencoder, h_TD: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction sae.decode(sae.encode(h)) (no error term)."""
    return sae.decode(sae.encode(h_TD))


def add_directions(h_TD: torch.Tensor, directions_KD: torch.Tensor, coefs_K: torch.Tensor) -> torch.Tensor:
    """h + sum_k coef_k * direction_k on every frame; zero coefficients return h bit for bit."""
    return h_TD + (coefs_K.to(h_TD.dtype) @ directions_KD.to(h_TD.dtype))[None, :]


def clamp_latents(
    sae: SparseAutoencoder, h_TD: torch.Tensor, ids_K: torch.Tensor, values_K: torch.Tensor
) -> torch.Tensor:
    """Set latents `ids` to `values` on every frame, keeping the SAE's error term.

    h' = decode(z') + (h - decode(z)), computed as h + (decode(z') - decode(z)): z' == z gives h exactly.
    """
    z_TF = sae.encode(h_TD)
    z2_TF = z_TF.clone()
    z2_TF[:, ids_K] = values_K.to(z_TF.dtype)[None, :]
    return h_TD + (sae.decode(z2_TF) - sae.decode(z_TF))


def scale_latents(
    sae: SparseAutoencoder, h_TD: torch.Tensor, ids_K: torch.Tensor, factors_K: torch.Tensor
) -> torch.Tensor:
    """Multiply the contribution of latents `ids` by `factors` on every frame (error term kept): a factor of
    1 returns h bit for bit, and frames where a latent is 0 are left alone by it."""
    z_TK = sae.encode(h_TD)[:, ids_K]
    coefs_TK = z_TK * (factors_K.to(z_TK.dtype) - 1)[None, :]
    return h_TD + coefs_TK.to(h_TD.dtype) @ sae.W_dec[ids_K].to(h_TD.dtype)


def active_frames(sae: SparseAutoencoder, h_TD: torch.Tensor, ids_K: torch.Tensor) -> torch.Tensor:
    """(T,) bool: frames where at least one of latents `ids` fires."""
    return (sae.encode(h_TD)[:, ids_K] > 0).any(-1)


def activation_share(sae: SparseAutoencoder, h_TD: torch.Tensor, ids_K: torch.Tensor) -> float:
    """The share of the clip's total SAE activation that latents `ids` carry, over its real frames `h_TD`."""
    z_TF = sae.encode(h_TD)
    return float(z_TF[:, ids_K].sum() / z_TF.sum().clamp_min(1e-30))


def only_on(edit_TD: torch.Tensor, h_TD: torch.Tensor, mask_T: torch.Tensor) -> torch.Tensor:
    """The edited frames where `mask_T` holds, the original ones elsewhere."""
    return torch.where(mask_T.to(h_TD.device)[:, None], edit_TD, h_TD)


def random_direction(d_model: int, seed: int) -> torch.Tensor:
    """(D,) a seeded direction uniform on the sphere: the control any chosen direction must beat."""
    generator = torch.Generator().manual_seed(seed)
    return unit_rows(torch.randn(1, d_model, generator=generator))[0]


def feature_units(
    sae: SparseAutoencoder,
    ids_K: torch.Tensor,
    scale: Scale,
    frame_norm: float,
    typical_act_F: np.ndarray | None,
) -> torch.Tensor:
    """Latent value that strength 1 stands for, per feature (adds strength x unit x W_dec[f])."""
    if scale == "frame_norm":
        return frame_norm / sae.W_dec[ids_K].norm(dim=-1).clamp_min(1e-12)
    if typical_act_F is None:
        raise SteeringError(
            "scale 'feature_act' needs the atlas's typical activations: build the atlas or use 'frame_norm'"
        )
    return torch.as_tensor(typical_act_F, dtype=sae.W_dec.dtype, device=sae.W_dec.device)[ids_K]


def language_gradient(
    bundle: WhisperBundle, final_BTD: torch.Tensor, n_frames: int, target: str, source: str | None = None
) -> tuple[str, torch.Tensor]:
    """One differentiable language-ID step on the clip: the source language (the detected one unless
    given) and g = sum over real frames t of d(logit(target) - logit(source)) / d h_t, shape (D,).

    unit(W_dec[f]) . g is the first-order change of that logit difference when feature f's unit decoder
    direction is added to every real frame: its per-clip language effect."""
    from pipelines.model.transcribe import LANGUAGES, language_logits

    h = final_BTD[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits_99 = language_logits(bundle, h)[0]
        if source is None:
            source = LANGUAGES[int(logits_99.argmax())]
        diff = logits_99[LANGUAGES.index(target)] - logits_99[LANGUAGES.index(source)]
        (grad_BTD,) = torch.autograd.grad(diff, h)
    return source, grad_BTD[0, :n_frames].sum(0)


def silence_gradient(bundle: WhisperBundle, final_BTD: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(D,): sum over real frames of d log p(no-speech token) / d h_t at the decoder's first step: the
    direction toward Whisper's no-speech decision, which its gate reads (no_speech_prob > 0.6)."""
    from pipelines.model.transcribe import first_step_logits, no_speech_token_id

    h = final_BTD[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        log_p = first_step_logits(bundle, h)[0].log_softmax(-1)[no_speech_token_id(bundle)]
        (grad_BTD,) = torch.autograd.grad(log_p, h)
    return grad_BTD[0, :n_frames].sum(0).float().cpu()
