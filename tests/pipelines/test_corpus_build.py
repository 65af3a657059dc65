"""Builds the `small` corpus for real from the Debian packages (downloaded once into data/cache/debs)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from pipelines.audio import SAMPLE_RATE, decode_audio
from pipelines.corpus.build import SIZES, build_corpus, build_info
from pipelines.corpus.folder import add_folder
from pipelines.corpus.manifest import NON_SPEECH_CATEGORIES, SPEECH, read_manifest
from pipelines.paths import corpus_dir
from tests.fixtures.audio import encode_tone

pytestmark = pytest.mark.integration


@pytest.fixture
def shared_cache(data_root: Path, repo_data_dir: Path) -> Path:
    """A temporary data root whose package cache is the real one, so packages are fetched only once."""
    cache = repo_data_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (data_root / "cache").symlink_to(cache, target_is_directory=True)
    return data_root


def test_small_corpus_composition(shared_cache: Path, tmp_path: Path) -> None:
    summary = build_corpus("small", "small")
    folder = corpus_dir("small")
    clips = read_manifest(folder)
    spec = SIZES["small"]
    assert summary.total.clips == len(clips) and not summary.skipped

    speech = [c for c in clips if c.category == SPEECH]
    core = [c for c in speech if c.source.startswith("asterisk-core-sounds")]
    assert Counter(c.language for c in core) == dict.fromkeys(
        ("en", "es", "fr", "it", "ru"), spec.parallel_groups
    )
    fillets_groups = Counter(c.group for c in speech if c.source.startswith("fillets"))
    assert Counter(fillets_groups.values()) == {2: spec.fillets_pairs, 1: spec.fillets_solos}
    assert all(c.speaker and c.licence and 1.5 <= c.duration <= 30 for c in speech)
    assert all(
        c.transcript
        for c in speech
        if c.source not in ("asterisk-prompt-es-co", "asterisk-prompt-fr-armelle")
    )

    # every second voice joins a core group (which spans all five languages): two speakers in es, fr, it
    core_groups = Counter(c.group for c in core)
    assert set(core_groups.values()) == {5}
    second = [c for c in speech if c.source.startswith("asterisk-prompt")]
    assert second and all(c.group in core_groups and c.language in ("es", "fr", "it") for c in second)
    speakers: dict[str, set[str]] = {}
    for clip in speech:
        speakers.setdefault(clip.language, set()).add(clip.speaker)
    assert len([lang for lang, found in speakers.items() if len(found) >= 2]) >= 3
    assert {lang for lang in ("es", "fr", "it") if len(speakers[lang]) == 2} == {"es", "fr", "it"}
    assert summary.by_language["it"].speakers == speakers["it"]
    nonspeech = Counter(c.category for c in clips if c.category != SPEECH)
    assert nonspeech == {k: n for k, n in spec.nonspeech.items() if n}
    assert set(nonspeech) <= set(NON_SPEECH_CATEGORIES)

    assert len({c.id for c in clips}) == len(clips)
    for clip in clips:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", clip.id) and clip.source and clip.licence
        audio = decode_audio(folder / clip.path)
        assert audio.size / SAMPLE_RATE == pytest.approx(clip.duration, abs=1e-3)
    notice = (folder / "NOTICE").read_text()
    assert all(c.source in notice for c in clips)
    assert (folder / "licences" / "asterisk-core-sounds-en-g722.copyright").is_file()
    assert (folder / "licences" / "asterisk-prompt-it-menardi-wav.copyright").is_file()
    assert build_info("small") == {"size": "small", "seed": 0, "builder": 2, "clips": len(clips)}

    # a user's clips survive a rebuild, and the rebuild selects exactly the same clips
    (tmp_path / "mine").mkdir()
    encode_tone(tmp_path / "mine" / "hello.wav", 1.0)
    add_folder(tmp_path / "mine", "small", workers=1)
    build_corpus("small", "small")
    rebuilt = read_manifest(folder)
    assert [c.id for c in rebuilt] == sorted([c.id for c in clips] + ["user-hello"])
    assert [c for c in rebuilt if c.id != "user-hello"] == clips
    assert not list(folder.parent.glob(".small.*"))
