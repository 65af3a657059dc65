"""Steer Whisper's transcription by editing its encoder output: SAE features, or a difference of means.

- `spec`: the request (features or a target language, mode, method, unit of strength) and its limits.
- `resources`: what a run provides (model, SAE, atlas data, per-language mean activations).
- `directions`: the vector maths on one clip's real frames (add, clamp, reconstruct, language gradient).
- `plan`: a spec resolved against one clip into an edit of its frames.
- `run`: one request, encoding once and decoding baseline, reconstructed and steered states in one batch.
- `measures`: a transcript judged against its baseline (text language, loop flag, CER, success to a target).
"""

from pipelines.steering.measures import TranscriptMeasures, is_degenerate, measure, text_language
from pipelines.steering.plan import SteeringPlan, UsedFeature, plan_steering
from pipelines.steering.resources import (
    AtlasSteeringData,
    LanguageEffects,
    LanguageMeans,
    SteeringResources,
    heldout_clip_rows,
    language_means,
    load_steering_resources,
    run_model_and_layer,
)
from pipelines.steering.run import EncodedClip, SteerResult, encode_clip, steer, transcription_dict, word_diff
from pipelines.steering.spec import (
    MAX_ABS_STRENGTH,
    MAX_NEW_TOKENS,
    FeatureStrength,
    Method,
    Mode,
    Scale,
    Selection,
    SteeringError,
    SteeringSpec,
)

__all__ = [
    "MAX_ABS_STRENGTH",
    "MAX_NEW_TOKENS",
    "AtlasSteeringData",
    "EncodedClip",
    "FeatureStrength",
    "LanguageEffects",
    "LanguageMeans",
    "Method",
    "Mode",
    "Scale",
    "Selection",
    "SteerResult",
    "SteeringError",
    "SteeringPlan",
    "SteeringResources",
    "SteeringSpec",
    "TranscriptMeasures",
    "UsedFeature",
    "encode_clip",
    "heldout_clip_rows",
    "is_degenerate",
    "language_means",
    "load_steering_resources",
    "measure",
    "plan_steering",
    "run_model_and_layer",
    "steer",
    "text_language",
    "transcription_dict",
    "word_diff",
]
