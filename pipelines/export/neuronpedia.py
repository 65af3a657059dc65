"""Neuronpedia-style export of an atlas, in the layout SAEDashboard's converter writes for upload:

    <out>/<model>/<source>/release.jsonl, model.jsonl, source.jsonl
    <out>/<model>/<source>/features/batch-<i>.jsonl.gz      one Feature per line
    <out>/<model>/<source>/activations/batch-<i>.jsonl.gz   one Activation (example) per line
    <out>/<model>/<source>/explanations/batch-<i>.jsonl.gz  the automatic labels

Feature fields follow Neuronpedia's `Feature` model: `frac_nonzero` (density), the activation histogram as
`freq_hist_data_bar_values` (bin centres) / `freq_hist_data_bar_heights` (frames), `vector` (the decoder row,
for steering), `vectorDefaultSteerStrength` (the max activation, as the converter sets it), decoder-cosine
neighbours as `topkCosSim*`. Audio has no tokens: each example's `tokens` are frame labels, the frame's time
in the clip plus the aligned word spoken there (e.g. "1.24s hola"), with `values` per frame, `maxValue` and
`maxValueTokenIndex` at the peak; quantile examples carry their bin's upper edge in `binMax`.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors.numpy import load_file

from pipelines.analysis.words import normalise_word
from pipelines.atlas.reader import AtlasReader
from pipelines.atlas.schema import FRAME_SECONDS
from pipelines.errors import MissingStageError, missing_stage
from pipelines.sae.saelens import WEIGHTS_NAME, read_cfg

CREATOR = "whisper-atlas"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().split(":")[-1]).strip("-") or "model"


def frame_labels(n_frames: int, words: list[tuple[str, float, float]]) -> list[str]:
    """'<seconds>s <word>' for every frame of a clip, the word being the one aligned over the frame centre."""
    labels = [f"{frame * FRAME_SECONDS:.2f}s" for frame in range(n_frames)]
    for word, start, end in words:
        first = max(0, int(np.ceil(start / FRAME_SECONDS - 0.5)))
        for frame in range(first, min(n_frames, int(np.ceil(end / FRAME_SECONDS - 0.5)))):
            labels[frame] += f" {normalise_word(word)}"
    return labels


def export_neuronpedia(atlas: Path, sae_folder: Path, out: Path, batch_size: int = 1024) -> Path:
    """Write the export under `out`; returns the source folder (`<out>/<model>/<source>`)."""
    if not atlas.exists():
        raise missing_stage("atlas", atlas, "build")
    sae_cfg = read_cfg(sae_folder)
    W_dec_FD = load_file(str(sae_folder / WEIGHTS_NAME))["W_dec"]
    with AtlasReader.open(atlas) as reader:
        run = reader.run_metadata()
        n_features = int(run["n_features"])
        if W_dec_FD.shape[0] != n_features:
            raise MissingStageError(
                f"the SAE in {sae_folder} has {W_dec_FD.shape[0]} latents, the atlas {n_features}: rebuild it"
            )
        model_id = slug(str(run["model"]))
        source_id = f"{run['layer']}-whisper-atlas-{n_features}"
        folder = out / model_id / source_id
        hook = sae_cfg.get("metadata", {}).get("hook_name", f"encoder layer {run['layer']}")
        _write_headers(folder, run, model_id, source_id, hook)
        words = reader.clip_words()
        clips = reader.clips()
        clip_keys = {clip["id"]: clip["key"] for clip in clips}
        labels = {clip["id"]: frame_labels(clip["n_frames"], words.get(clip["id"], [])) for clip in clips}
        common = {"modelId": model_id, "layer": source_id}
        for batch, lo in enumerate(range(0, n_features, batch_size)):
            block = reader.feature_block(lo, min(lo + batch_size, n_features) - 1)
            features = block.features.to_pylist()
            max_act = {f["id"]: f["max_act"] for f in features}
            _write_gz(
                folder / "features" / f"batch-{batch}.jsonl.gz",
                (_feature(f, W_dec_FD[f["id"]], hook, common) for f in features),
            )
            _write_gz(
                folder / "activations" / f"batch-{batch}.jsonl.gz",
                (
                    _activation(e, max_act[e["feature_id"]], labels, clip_keys, common)
                    for e in block.examples.to_pylist()
                ),
            )
            _write_gz(
                folder / "explanations" / f"batch-{batch}.jsonl.gz",
                (
                    {
                        **common,
                        "index": str(f["id"]),
                        "description": f["label"],
                        "typeName": "whisper-atlas-auto",
                    }
                    for f in features
                    if f["label"]
                ),
            )
    return folder


def _feature(row: dict, vector: np.ndarray, hook: str, common: dict) -> dict:
    """One Neuronpedia `Feature` from a `features` row and its decoder direction."""
    fid, max_act, label, edges = row["id"], row["max_act"], row["label"], row["hist_edges"]
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    return {
        **common,
        "index": str(fid),
        "creatorId": CREATOR,
        "maxActApprox": max_act,
        "hasVector": True,
        "vector": [round(float(v), 6) for v in vector],
        "vectorLabel": label or None,
        "vectorDefaultSteerStrength": max_act,
        "hookName": hook,
        "topkCosSimIndices": row["neighbours"],
        "topkCosSimValues": row["neighbour_cos"],
        "frac_nonzero": row["density"],
        "freq_hist_data_bar_values": centres,
        "freq_hist_data_bar_heights": row["hist_counts"],
    }


def _activation(row: dict, max_act: float, labels: dict, clip_keys: dict, common: dict) -> dict:
    """One Neuronpedia `Activation` from an `examples` row (frames stand in for tokens)."""
    fid, kind, rank, clip_id, acts = row["feature_id"], row["kind"], row["rank"], row["clip_id"], row["acts"]
    start, end, peak = row["start_frame"], row["end_frame"], row["peak_frame"]
    return {
        **common,
        "id": f"{fid}-{kind}-{rank}",
        "index": str(fid),
        "creatorId": CREATOR,
        "tokens": labels[clip_id][start:end],
        "values": acts,
        "maxValue": max(acts),
        "maxValueTokenIndex": peak - start,
        "minValue": min(acts),
        "dataSource": clip_keys.get(clip_id, ""),
        "dataIndex": str(clip_id),
        "binMin": None,
        "binMax": None if kind == "top" else row["quantile"] * max_act,
    }


def _write_headers(folder: Path, run: dict, model_id: str, source_id: str, hook: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = run.get("corpus", {})
    headers = {
        "release.jsonl": {
            "name": CREATOR,
            "description": f"Whisper Atlas: SAE features of {run['model']} at {run.get('site', hook)}",
            "creatorName": CREATOR,
            "urls": [],
        },
        "model.jsonl": {"id": model_id, "displayName": str(run["model"]), "instruct": False},
        "source.jsonl": {
            "id": source_id,
            "modelId": model_id,
            "setName": "whisper-atlas",
            "hookName": hook,
            "dataset": corpus.get("name", ""),
            "num_prompts": corpus.get("n_clips", 0),
            "num_tokens_in_prompt": None,
        },
    }
    for name, record in headers.items():
        (folder / name).write_text(json.dumps(record, ensure_ascii=False) + "\n")


def _write_gz(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
