"""analyze -> build -> exports end to end on a tiny random Whisper, a tiny SAE and a few synthetic clips."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import torch
from typer.testing import CliRunner

from pipelines.activations import ActivationsMeta, append_shard, load_all
from pipelines.analysis.analyze import analyze
from pipelines.analysis.config import AnalysisConfig
from pipelines.analysis.result import KIND_TOP, AnalysisResult
from pipelines.atlas import schema
from pipelines.atlas.build import StaleAnalysisError, build_atlas
from pipelines.audio import decode_audio, write_flac
from pipelines.cli import app
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.export.neuronpedia import export_neuronpedia
from pipelines.export.parquet import export_parquet
from pipelines.export.saelens import export_saelens
from pipelines.model.encoder import encode, features_for, real_frames
from pipelines.model.transcribe import LANGUAGES, language_logits
from pipelines.paths import RunPaths
from pipelines.sae.saelens import load_sae, save_sae
from tests.fixtures.tiny_sae import tiny_sae
from tests.fixtures.tiny_whisper import tiny_whisper

SR = 16000
CFG = AnalysisConfig(
    top_k=3,
    quantile_bins=2,
    quantile_per_bin=1,
    window_frames=11,
    chunk_frames=120,
    effect_windows_per_language=2,
    effect_languages=("en", "fr"),
    max_new_tokens=4,
)


def make_corpus(folder: Path) -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    specs = [("speech", "en")] * 3 + [("speech", "es")] * 3 + [("noise", ""), ("silence", "")]
    for i, (category, language) in enumerate(specs):
        n = int(SR * (0.8 + 0.3 * i))
        t = np.arange(n) / SR
        if category == "speech":
            audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        elif category == "noise":
            audio = 0.1 * rng.standard_normal(n)
        else:
            audio = np.zeros(n)
        path = f"audio/clip{i}.flac"
        write_flac(folder / path, audio.astype(np.float32))
        clips.append(Clip(id=f"clip-{i}", path=path, duration=n / SR, category=category, language=language))
    write_manifest(folder, clips)
    return clips


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WHISPER_ATLAS_DATA", str(root))
        corpus = root / "corpora" / "default"
        clips = make_corpus(corpus)
        bundle = tiny_whisper()
        run = RunPaths.named("default")
        meta = ActivationsMeta(
            model=bundle.name, layer=bundle.n_layers, d_model=bundle.d_model, corpus="default"
        )
        audios = [decode_audio(corpus / c.path) for c in clips]
        hidden = encode(bundle, features_for(bundle, audios))
        for part in (range(0, 5), range(5, len(clips))):
            acts = [hidden[i, : real_frames(len(audios[i]))].numpy() for i in part]
            index = [np.stack([np.full(len(a), i), np.arange(len(a))], 1) for i, a in zip(part, acts)]
            append_shard(run.activations, meta, np.concatenate(acts), np.concatenate(index))
        sae = tiny_sae(bundle.d_model, 40, k=4, seed=2)
        save_sae(sae, run.sae, {"model_name": bundle.name, "hook_name": "encoder.layer_norm"})
        split = {"train": [0, 1, 3, 4, 6], "speaker": [], "group": [2, 5, 7], "unused": []}
        (run.sae / "metrics.json").write_text(json.dumps({"fvu": 0.1, "l0": 4.0, "split": split}))
        sae = load_sae(run.sae)
        result = analyze(run, corpus, bundle, sae, CFG)
        yield {
            "root": root,
            "run": run,
            "corpus": corpus,
            "clips": clips,
            "bundle": bundle,
            "sae": sae,
            "result": result,
        }


def test_analysis_covers_every_frame_and_feature(setup):
    result, run = setup["result"], setup["run"]
    acts, index = load_all(run.activations)
    with torch.no_grad():
        latents = setup["sae"].encode(torch.from_numpy(acts.astype(np.float32))).numpy()
    assert result.meta.n_frames == len(acts)
    np.testing.assert_array_equal(result.features.fire_count, (latents > 0).sum(0))
    np.testing.assert_allclose(result.features.max_act, latents.max(0), rtol=1e-5)
    ex = result.examples
    assert len(ex.feature) > 0
    offsets = np.r_[0, np.cumsum(ex.acts_len)]
    for i in range(len(ex.feature)):
        rows = np.flatnonzero(index[:, 0] == ex.clip[i])[ex.start[i] : ex.end[i]]
        np.testing.assert_allclose(
            ex.acts[offsets[i] : offsets[i + 1]], latents[rows, ex.feature[i]], atol=1e-4
        )
        assert ex.start[i] <= ex.peak[i] < ex.end[i]
    top = ex.kind == KIND_TOP
    for f in np.unique(ex.feature[top]):
        clips = ex.clip[top & (ex.feature == f)]
        assert len(clips) == len(set(clips)) <= CFG.top_k
    assert len(result.labels) == result.meta.n_features
    held_out = np.isin(index[:, 0], [2, 5, 7])  # the split's evaluation clips: labels are scored there
    assert all(result.labels[f] for f in np.flatnonzero((latents[held_out] > 0).any(0)))
    assert result.interpretation is not None and result.annotations is not None
    assert result.interpretation.summary["heldout_clips"] == 3
    assert np.all((result.features.label_score >= 0) & (result.features.label_score <= 1))
    n_mels = int(result.clips.n_mels)
    assert result.clips.mel.size == n_mels * result.clips.mel_frames.sum()
    np.testing.assert_array_equal(result.clips.mel_frames, 2 * result.clips.n_frames)
    # Clips share transcription windows, so a random model's few tokens land in some clips, not all.
    assert any(t.hypothesis for t in result.clip_text)
    for clip, t in zip(setup["clips"], result.clip_text):
        assert t.hypothesis == "".join(f" {w}" for w, _, _ in t.words).strip() or clip.category != "speech"


def test_language_effects_equal_the_dense_formula(setup):
    result, bundle, sae, clips = setup["result"], setup["bundle"], setup["sae"], setup["clips"]
    assert result.meta.effect_languages == ["en", "es", "fr"]
    assert result.meta.effect_clips == 4  # two per corpus language
    chosen = [0, 1, 3, 4]  # the first two en and es clips of the SAE's training clips
    total = np.zeros((sae.d_sae, 3))
    for row in chosen:
        audio = decode_audio(setup["corpus"] / clips[row].path)
        n = real_frames(len(audio))
        h = encode(bundle, features_for(bundle, [audio])).requires_grad_(True)
        with torch.enable_grad():
            logp = torch.log_softmax(language_logits(bundle, h), -1)
            for j, lang in enumerate(["en", "es", "fr"]):
                (g,) = torch.autograd.grad(logp[0, LANGUAGES.index(lang)], h, retain_graph=True)
                with torch.no_grad():
                    a = sae.encode(h[0, :n].detach())
                    total[:, j] += (a * (g[0, :n] @ sae.W_dec.T)).sum(0).numpy()
    np.testing.assert_allclose(result.features.effects, total / len(chosen), rtol=1e-3, atol=1e-6)


def test_effect_gradients_from_the_cross_attention_equal_autograd_to_h(setup):
    from pipelines.analysis.effects import LanguageEffectEstimate

    bundle, clips = setup["bundle"], setup["clips"]
    audios = [decode_audio(setup["corpus"] / clips[r].path) for r in (0, 4)]
    n_frames = [real_frames(len(a)) for a in audios]
    h = encode(bundle, features_for(bundle, audios))
    grads = LanguageEffectEstimate(bundle, setup["sae"], ["en", "ru"]).grad_real_frames(h, n_frames)
    h.requires_grad_(True)
    with torch.enable_grad():
        logp = torch.log_softmax(language_logits(bundle, h), -1)
        for j, lang in enumerate(["en", "ru"]):
            (g,) = torch.autograd.grad(logp[:, LANGUAGES.index(lang)].sum(), h, retain_graph=True)
            for b, n in enumerate(n_frames):
                torch.testing.assert_close(grads[b][j], g[b, :n], rtol=1e-4, atol=1e-7)


def test_saved_analysis_round_trips_and_reuses_transcripts(setup):
    run = setup["run"]
    loaded = AnalysisResult.load(run.analysis)
    np.testing.assert_array_equal(loaded.examples.acts, setup["result"].examples.acts)
    assert loaded.labels == setup["result"].labels
    assert loaded.clip_text == setup["result"].clip_text
    from pipelines.analysis.result import load_clip_text

    cached = load_clip_text(run.analysis, setup["bundle"].name)
    assert set(cached) == {c.id for c in setup["clips"]}
    assert load_clip_text(run.analysis, "another-model") == {}


def test_build_writes_every_table(setup):
    run, corpus = setup["run"], setup["corpus"]
    path = build_atlas(run, corpus)
    engine = sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
    with engine.connect() as con:
        rows = {
            name: [dict(r._mapping) for r in con.execute(sa.select(t))]
            for name, t in schema.metadata.tables.items()
        }
    engine.dispose()
    result = setup["result"]
    assert len(rows["features"]) == result.meta.n_features
    assert [f["id"] for f in rows["features"]] == list(range(result.meta.n_features))
    assert len(rows["examples"]) == len(result.examples.feature)
    assert len(rows["clips"]) == len(setup["clips"]) == len(rows["clip_mels"])
    assert all(Path(c["audio_path"]).exists() for c in rows["clips"])
    run_info = {r["key"]: json.loads(r["value"]) for r in rows["run"]}
    assert run_info["metrics"]["fvu"] == 0.1
    assert run_info["corpus"]["n_frames"] == result.meta.n_frames
    assert set(run_info["corpus"]["minutes_by_language"]) == {"en", "es"}
    assert run_info["sae"]["d_sae"] == 40
    live = sum(1 for f in rows["features"] if f["density"] > 0)
    assert len(rows["feature_languages"]) == 2 * live
    assert len(rows["feature_language_effects"]) == 3 * live
    for f in rows["features"]:
        if f["density"] > 0:
            assert len(f["hist_edges"]) == len(f["hist_counts"]) + 1
            assert sum(f["hist_counts"]) == result.features.fire_count[f["id"]]


def test_build_refuses_a_stale_analysis_and_keeps_the_old_atlas(setup, tmp_path: Path):
    run, corpus = setup["run"], setup["corpus"]
    path = build_atlas(run, corpus)
    before = path.read_bytes()
    other = tmp_path / "other"
    write_manifest(other, setup["clips"][:3])
    with pytest.raises(StaleAnalysisError, match="analyze"):
        build_atlas(run, other)
    assert path.read_bytes() == before


def test_exports_are_written_and_parse(setup, tmp_path: Path):
    run = setup["run"]
    atlas = build_atlas(run, setup["corpus"])
    sae_out = export_saelens(run.sae, tmp_path / "saelens")
    torch.testing.assert_close(load_sae(sae_out).W_dec, setup["sae"].W_dec)

    files = export_parquet(atlas, tmp_path / "parquet")
    assert {f.stem for f in files} == set(schema.metadata.tables)
    assert (
        pq.read_table(tmp_path / "parquet" / "features.parquet").num_rows == setup["result"].meta.n_features
    )

    folder = export_neuronpedia(atlas, run.sae, tmp_path / "np", batch_size=16)
    for name in ("release.jsonl", "model.jsonl", "source.jsonl"):
        json.loads((folder / name).read_text())
    features = [
        json.loads(line) for p in sorted((folder / "features").glob("*.gz")) for line in gzip.open(p, "rt")
    ]
    assert [int(f["index"]) for f in features] == list(range(40))
    assert all(len(f["vector"]) == setup["bundle"].d_model for f in features)
    assert all(f["vectorDefaultSteerStrength"] == f["maxActApprox"] for f in features)
    acts = [
        json.loads(line) for p in sorted((folder / "activations").glob("*.gz")) for line in gzip.open(p, "rt")
    ]
    assert len(acts) == len(setup["result"].examples.feature)
    for a in acts:
        assert len(a["tokens"]) == len(a["values"])
        assert a["tokens"][0].endswith("s") or " " in a["tokens"][0]
        assert a["values"][a["maxValueTokenIndex"]] == pytest.approx(a["maxValue"], rel=1e-4)


def test_cli_build_and_export(setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WHISPER_ATLAS_DATA", str(setup["root"]))
    runner = CliRunner()
    out = runner.invoke(app, ["build"])
    assert out.exit_code == 0, out.output
    assert "atlas written" in out.output
    out = runner.invoke(app, ["export", "parquet", str(tmp_path / "pq")])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["export", "neuronpedia", str(tmp_path / "np"), "--run", "missing"])
    assert out.exit_code == 1 and "build" in out.output
    out = runner.invoke(app, ["calibrate", "--corpus", "another"])  # its split's rows index the run's own
    assert out.exit_code == 1 and "was extracted from corpus" in out.output and "another" in out.output
