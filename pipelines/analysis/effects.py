"""Each feature's linear effect on Whisper's language identification, for ranking steering candidates.

For clip c with final encoder states h_t (real frames t) and SAE latents a_f,t, the first-order change in
log p(L) (softmax over Whisper's 99 language tokens at the decoder's first step) when feature f's
contribution a_f,t W_dec[f] is removed from every frame is minus

    effect[f, L] = mean over clips c of  sum_t  a_f,t(c) * (W_dec[f] . d log p(L) / d h_t(c))

(attribution patching, Syed et al. 2023; the steering feasibility run found features ranked by this effect
flip the detected language where language-selective ones do not). Positive: the feature pushes toward L.
Log-probabilities are used rather than raw logits so effects are centred; differences between two
languages equal logit differences. Only meaningful when the SAE reads the final encoder output, which the
decoder attends to; `analyze` skips it (with a note) for other layers. Cost: one decoder step forward and
one vmapped backward (all languages at once) per few clips, over `effect_clips_per_language` clips each.
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.analysis.scan import LatentEncoder
from pipelines.model.loader import WhisperBundle
from pipelines.model.transcribe import LANGUAGES, language_logits

CLIPS_PER_BACKWARD = 4
"""Clips per vmapped backward: its gradients take languages x clips x 1500 x D floats."""


class LanguageEffects:
    """Accumulates effect[f, L] over clips, fed with batches of final encoder states."""

    def __init__(self, bundle: WhisperBundle, sae: LatentEncoder, languages: list[str]):
        self.bundle, self.sae, self.languages = bundle, sae, languages
        self.token_index = [LANGUAGES.index(lang) for lang in languages]
        self.total = np.zeros((sae.W_dec.shape[0], len(languages)), np.float64)
        self.n_clips = 0

    def add(self, hidden_BTD: torch.Tensor, n_frames: list[int]) -> None:
        """Add the clips of one batch (`n_frames` real frames each), a few clips per backward pass."""
        for start in range(0, len(n_frames), CLIPS_PER_BACKWARD):
            stop = start + CLIPS_PER_BACKWARD
            self._add(hidden_BTD[start:stop], n_frames[start:stop])

    def _add(self, hidden_BTD: torch.Tensor, n_frames: list[int]) -> None:
        W_dec = self.sae.W_dec.detach()
        n_lang = len(self.token_index)
        with torch.enable_grad():
            h_BTD = hidden_BTD.detach().clone().requires_grad_(True)
            logp_BL = torch.log_softmax(language_logits(self.bundle, h_BTD), dim=-1)
            # one vmapped backward for all languages: row j of `pick` selects language j in every clip
            pick_JBL = torch.zeros(n_lang, *logp_BL.shape, device=logp_BL.device)
            pick_JBL[torch.arange(n_lang), :, self.token_index] = 1.0
            (grads_JBTD,) = torch.autograd.grad(logp_BL, h_BTD, grad_outputs=pick_JBL, is_grads_batched=True)
        with torch.no_grad():
            for b, n in enumerate(n_frames):
                x_TD = hidden_BTD[b, :n].to(W_dec.device, torch.float32)
                latents_TF = self.sae.encode(x_TD).float()
                t, f = latents_TF.nonzero(as_tuple=True)
                g_JND = grads_JBTD[:, b, :n][:, t].to(W_dec.device, torch.float32)
                contrib_NJ = (latents_TF[t, f][None, :] * (W_dec[f].float()[None] * g_JND).sum(-1)).T
                total_FJ = torch.zeros(W_dec.shape[0], n_lang, dtype=torch.float64)
                total_FJ.index_add_(0, f.cpu(), contrib_NJ.double().cpu())
                self.total += total_FJ.numpy()
                self.n_clips += 1

    def mean(self) -> np.ndarray:
        """(F, E) mean effect per clip."""
        return (self.total / max(self.n_clips, 1)).astype(np.float32)
