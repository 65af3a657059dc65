"""Extraction on the tiny random Whisper: real frames, index rows, long clips, recordings, packing, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.activations import load_all, read_meta, write_meta
from pipelines.audio import write_flac
from pipelines.corpus.manifest import Clip, write_manifest
from pipelines.errors import AtlasError, MissingStageError
from pipelines.extract import extract
from pipelines.model.encoder import FRAMES_PER_WINDOW, encode, features_for, real_frames
from pipelines.model.packing import PackConfig, block_features, build_batch, packed_layout, plan_windows
from pipelines.paths import RunPaths
from pipelines.recordings import GAP_SAMPLES, join, plan_recordings

SR = 16000
SECONDS = [1.3, 0.45, 2.0, 31.0, 0.8]
"""Clip lengths: short ones, and one longer than a window (split into 1500 + 50 frames)."""


@pytest.fixture(scope="module")
def tiny():
    from tests.fixtures.tiny_whisper import tiny_whisper

    return tiny_whisper()


def make_audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * (150 + 60 * seed) * t)
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def corpus(data_root: Path) -> Path:
    folder = data_root / "corpora" / "test"
    clips = []
    for i, seconds in enumerate(SECONDS):
        write_flac(folder / "audio" / f"c{i}.flac", make_audio(seconds, i))
        clips.append(Clip(id=f"c{i}", path=f"audio/c{i}.flac", duration=seconds))
    write_manifest(folder, clips)
    return folder


def decoded(corpus: Path, i: int) -> np.ndarray:
    from pipelines.audio import decode_audio

    return decode_audio(corpus / "audio" / f"c{i}.flac")


def solo_reference(tiny, audio: np.ndarray, layer: int | None = None) -> torch.Tensor:
    """The plain reference: each 30 s piece alone in its padded window, real frames kept."""
    pieces = [audio[s : s + 30 * SR] for s in range(0, len(audio), 30 * SR)]
    outs = [encode(tiny, features_for(tiny, [p]), layer)[0, : real_frames(len(p))] for p in pieces]
    return torch.cat(outs)


def test_solo_extraction_stores_real_frames_only(tiny, corpus, data_root) -> None:
    run = RunPaths.named("r")
    report = extract(corpus, run, tiny, None, 2, "solo")
    acts, index = load_all(run.activations)
    meta = read_meta(run.activations)
    assert meta is not None and (meta.layer, meta.d_model, meta.model) == (2, 64, "tiny-random")
    assert acts.dtype == np.float16 and index.dtype == np.int32
    assert report.clips_done == len(SECONDS) and report.clips_skipped == 0 and not report.failed
    assert report.windows == len(SECONDS) + 1  # the 31 s clip takes two windows
    assert report.frames == len(index) == meta.n_frames
    for row in range(len(SECONDS)):
        audio = decoded(corpus, row)
        rows = index[index[:, 0] == row]
        assert rows[:, 1].tolist() == list(range(-(-len(audio) // 320)))  # every real frame, in order, once
        expected = solo_reference(tiny, audio).numpy()
        np.testing.assert_allclose(
            acts[index[:, 0] == row].astype(np.float32), expected, atol=2e-2, rtol=1e-2
        )
    long_rows = index[index[:, 0] == 3]
    assert long_rows[:, 1].max() == real_frames(30 * SR) + real_frames(len(decoded(corpus, 3)) - 30 * SR) - 1


def test_intermediate_layer(tiny, corpus, data_root) -> None:
    run = RunPaths.named("mid")
    extract(corpus, run, tiny, 1, 4, "solo")
    acts, index = load_all(run.activations)
    assert read_meta(run.activations).layer == 1
    expected = solo_reference(tiny, decoded(corpus, 0), layer=1).numpy()
    np.testing.assert_allclose(acts[index[:, 0] == 0].astype(np.float32), expected, atol=2e-2, rtol=1e-2)


def test_packing_with_full_context_is_exact(tiny, corpus, data_root) -> None:
    """Context 1499 gives every clip a whole window: the packed path must reproduce the solo path."""
    solo, packed = RunPaths.named("solo"), RunPaths.named("packed")
    extract(corpus, solo, tiny, None, 2, "solo")
    report = extract(corpus, packed, tiny, None, 2, "packed", context_frames=FRAMES_PER_WINDOW - 1)
    assert report.windows == len(SECONDS) + 1
    a_acts, a_index = load_all(solo.activations)
    b_acts, b_index = load_all(packed.activations)
    np.testing.assert_array_equal(a_index, b_index)
    np.testing.assert_allclose(a_acts.astype(np.float32), b_acts.astype(np.float32), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize(
    "seconds",
    [[1.0, 2.5, 0.6], [14.0, 11.96]],  # the second pair fills the window: 800 + spacer + 698 + spacer
)
def test_packed_clips_do_not_see_each_other(tiny, seconds) -> None:
    """A clip packed with others equals the same clip alone in a window with the same context."""
    config = PackConfig(context_frames=100)
    audios = [make_audio(s, i) for i, s in enumerate(seconds)]
    n_real = [real_frames(len(a)) for a in audios]
    windows = plan_windows(n_real, config)
    assert len(windows) == 1 and sorted(p.item for p in windows[0]) == list(range(len(seconds)))
    mels = {i: block_features(tiny, a, config.block(n)) for i, (a, n) in enumerate(zip(audios, n_real))}
    batch = build_batch(windows, mels)
    with packed_layout(tiny, batch):
        together = encode(tiny, batch.features_BMT)
    for placement in windows[0]:
        i = placement.item
        alone = build_batch(plan_windows([n_real[i]], config), {0: mels[i]})
        with packed_layout(tiny, alone):
            single = encode(tiny, alone.features_BMT)
        block = slice(placement.offset, placement.offset + placement.block)
        torch.testing.assert_close(together[0, block], single[0, : placement.block], atol=1e-5, rtol=1e-5)
    assert torch.equal(
        encode(tiny, batch.features_BMT[:1]), encode(tiny, batch.features_BMT[:1])
    )  # hooks gone


def test_block_features_equal_the_solo_window(tiny) -> None:
    audio = make_audio(1.7, 4)
    block = real_frames(len(audio)) + 60
    mel = block_features(tiny, audio, block)
    assert mel.shape == (80, 2 * block + 1)  # one column more: the spacer's
    torch.testing.assert_close(mel, features_for(tiny, [audio])[0, :, : 2 * block + 1], rtol=0, atol=1e-6)


def test_plan_windows_fills_first_fit_decreasing() -> None:
    config = PackConfig(context_frames=200)
    windows = plan_windows([100, 1400, 300, 50, 900], config)
    for window in windows:
        assert sum(p.block for p in window) <= FRAMES_PER_WINDOW
        spacers_after = [p.offset + p.block + 1 for p in window]  # one spacer frame between blocks
        assert [p.offset for p in window] == [0, *spacers_after[:-1]]
    assert sorted(p.item for w in windows for p in w) == [0, 1, 2, 3, 4]
    assert [[p.block for p in w] for w in windows] == [[1500], [1100, 300], [500, 250]]
    assert len(plan_windows([600, 498], config)) == 1  # 800 + spacer + 698 + spacer = 1500
    assert len(plan_windows([600, 499], config)) == 2
    with pytest.raises(ValueError):
        PackConfig(context_frames=FRAMES_PER_WINDOW)


def test_resume_skips_finished_clips(tiny, corpus, data_root) -> None:
    run = RunPaths.named("resume")
    first = extract(corpus, run, tiny, None, 2, "solo", shard_frames=100)
    meta = read_meta(run.activations)
    assert len(meta.shards) >= 3
    full_acts, full_index = load_all(run.activations)
    # Simulate an interruption after the first shard: meta.json only lists finished shards.
    kept = meta.shards[:1]
    meta.shards = kept
    write_meta(run.activations, meta)
    second = extract(corpus, run, tiny, None, 2, "solo", shard_frames=100)
    assert second.clips_skipped == len(kept[0].clip_rows)
    assert second.clips_done == first.clips_done - second.clips_skipped and not second.restarted
    acts, index = load_all(run.activations)
    order_a, order_b = np.lexsort(full_index.T[::-1]), np.lexsort(index.T[::-1])
    np.testing.assert_array_equal(index[order_b], full_index[order_a])
    np.testing.assert_array_equal(acts[order_b], full_acts[order_a])
    third = extract(corpus, run, tiny, None, 2, "solo", shard_frames=100)
    assert third.clips_done == 0 and third.clips_skipped == len(SECONDS) and third.frames == 0


def test_changed_inputs_restart(tiny, corpus, data_root) -> None:
    run = RunPaths.named("restart")
    extract(corpus, run, tiny, None, 2, "solo")
    again = extract(corpus, run, tiny, 1, 2, "solo")
    assert again.restarted and again.clips_skipped == 0 and read_meta(run.activations).layer == 1
    packed = extract(corpus, run, tiny, 1, 2, "packed")
    assert packed.restarted and packed.clips_done == len(SECONDS)
    assert read_meta(run.activations).n_frames == len(load_all(run.activations)[1])


def test_undecodable_clip_is_reported(tiny, corpus, data_root) -> None:
    (corpus / "audio" / "c1.flac").write_bytes(b"not audio at all")
    report = extract(corpus, RunPaths.named("bad"), tiny, None, 2, "packed")
    assert len(report.failed) == 1 and report.failed[0].startswith("c1: ")
    assert report.clips_done == len(SECONDS) - 1


def test_bad_arguments(tiny, corpus, data_root) -> None:
    with pytest.raises(AtlasError, match="layer must be in 0..2"):
        extract(corpus, RunPaths.named("x"), tiny, 7, 2, "solo")
    with pytest.raises(AtlasError, match="batch size"):
        extract(corpus, RunPaths.named("x"), tiny, None, 0, "solo")
    with pytest.raises(AtlasError, match="context_frames must be in 0..1499"):
        extract(corpus, RunPaths.named("x"), tiny, None, 2, "packed", context_frames=1500)
    with pytest.raises(AtlasError, match="unknown window mode 'blocks'"):
        extract(corpus, RunPaths.named("x"), tiny, None, 2, "blocks")  # type: ignore[arg-type]
    with pytest.raises(MissingStageError, match="corpus build"):
        extract(data_root / "nowhere", RunPaths.named("x"), tiny, None, 2, "solo")


def speaker_corpus(data_root: Path) -> Path:
    """Clips of two speakers (one of them in two languages), one without a speaker, non-speech clips and a
    clip too long to join."""
    folder = data_root / "corpora" / "voices"
    spec = [  # seconds, speaker, language, category
        (2.0, "a", "en", "speech"),
        (1.1, "a", "en", "speech"),
        (3.0, "b", "en", "speech"),
        (1.5, "a", "es", "speech"),
        (2.4, "", "", "music"),
        (29.9, "a", "en", "speech"),
        (0.7, "b", "en", "speech"),
        (1.0, "", "en", "speech"),
        (1.2, "", "", "noise"),
        (0.9, "", "", "noise"),
    ]
    clips = []
    for i, (seconds, speaker, language, category) in enumerate(spec):
        write_flac(folder / "audio" / f"v{i}.flac", make_audio(seconds, i))
        clips.append(Clip(f"v{i}", f"audio/v{i}.flac", seconds, category, language, speaker=speaker))
    write_manifest(folder, clips)
    return folder


def test_plan_joins_one_speakers_clips_in_one_language(data_root) -> None:
    from pipelines.corpus.manifest import read_manifest

    plan = plan_recordings(read_manifest(speaker_corpus(data_root)))
    assert [r.rows for r in plan] == [(0, 1), (2, 6), (3,), (4,), (5,), (7,), (8, 9)]
    assert sorted(row for r in plan for row in r.rows) == list(range(10))  # every clip exactly once


def test_join_starts_clips_on_frame_boundaries_after_a_gap() -> None:
    audios = [make_audio(1.0, 0), make_audio(0.33, 1), make_audio(2.0, 2)]
    recording, offsets = join(audios)
    assert offsets[0] == 0
    for previous, offset, audio in zip(audios, offsets[1:], audios[1:]):
        start = offset * 320
        np.testing.assert_array_equal(recording[start : start + len(audio)], audio)
    assert offsets[1] * 320 - len(audios[0]) == GAP_SAMPLES
    assert offsets[2] * 320 >= offsets[1] * 320 + len(audios[1]) + GAP_SAMPLES
    with pytest.raises(ValueError, match="do not fit one 30 s window"):
        join([make_audio(16.0, 0), make_audio(15.0, 1)])


def test_recordings_are_encoded_as_whisper_encodes_the_joined_audio(tiny, data_root) -> None:
    corpus = speaker_corpus(data_root)
    run = RunPaths.named("rec")
    report = extract(corpus, run, tiny, None, 2, "recording")
    meta = read_meta(run.activations)
    assert meta.window == "recording" and report.window == "recording"
    assert report.windows == 7  # 5 (29.9 s) fits one window
    assert [w for s in meta.shards for w in s.windows] == [[0, 1], [2, 6], [3], [4], [5], [7], [8, 9]]
    assert meta.solo_clip_rows == {3, 4, 5, 7}
    acts, index = load_all(run.activations)
    audios = [decoded_from(corpus, i) for i in (2, 6)]
    recording, offsets = join(audios)
    whole = encode(tiny, features_for(tiny, [recording]))[0]
    for row, audio, offset in zip((2, 6), audios, offsets):
        mine = index[:, 0] == row
        assert index[mine, 1].tolist() == list(range(real_frames(len(audio))))
        expected = whole[offset : offset + real_frames(len(audio))].numpy()
        np.testing.assert_allclose(acts[mine].astype(np.float32), expected, atol=2e-2, rtol=1e-2)
    alone = index[:, 0] == 4  # the music clip: its own window, as the server computes an upload
    expected = solo_reference(tiny, decoded_from(corpus, 4)).numpy()
    np.testing.assert_allclose(acts[alone].astype(np.float32), expected, atol=2e-2, rtol=1e-2)


def test_recording_resume_keeps_the_plan(tiny, data_root) -> None:
    corpus = speaker_corpus(data_root)
    run = RunPaths.named("rec-resume")
    extract(corpus, run, tiny, None, 2, "recording", shard_frames=100)
    full_acts, full_index = load_all(run.activations)
    meta = read_meta(run.activations)
    meta.shards = meta.shards[:2]
    write_meta(run.activations, meta)
    again = extract(corpus, run, tiny, None, 2, "recording", shard_frames=100)
    assert not again.restarted and again.clips_skipped == sum(len(s.clip_rows) for s in meta.shards)
    acts, index = load_all(run.activations)
    np.testing.assert_array_equal(index, full_index)
    np.testing.assert_array_equal(acts, full_acts)


def decoded_from(corpus: Path, i: int) -> np.ndarray:
    from pipelines.audio import decode_audio

    return decode_audio(corpus / "audio" / f"v{i}.flac")


def test_decodable_activations_rebuild_each_whole_window(tiny, data_root) -> None:
    """At the final layer every window frame is stored, so `iter_windows` gives the decoder's input."""
    from pipelines.activations import iter_windows

    corpus = speaker_corpus(data_root)
    run = RunPaths.named("whole")
    extract(corpus, run, tiny, None, 2, "recording", shard_frames=1500)
    assert read_meta(run.activations).decodable
    windows = list(iter_windows(run.activations, FRAMES_PER_WINDOW))
    assert [w.rows for w in windows] == [[0, 1], [2, 6], [3], [4], [5], [7], [8, 9]]
    audios = [decoded_from(corpus, i) for i in (2, 6)]
    recording, offsets = join(audios)
    joined = next(w for w in windows if w.rows == [2, 6])
    assert joined.offsets == offsets and joined.first_frames == [0, 0]
    assert joined.n_frames == offsets[1] + real_frames(len(audios[1]))
    whole = encode(tiny, features_for(tiny, [recording]))[0].numpy()
    np.testing.assert_allclose(joined.states_TD.astype(np.float32), whole, atol=2e-2, rtol=1e-2)


def test_packed_and_inner_layer_activations_are_not_decodable(tiny, corpus) -> None:
    extract(corpus, RunPaths.named("p"), tiny, None, 2, "packed")
    assert not read_meta(RunPaths.named("p").activations).decodable
    extract(corpus, RunPaths.named("inner"), tiny, 1, 2, "solo")
    assert not read_meta(RunPaths.named("inner").activations).decodable
