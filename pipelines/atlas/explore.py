"""The atlas tables of explore-by-example: frame codes, the similar-moment index and the feature map.

`explore_inputs` computes what they are made of for a run at build time: every frame of the activation
shards encoded by the run's SAE (`pipelines.analysis.frame_codes`: ~7 s for the default corpus's 169k frames
on 2 cores) and the UMAP of its decoder (`pipelines.analysis.feature_map`). `explore_tables` lays them out in
the schema of `pipelines.atlas.schema` (the tests' synthetic atlas feeds it invented inputs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.analysis.feature_map import FeatureMap, MapConfig, feature_map
from pipelines.analysis.frame_codes import FrameCodes, encode_frame_codes
from pipelines.analysis.similar import SimilarConfig, WindowIndex, build_windows, feature_idf, postings
from pipelines.atlas.tables import encode_codes, list_array
from pipelines.errors import AtlasError
from pipelines.paths import RunPaths


@dataclass
class ExploreInputs:
    """What the explore tables are made of."""

    codes: FrameCodes
    map: FeatureMap
    similar: SimilarConfig = field(default_factory=SimilarConfig)
    map_config: MapConfig = field(default_factory=MapConfig)
    timings: dict[str, float] = field(default_factory=dict)


def explore_inputs(run: RunPaths, density_F: np.ndarray, clip_frames: np.ndarray) -> ExploreInputs:
    """Encode the run's shards with its SAE and map its decoder; `clip_frames` (the analysis's real frames
    per manifest row) must match the shards, or the analysis is of other activations."""
    from pipelines.sae.saelens import load_sae

    sae = load_sae(run.sae, "cpu")
    if sae.d_sae != len(density_F):
        raise AtlasError(
            f"the SAE at {run.sae} has {sae.d_sae} latents, the analysis {len(density_F)}: run "
            "`whisper-atlas analyze` again"
        )
    started = time.perf_counter()
    codes = encode_frame_codes(run.activations, sae, sae.cfg.k)
    encoded = time.perf_counter() - started
    if not np.array_equal(np.diff(codes.offsets), np.asarray(clip_frames)[codes.clip_rows]):
        raise AtlasError(
            f"the activations at {run.activations} are not the ones analysed: "
            "run `whisper-atlas analyze` again"
        )
    cfg = MapConfig()
    fmap = feature_map(sae.W_dec.detach().cpu().numpy(), np.asarray(density_F) > 0, cfg)
    return ExploreInputs(codes, fmap, map_config=cfg, timings={"frame_codes": round(encoded, 2)})


def explore_tables(
    inputs: ExploreInputs, density_F: np.ndarray
) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """(the four explore tables, the `run.explore` value that describes them)."""
    started = time.perf_counter()
    codes, cfg = inputs.codes, inputs.similar
    windows = build_windows(codes, feature_idf(density_F), cfg)
    index = postings(windows)
    indexed = time.perf_counter() - started
    tables = {
        "frame_codes": frame_code_table(codes),
        "similar_windows": window_table(windows),
        "window_postings": pa.table(
            {
                "feature_id": index.feature.astype(np.int32),
                "rank": index.rank,
                "window_id": index.window,
                "weight": index.weight,
            }
        ),
        "feature_map": pa.table(
            {
                "feature_id": inputs.map.feature,
                "x": inputs.map.xy_K2[:, 0].astype(np.float32),
                "y": inputs.map.xy_K2[:, 1].astype(np.float32),
            }
        ),
    }
    info = {
        "frame_codes": {
            "k": codes.k,
            "n_frames": int(codes.offsets[-1]),
            "dropped_share": codes.dropped_share,
        },
        "similar": {**cfg.to_dict(), "n_windows": len(windows.clip), "n_postings": len(index.feature)},
        "map": {
            **asdict(inputs.map_config),
            "n_points": len(inputs.map.feature),
            "seconds": round(inputs.map.seconds, 2),
        },
        "timings": {**inputs.timings, "index": round(indexed, 2)},
    }
    return tables, info


def frame_code_table(codes: FrameCodes) -> pa.Table:
    """`frame_codes`: one row per clip, its pairs as two compressed blobs (`tables.encode_codes`)."""
    blobs = [encode_codes(*codes.clip(c)) for c in range(len(codes.clip_rows))]
    features, acts = [f for f, _ in blobs], [a for _, a in blobs]
    return pa.table(
        {
            "clip_id": codes.clip_rows.astype(np.int32),
            "n_frames": np.diff(codes.offsets).astype(np.int32),
            "k": np.full(len(codes.clip_rows), codes.k, np.int32),
            "feature_ids": pa.array(features, pa.binary()),
            "acts": pa.array(acts, pa.binary()),
        }
    )


def window_table(windows: WindowIndex) -> pa.Table:
    """`similar_windows`: every window with its sketch (padding dropped)."""
    keep = windows.features_WS >= 0
    lengths = keep.sum(1)
    return pa.table(
        {
            "window_id": np.arange(len(windows.clip), dtype=np.int32),
            "clip_id": windows.clip,
            "start_frame": windows.start,
            "end_frame": windows.end,
            "features": list_array(windows.features_WS[keep].astype(np.int32), lengths),
            "weights": list_array(windows.weights_WS[keep].astype(np.float32), lengths),
        }
    )
