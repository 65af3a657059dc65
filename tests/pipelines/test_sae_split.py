"""The train/evaluation split: evaluation clips share neither a speaker nor a sentence group with training."""

from __future__ import annotations

from pipelines.corpus.manifest import SPEECH, Clip
from pipelines.sae.split import split_clips


def corpus() -> dict[int, Clip]:
    """Twelve sentences said by two English voices, one Spanish voice and (half of them) a second Spanish
    voice, and six non-speech clips without group or speaker."""
    clips = []
    for sentence in range(12):
        voices = [("en", "ann"), ("en", "bob"), ("es", "eva")] + [("es", "raul")] * (sentence % 2)
        for language, speaker in voices:
            clips.append(
                Clip(f"{speaker}{sentence}", "", 1.0, SPEECH, language, group=f"g{sentence}", speaker=speaker)
            )
    clips += [Clip(f"noise{i}", "", 1.0, "noise") for i in range(6)]
    return dict(enumerate(clips))


def test_no_speaker_or_group_is_shared_with_training() -> None:
    clips = corpus()
    for seed in range(5):
        split = split_clips(clips, 0.25, seed)
        train = [clips[r] for r in split.train]
        for name in ("speaker", "group"):
            for row in getattr(split, name):
                assert clips[row].group == "" or clips[row].group not in {c.group for c in train}
        assert not {(clips[r].language, clips[r].speaker) for r in split.speaker + split.unused} & {
            (c.language, c.speaker) for c in train
        }
        everything = split.train + split.speaker + split.group + split.unused
        assert sorted(everything) == sorted(clips)  # every clip in exactly one part


def test_one_speaker_per_splittable_language_is_held_out() -> None:
    held = {seed: split_clips(corpus(), 0.25, seed).held_out_speakers for seed in range(6)}
    assert all(h.keys() == {"en", "es"} for h in held.values())
    assert {tuple(h["es"]) for h in held.values()} == {("raul",)}  # never eva, the language's largest voice
    assert {tuple(h["en"]) for h in held.values()} == {("bob",)}  # ann and bob tie: ann ranks first by name
    assert split_clips(corpus(), 0.25, 0).unsplit_languages == []


def test_held_out_groups_favour_new_voices_and_cover_every_category() -> None:
    clips = {r: c for r, c in corpus().items() if c.speaker != "bob"}  # raul is the only voice to hold out
    for seed in range(4):
        split = split_clips(clips, 0.25, seed)
        held_groups = {clips[r].group for r in split.speaker + split.group if clips[r].category == SPEECH}
        assert len(held_groups) == 3  # a quarter of the 12 sentences
        raul = {c.group for c in clips.values() if c.speaker == "raul"}
        assert held_groups <= raul  # sentences the held-out Spanish voice said come first
        assert len([r for r in split.group if clips[r].category == "noise"]) == 2  # round(0.25 x 6)
        assert {clips[r].speaker for r in split.speaker} == {"raul"}
        assert split.unsplit_languages == ["en"]


def test_speakers_are_held_out_until_they_hold_the_fraction() -> None:
    clips = [Clip(f"main{i}", "", 1.0, SPEECH, "cs", group=f"m{i}", speaker="main") for i in range(20)]
    clips += [Clip(f"side{s}", "", 1.0, SPEECH, "cs", group=f"s{s}", speaker=f"side{s}") for s in range(10)]
    for seed in range(4):
        held = split_clips(dict(enumerate(clips)), 0.2, seed).held_out_speakers["cs"]
        assert len(held) == 6 and "main" not in held  # 6 one-clip speakers reach 20% of 30 clips


def test_equal_seeds_give_equal_splits_and_single_voices_are_reported() -> None:
    clips = {r: c for r, c in corpus().items() if c.speaker in ("ann", "eva", "")}
    a, b = split_clips(clips, 0.25, 7), split_clips(clips, 0.25, 7)
    assert a == b and a.speaker == [] and a.held_out_speakers == {}
    assert a.unsplit_languages == ["en", "es"]
    assert split_clips(clips, 0.0, 7).group == []
