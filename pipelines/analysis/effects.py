"""Each feature's linear effect on Whisper's language identification, for ranking steering candidates.

For an encoder window c (a speaker's recording, or one clip) with final encoder states h_t (frames t up to
the end of its last clip) and SAE latents a_f,t, the first-order change in log p(L) (softmax over Whisper's
99 language tokens at the decoder's first step) when feature f's contribution a_f,t W_dec[f] is removed
from every frame is minus

    effect[f, L] = mean over windows c of  sum_t  a_f,t(c) * (W_dec[f] . d log p(L) / d h_t(c))

(attribution patching, Syed et al. 2023; the atlas stores it per feature and language, and steering's `sae`
method, `pipelines.steering`, picks the features with the largest effect). Positive: the feature pushes
toward L.
Log-probabilities are used rather than raw logits so effects are centred; differences between two
languages equal logit differences. Only meaningful when the SAE reads the final encoder output, which the
decoder attends to; `analyze` skips it (with a note) for other layers.

How the gradient is computed cheaply: the decoder reads h only through the cross-attention projections
K_l = h W_k,l^T and V_l = h W_v,l^T + b of each layer l, so d/dh_t = sum_l dK_l[t] W_k,l + dV_l[t] W_v,l.
Forward hooks (on transformers' own modules) capture K_l and V_l; backpropagating from one decoder step to
them is cheap (one query), and the sum is formed for the clip's real frames only, not the ~85% of the
30 s window that is padding (plain autograd to h would project all 1500 frames back, per language).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipelines.analysis.scan import LatentEncoder
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import LANGUAGES, language_logits

CLIPS_PER_BACKWARD = 2
"""Clips per decoder pass: the captured gradients take 2 x layers x clips x 1500 x D floats."""


def cross_attention_projections(bundle: WhisperBundle) -> list[nn.Linear]:
    """The K and V projections of every decoder layer's cross-attention: the only readers of h."""
    return [
        p
        for layer in bundle.model.model.decoder.layers
        for p in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)
    ]


class LanguageEffectEstimate:
    """Accumulates effect[f, L] over clips, fed with batches of final encoder states."""

    def __init__(self, bundle: WhisperBundle, sae: LatentEncoder, languages: list[str]):
        self.bundle, self.sae, self.languages = bundle, sae, languages
        self.token_index = [LANGUAGES.index(lang) for lang in languages]
        self.projections = cross_attention_projections(bundle)
        self.total = np.zeros((sae.W_dec.shape[0], len(languages)), np.float64)
        self.n_clips = 0

    def add(self, hidden_BTD: torch.Tensor, n_frames: list[int]) -> None:
        """Add the clips of one batch (`n_frames` real frames each), a few clips per decoder pass."""
        for start in range(0, len(n_frames), CLIPS_PER_BACKWARD):
            stop = start + CLIPS_PER_BACKWARD
            self._add(hidden_BTD[start:stop], n_frames[start:stop])

    def grad_real_frames(self, hidden_BTD: torch.Tensor, n_frames: list[int]) -> list[torch.Tensor]:
        """Per clip, (languages, real frames, D): d log p(language) / d h_t on the clip's real frames."""
        captured: dict[nn.Module, torch.Tensor] = {}

        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured[module] = output

        hooks = [p.register_forward_hook(keep) for p in self.projections]
        try:
            with torch.enable_grad():
                h_BTD = hidden_BTD.detach().clone().requires_grad_(True)
                logp_BL = torch.log_softmax(language_logits(self.bundle, h_BTD), dim=-1)
                outputs = [captured[p] for p in self.projections]
                per_language = [
                    torch.autograd.grad(logp_BL[:, token].sum(), outputs, retain_graph=True)
                    for token in self.token_index
                ]
        finally:
            for hook in hooks:
                hook.remove()
        with torch.no_grad():
            result = []
            for b, n in enumerate(n_frames):
                dh_JTD = torch.zeros(len(per_language), n, hidden_BTD.shape[-1])
                for i, proj in enumerate(self.projections):
                    g_JTD = torch.stack([grads[i][b, :n] for grads in per_language]).float()
                    dh_JTD += g_JTD @ proj.weight.float()
                result.append(dh_JTD)
            return result

    def _add(self, hidden_BTD: torch.Tensor, n_frames: list[int]) -> None:
        W_dec = self.sae.W_dec.detach().float()
        n_features = W_dec.shape[0]
        grads = self.grad_real_frames(hidden_BTD, n_frames)
        with torch.no_grad():
            for b, n in enumerate(n_frames):
                latents_TF = self.sae.encode(hidden_BTD[b, :n].to(W_dec.device, torch.float32)).float()
                t, f = latents_TF.nonzero(as_tuple=True)
                # sum_t a_f,t (W_dec[f] . g_t) = W_dec[f] . (A^T G)[f], with A the sparse latents
                a_FT = torch.sparse_coo_tensor(torch.stack([f, t]), latents_TF[t, f], (n_features, n))
                for j in range(len(self.languages)):
                    weighted_FD = torch.sparse.mm(a_FT, grads[b][j].to(W_dec.device))
                    self.total[:, j] += (weighted_FD * W_dec).sum(-1).double().cpu().numpy()
                self.n_clips += 1

    def mean(self) -> np.ndarray:
        """(F, E) mean effect per clip."""
        return (self.total / max(self.n_clips, 1)).astype(np.float32)
