"""`parallel_traces` on planted shards: the chosen groups, the cross-lingual score, traces, two shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.activations import ActivationsMeta, append_shard
from pipelines.analysis.parallel import parallel_traces, points_per_clip
from pipelines.analysis.result import ParallelTable
from pipelines.corpus.manifest import Clip

D = 6
"""Model width = features: the planted encoder reads feature f off dimension f."""


class IdentityEncoder:
    """An 'SAE' whose latent f is relu(x_f): activations are planted directly."""

    def __init__(self, d: int) -> None:
        self.W_dec = torch.eye(d)

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return torch.relu(x_BD)


# group -> (language, frames) per clip; clip rows follow this order, then two clips outside any group
GROUPS = {
    "g-hello": [("en", 40), ("es", 50), ("fr", 30)],
    "g-bye": [("en", 400), ("es", 60)],
    "g-thanks": [("en", 20), ("es", 25), ("fr", 35), ("es", 30)],
    "g-solo": [("en", 30), ("en", 20)],  # one language: not a parallel group
}
EVEN, SPANISH, BYE, QUIET, SOLO, TIE = range(D)
"""The planted features: EVEN fires at 2.0 on every clip of every group; SPANISH only on Spanish clips (of
g-hello); BYE on English clips, hardest on g-bye, weaker on g-hello, weakest on g-thanks; QUIET never; SOLO
only on the one-language group; TIE equally on every group."""


def _corpus() -> tuple[list[Clip], list[np.ndarray]]:
    clips, acts = [], []
    for group, versions in GROUPS.items():
        for language, n in versions:
            row = len(clips)
            clips.append(Clip(id=f"c{row}", path=f"c{row}.flac", duration=n * 0.02, language=language,
                              group=group))  # fmt: skip
            a_TD = np.zeros((n, D), np.float32)
            a_TD[n // 2 :, EVEN] = 2.0  # second half of every clip of every group
            if group == "g-hello" and language == "es":
                a_TD[5:10, SPANISH] = 3.0
            if language == "en":
                a_TD[n // 3, BYE] = {"g-bye": 5.0, "g-hello": 3.0, "g-thanks": 1.0}.get(group, 0.0)
            if group == "g-solo":
                a_TD[:, SOLO] = 1.0
            a_TD[:, TIE] = 1.0
            a_TD[:, QUIET] = -1.0
            acts.append(a_TD)
    clips.append(Clip(id="lone", path="lone.flac", duration=1.0, language="it"))
    acts.append(np.ones((50, D), np.float32))
    return clips, acts


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Clip], list[np.ndarray]]:
    """Two shards: the split puts the clips of g-bye and g-thanks in different shards than some of theirs."""
    folder = tmp_path_factory.mktemp("acts")
    clips, acts = _corpus()
    meta = ActivationsMeta(model="planted", layer=1, d_model=D, corpus="planted")
    index = [np.stack([np.full(len(a), row), np.arange(len(a))], 1) for row, a in enumerate(acts)]
    cut = 4  # rows 0..3 (g-hello and g-bye's en) in the first shard
    append_shard(folder, meta, np.concatenate(acts[:cut]), np.concatenate(index[:cut]))
    append_shard(folder, meta, np.concatenate(acts[cut:]), np.concatenate(index[cut:]))
    return folder, clips, acts


def rows_of(table: ParallelTable, feature: int) -> list[tuple[int, str, int]]:
    keep = table.feature == feature
    return list(zip(table.rank[keep].tolist(), table.groups[table.group[keep]].tolist(),
                    table.clip[keep].tolist()))  # fmt: skip


def traces(table: ParallelTable) -> list[np.ndarray]:
    ends = np.cumsum(table.trace_len)
    return np.split(table.trace.astype(np.float32), ends[:-1])


def test_scores_and_groups(planted) -> None:
    folder, clips, _ = planted
    table = parallel_traces(folder, IdentityEncoder(D), clips, top_groups=2, chunk_frames=16)
    score = table.cross_lingual
    assert score.shape == (D,) and score.dtype == np.float32
    assert score[EVEN] == pytest.approx(1.0) and score[TIE] == pytest.approx(1.0)
    assert score[SPANISH] == pytest.approx(0.0)
    assert np.isnan(score[QUIET]) and np.isnan(score[SOLO]), "no parallel group: NaN"
    # BYE: g-bye en=5, es=0 -> 0; g-hello en=3 only -> 0; g-thanks en=1 only -> 0
    assert score[BYE] == pytest.approx(0.0)
    assert set(table.groups.tolist()) == {"g-bye", "g-hello", "g-thanks"}, (
        "one-language groups are not parallel"
    )

    assert [(r, g) for r, g, _ in rows_of(table, BYE)] == [(0, "g-bye")] * 2 + [(1, "g-hello")] * 3
    assert [c for _, _, c in rows_of(table, BYE)] == [3, 4, 0, 1, 2], "a group's clips by language"
    assert {g for _, g, _ in rows_of(table, SPANISH)} == {"g-hello"}, "only groups where it fires"
    assert rows_of(table, QUIET) == [] and rows_of(table, SOLO) == []
    # ties go to the earlier group key
    assert [g for _, g, _ in rows_of(table, TIE)] == ["g-bye"] * 2 + ["g-hello"] * 3


def test_traces_follow_the_frames(planted) -> None:
    folder, clips, acts = planted
    table = parallel_traces(folder, IdentityEncoder(D), clips, top_groups=3, chunk_frames=16)
    assert table.trace.dtype == np.float16
    found = traces(table)
    for i in np.flatnonzero(table.feature == SPANISH):
        row, step = int(table.clip[i]), int(table.frames_per_point[i])
        assert step == 1 and len(found[i]) == len(acts[row])
        np.testing.assert_allclose(found[i], np.maximum(acts[row][:, SPANISH], 0))
    long = np.flatnonzero((table.feature == EVEN) & (table.clip == 3))  # 400 frames: max-pooled
    assert len(long) == 1
    i = int(long[0])
    step = int(table.frames_per_point[i])
    assert step > 1 and table.trace_len[i] <= 150 and table.trace_len[i] == -(-400 // step)
    expected = np.maximum(acts[3][:, EVEN], 0)
    pooled = np.pad(expected, (0, -len(expected) % step)).reshape(-1, step).max(1)
    np.testing.assert_allclose(found[i], pooled)
    assert found[i].max() == pytest.approx(2.0)


def test_chunking_and_shards_do_not_change_the_result(planted, tmp_path: Path) -> None:
    folder, clips, acts = planted
    a = parallel_traces(folder, IdentityEncoder(D), clips, chunk_frames=7)
    b = parallel_traces(folder, IdentityEncoder(D), clips, chunk_frames=4096)
    one = tmp_path / "one"
    meta = ActivationsMeta(model="planted", layer=1, d_model=D, corpus="planted")
    index = [np.stack([np.full(len(x), row), np.arange(len(x))], 1) for row, x in enumerate(acts)]
    append_shard(one, meta, np.concatenate(acts), np.concatenate(index))
    c = parallel_traces(one, IdentityEncoder(D), clips)
    for other in (b, c):
        for name in ("feature", "rank", "group", "clip", "frames_per_point", "trace", "trace_len"):
            np.testing.assert_array_equal(getattr(a, name), getattr(other, name), err_msg=name)
        np.testing.assert_array_equal(a.cross_lingual, other.cross_lingual)


def test_save_load_round_trip(planted, tmp_path: Path) -> None:
    folder, clips, _ = planted
    table = parallel_traces(folder, IdentityEncoder(D), clips)
    assert ParallelTable.load(tmp_path) is None
    table.save(tmp_path)
    loaded = ParallelTable.load(tmp_path)
    assert loaded is not None
    for name in ("groups", "feature", "trace", "cross_lingual"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))


def test_points_per_clip_bounds_a_group() -> None:
    assert points_per_clip(3) == 150
    assert points_per_clip(20) * 20 <= 1200 and points_per_clip(1000) == 24
