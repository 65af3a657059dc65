"""Corpus builders on small real inputs: Asterisk (core and second voices) and Fish Fillets parsers,
selection, synthesis, licences, the summary, and unpacking a real (hand-made) Debian package."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.audio import SAMPLE_RATE
from pipelines.corpus import asterisk, asterisk_voices, fillets, synth
from pipelines.corpus.candidate import Candidate, language_code, parallel, shuffled, slug, spread
from pipelines.corpus.debian import PackageUnavailableError, debs_dir, ensure_packages
from pipelines.corpus.manifest import Clip
from pipelines.corpus.notice import licence_for, notice_text, parse_dep5
from pipelines.corpus.summary import summarize
from pipelines.errors import AtlasError, AudioDecodeError
from tests.fixtures.audio import encode, tone

CORE_SOUNDS = """\ufeff; Core Asterisk Sounds in English
; a comment: with a colon

vm-goodbye: Goodbye.
agent-pass:   Please enter your   password followed by the pound key.
beep: [this is a simple beep tone]
vm-tempgreetactive: Sus saludos [temporales] estan actualmente en uso
digits/1: one
letters/a: a
silence/1: [1 second of silence]
empty:
followme/options: Press 1 to accept.
"""

DIALOGS = r"""
-- Intro dialogs
dialogId("vit-hs-vitejteA", "font_statue", "Welcome to the most beautiful city under the sun.")
dialogStr("Vítejte v nejkrásnějším městě pod sluncem.")

dialogId("war-v-pohadka", "font_big", "We meet in the C:\\WINDOWS\\CONFIG directory.")
dialogStr("We gaan naar \/etc om te kletsen, zei hij: \"Echt waar?\"")

dialogId("m-restartuj", "font_small", "Restart it, right now!")
dialogStr(
"Restartuj to.\nHned teď!")

dialogId("text0", "font_white",  "mplayer kufrik.ogg")

dialogId("z-o-blahoprejeme", "font_both", "CONGRATULATIONS!!!")
dialogStr("GRATULUJEME!!!")
"""


def test_core_sounds_parser_keeps_spoken_prompts_only() -> None:
    prompts = asterisk.parse_core_sounds(CORE_SOUNDS)
    assert prompts == {
        "vm-goodbye": "Goodbye.",
        "agent-pass": "Please enter your password followed by the pound key.",
        "followme/options": "Press 1 to accept.",
    }


def test_lua_dialog_parser_undoes_escapes() -> None:
    dialogs = fillets.parse_dialogs(DIALOGS)
    assert set(dialogs) == {"vit-hs-vitejteA", "war-v-pohadka", "m-restartuj", "text0", "z-o-blahoprejeme"}
    assert dialogs["vit-hs-vitejteA"].text == "Vítejte v nejkrásnějším městě pod sluncem."
    assert dialogs["vit-hs-vitejteA"].font == "font_statue"
    assert dialogs["war-v-pohadka"].text == 'We gaan naar /etc om te kletsen, zei hij: "Echt waar?"'
    assert dialogs["war-v-pohadka"].english == r"We meet in the C:\WINDOWS\CONFIG directory."
    assert dialogs["m-restartuj"].text == "Restartuj to. Hned teď!"
    assert dialogs["text0"].text == "mplayer kufrik.ogg"  # no translation: the English original


@pytest.mark.parametrize(
    "parts",
    [("asterisk", "en", "followme/options"), ("user", "../../etc/passwd"), ("user", "a b\n<script>?;&é")],
)
def test_slug_is_url_safe(parts: tuple[str, ...]) -> None:
    assert re.fullmatch(r"[A-Za-z0-9._-]+", slug(*parts))
    assert ".." not in slug(*parts).split("-")


def test_slug_keeps_distinct_names_distinct() -> None:
    assert slug("user", "Café crème") == "user-Cafe-creme"
    assert slug("user", "Привет") != slug("user", "Пока")
    assert re.fullmatch(r"user-[0-9a-f]{10}", slug("user", "Привет"))


def test_language_codes_from_dataset_tags() -> None:
    assert [language_code(t) for t in ("pt-BR", "en_us", "EN", "cmn_hans_cn", "fil_ph", "nl")] == [
        "pt",
        "en",
        "en",
        "zh",
        "tl",
        "nl",
    ]


def test_selection_is_seeded_and_smaller_sizes_are_prefixes() -> None:
    items = [f"{kind}-{i}" for kind in "abc" for i in range(5)]
    kind = lambda s: s[0]  # noqa: E731
    ident = lambda s: s  # noqa: E731
    assert shuffled(items, "0:x", ident) == shuffled(list(reversed(items)), "0:x", ident)
    assert shuffled(items, "0:x", ident) != shuffled(items, "1:x", ident)
    big = spread(items, 9, "0:x", ident, kind)
    assert spread(items, 4, "0:x", ident, kind) == big[:4]
    assert sorted(kind(s) for s in big[:3]) == ["a", "b", "c"]  # round-robin over groups
    assert sorted(spread(items, None, "0:x", ident, kind)) == sorted(items)


def test_parallel_groups_need_every_language(tmp_path: Path) -> None:
    def clip(lang: str, group: str, seconds: float):
        return Candidate(
            f"{lang}-{group}", lambda: np.zeros(1), seconds, "speech", "s", "", lang, group=group
        )

    by_language = {
        "en": [clip("en", "g1", 2.0), clip("en", "g2", 2.0), clip("en", "g3", 1.0)],
        "fr": [clip("fr", "g1", 2.5), clip("fr", "g3", 2.0)],
    }
    groups = parallel(by_language, min_seconds=1.5)
    assert [[c.id for c in g] for g in groups] == [["en-g1", "fr-g1"]]


def test_synthesized_clips_are_deterministic_and_sane() -> None:
    for category, recipes in synth.RECIPES.items():
        for candidate in synth.candidates(category, 1, seed=3):
            audio = candidate.load()
            assert audio.dtype == np.float32
            assert audio.size == round(candidate.seconds * SAMPLE_RATE)
            assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
            np.testing.assert_array_equal(audio, candidate.load())
            if candidate.extra["recipe"] == "digital":
                assert not audio.any()
            elif category != "silence":
                assert np.abs(audio).max() > 0.05
    assert synth.candidates("tones", 2, seed=0)[0].seconds != synth.candidates("tones", 2, seed=1)[0].seconds


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright:
        2004-2018 Andrey Korotaev
	2004-2015 Hedgewars Project
License: GPL-2

Files: share/hedgewars/Data/Sounds/*
Copyright: 2004, 2005, 2006 Andrey Korotaev
License: GFDL-1.3

Files: share/hedgewars/Data/Sounds/Droplet*.ogg
       other/thing.ogg
Copyright: saugox (found on freesound.org)
License: CC-BY-SA-3.0
 The full text follows.
"""


def test_dep5_last_matching_stanza_wins() -> None:
    stanzas = parse_dep5(DEP5)
    assert [s.licence for s in stanzas] == ["GPL-2", "GFDL-1.3", "CC-BY-SA-3.0"]
    assert licence_for(stanzas, "share/hedgewars/Data/Sounds/voices/Pirate/Laugh.ogg").licence == "GFDL-1.3"
    assert licence_for(stanzas, "share/hedgewars/Data/Sounds/Droplet2.ogg").copyright.startswith("saugox")
    assert licence_for(stanzas, "other/thing.ogg").licence == "CC-BY-SA-3.0"
    assert licence_for(stanzas, "share/hedgewars/Data/Music/City.ogg").copyright == (
        "2004-2018 Andrey Korotaev 2004-2015 Hedgewars Project"
    )
    assert licence_for(parse_dep5("Files: a/*\nLicense: MIT\n"), "b/c") is None


def test_notice_lists_every_source_with_its_licence() -> None:
    clips = [
        Clip("a", "audio/a.flac", 60.0, source="asterisk-core-sounds-it", licence="CC-BY-3.0"),
        Clip(
            "b",
            "audio/b.flac",
            30.0,
            "music",
            source="hedgewars-data",
            licence="GPL-2",
            extra={"copyright": "X"},
        ),
        Clip("c", "audio/c.flac", 3.0, source="folder-mine"),
    ]
    text = notice_text("demo", clips, ["asterisk-core-sounds-it-g722.copyright"])
    assert "asterisk-core-sounds-it: 1 clips, 1.0 min" in text
    assert "Licence: CC-BY-3.0" in text and "licences/asterisk-core-sounds-it-g722.copyright" in text
    assert "Copyright: X" in text
    assert "folder-mine" in text and "unknown (as supplied)" in text


def _asterisk_tree(root: Path, language: str, prompts: dict[str, float]) -> dict[str, Path]:
    """A miniature of the two Asterisk packages of one language: transcripts, G.722 prompts, copyright."""
    text_pkg, audio_pkg = (
        root / f"asterisk-core-sounds-{language}",
        root / f"asterisk-core-sounds-{language}-g722",
    )
    doc = text_pkg / f"usr/share/doc/asterisk-core-sounds-{language}"
    doc.mkdir(parents=True)
    lines = [f"{name}: Sentence {name} in {language}." for name in prompts] + ["beep: [beep]"]
    (doc / f"core-sounds-{language}.txt.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    voice = audio_pkg / f"usr/share/asterisk/sounds/{language}_XX_f_Voice"
    voice.mkdir(parents=True)
    for name, seconds in prompts.items():
        (voice / name).parent.mkdir(parents=True, exist_ok=True)
        (voice / f"{name}.g722").write_bytes(b"\x00" * int(seconds * asterisk.G722_BYTES_PER_SECOND))
    copyright_dir = audio_pkg / f"usr/share/doc/asterisk-core-sounds-{language}-g722"
    copyright_dir.mkdir(parents=True)
    (copyright_dir / "copyright").write_text(DEP5_ASTERISK)
    return {text_pkg.name: text_pkg, audio_pkg.name: audio_pkg}


DEP5_ASTERISK = """Files: *
Copyright: 2003-2010, Allison Smith
License: CC-BY-SA-3.0

Files: ru-*
Copyright: 2010, Maxim
License: CC-BY-3.0
"""


def test_asterisk_prompts_from_a_package_tree(tmp_path: Path) -> None:
    folders = _asterisk_tree(tmp_path, "en", {"vm-goodbye": 1.0, "long": 31.0, "vm-intro": 2.0})
    folders |= _asterisk_tree(tmp_path, "ru", {"vm-goodbye": 2.0, "vm-intro": 3.0})
    en, ru = asterisk.prompts(folders, "en"), asterisk.prompts(folders, "ru")
    assert sorted(c.id for c in en) == ["asterisk-en-vm-goodbye", "asterisk-en-vm-intro"]  # > 30 s dropped
    assert {c.licence for c in en} == {"CC-BY-SA-3.0"} and {c.licence for c in ru} == {"CC-BY-3.0"}
    intro = next(c for c in ru if c.group == "asterisk-vm-intro")
    assert (intro.transcript, intro.seconds, intro.speaker) == (
        "Sentence vm-intro in ru.",
        3.0,
        "asterisk-voice",
    )
    groups = parallel({"en": en, "ru": ru}, min_seconds=1.5)
    assert [[c.id for c in g] for g in groups] == [["asterisk-en-vm-intro", "asterisk-ru-vm-intro"]]


def _voice_package(root: Path, voice: asterisk_voices.Voice, prompts: dict[str, float]) -> dict[str, Path]:
    """A miniature second-voice package: raw GSM prompts (silent frames) under the voice's folder."""
    package = root / voice.package
    sounds = package / "usr/share/asterisk/sounds" / voice.folder
    for name, seconds in prompts.items():
        (sounds / name).parent.mkdir(parents=True, exist_ok=True)
        frames = int(seconds * asterisk_voices.GSM_BYTES_PER_SECOND) // asterisk_voices.GSM_FRAME_BYTES
        (sounds / f"{name}{voice.suffix}").write_bytes(bytes(frames * asterisk_voices.GSM_FRAME_BYTES))
    doc = package / "usr/share/doc" / voice.package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(f"Upstream Author: {voice.holder}\n", encoding="utf-8")
    return {voice.package: package}


def _gsm_voice(reads_core_text: bool) -> asterisk_voices.Voice:
    return asterisk_voices.Voice(
        "asterisk-prompt-es-test", "es", "es", ".gsm", "tester", reads_core_text, "GPL-2", "2006, X", "X Ltd."
    )


@pytest.mark.parametrize("reads_core_text", [False, True])
def test_second_voice_joins_core_groups_by_prompt_name(tmp_path: Path, reads_core_text: bool) -> None:
    voice = _gsm_voice(reads_core_text)
    folders = _asterisk_tree(tmp_path, "es", {"vm-goodbye": 2.0, "followme/options": 3.0, "vm-intro": 2.0})
    folders |= _voice_package(
        tmp_path,
        voice,
        # core names (one too short, one in a subfolder), then names without core text: skipped
        {"vm-goodbye": 2.0, "followme/options": 2.5, "vm-intro": 1.0, "digits/1": 1.6, "beep": 1.6, "own": 2},
    )
    found = asterisk_voices.prompts(folders, voice, min_seconds=1.5)
    assert [c.id for c in found] == ["asterisk-es-tester-followme-options", "asterisk-es-tester-vm-goodbye"]
    core = {c.extra["prompt"]: c for c in asterisk.prompts(folders, "es")}
    for clip in found:
        twin = core[clip.extra["prompt"]]
        assert clip.group == twin.group and clip.language == "es" and clip.source == voice.package
        assert clip.speaker == "asterisk-tester" != twin.speaker
        assert clip.transcript == (twin.transcript if reads_core_text else "")
        assert (clip.licence, clip.extra["copyright"]) == ("GPL-2", "2006, X")
    audio = found[0].load()  # 8 kHz GSM, upsampled
    assert audio.dtype == np.float32 and abs(audio.size / SAMPLE_RATE - found[0].seconds) < 0.01


def test_second_voice_rights_are_checked_against_its_copyright_file(tmp_path: Path) -> None:
    voice = _gsm_voice(False)
    folders = _asterisk_tree(tmp_path, "es", {"vm-goodbye": 2.0}) | _voice_package(tmp_path, voice, {})
    (folders[voice.package] / "usr/share/doc" / voice.package / "copyright").write_text("Someone else\n")
    with pytest.raises(AtlasError, match="no longer names X Ltd."):
        asterisk_voices.prompts(folders, voice)


def test_gsm_without_a_whole_frame_is_a_decode_error(tmp_path: Path) -> None:
    (tmp_path / "short.gsm").write_bytes(b"\xd0" * 20)
    with pytest.raises(AudioDecodeError, match="no whole GSM frame"):
        asterisk_voices.decode_gsm(tmp_path / "short.gsm")


def test_summary_counts_speakers_per_language() -> None:
    clips = [
        Clip("a", "a.flac", 2.0, language="en", speaker="asterisk-allison"),
        Clip("b", "b.flac", 2.0, language="es", speaker="asterisk-allison"),
        Clip("c", "c.flac", 2.0, language="es", speaker="asterisk-july"),
        Clip("d", "d.flac", 2.0, language="es"),
        Clip("e", "e.flac", 5.0, "music"),
    ]
    summary = summarize("demo", Path("/nonexistent"), clips)
    assert {k: len(t.speakers) for k, t in summary.by_language.items()} == {"en": 1, "es": 2}
    assert summary.by_language["es"].clips == 3 and len(summary.total.speakers) == 2


def test_fillets_lines_decode_stereo_odd_rate_voices(tmp_path: Path) -> None:
    game = tmp_path / "fillets-ng-data" / fillets.GAME
    (game / "script/city").mkdir(parents=True)
    (game / "script/city/dialogs_nl.lua").write_text(DIALOGS, encoding="utf-8")
    voices = tmp_path / "fillets-ng-data-nl" / fillets.GAME / "sound/city/nl"
    voices.mkdir(parents=True)
    encode(voices.parent / "nl" / "war-v-pohadka.ogg", tone(1.2, 22050), 22050, channels=2)
    encode(voices.parent / "nl" / "z-o-blahoprejeme.ogg", tone(1.2, 22050), 22050)  # both fish: no speaker
    folders = {
        "fillets-ng-data": tmp_path / "fillets-ng-data",
        "fillets-ng-data-nl": tmp_path / "fillets-ng-data-nl",
    }
    [line] = fillets.lines(folders, "nl")
    assert line.id == "fillets-nl-city-war-v-pohadka"
    assert line.speaker == "fillets-nl-big" and line.group == "fillets-city-war-v-pohadka"
    assert line.extra["english"].startswith("We meet in")
    audio = line.load()
    assert abs(audio.size / SAMPLE_RATE - 1.2) < 0.1 and np.abs(audio).max() < 0.6


def _deb(path: Path, files: dict[str, bytes]) -> Path:
    """A real Debian package (ar archive: debian-binary, control.tar.xz, data.tar.xz) holding `files`."""

    def tar_xz(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo("./usr/share/doc/escape")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
        return buffer.getvalue()

    members = {
        "debian-binary": b"2.0\n",
        "control.tar.xz": tar_xz({"control": b"Package: test\n"}),
        "data.tar.xz": tar_xz(files),
    }
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members.items():
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode())
        out.write(data + (b"\n" if len(data) % 2 else b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return path


def test_debs_are_unpacked_once_from_the_downloads_folder(data_root: Path, tmp_path: Path) -> None:
    deb = _deb(
        debs_dir() / "_downloads" / "sounds-test_1.0_all.deb",
        {"usr/share/sounds/a.txt": b"hello", "usr/share/other/b.txt": b"skip me"},
    )
    folders = ensure_packages(["sounds-test"], {"sounds-test": ["usr/share/sounds/"]})
    root = folders["sounds-test"]
    assert (root / "usr/share/sounds/a.txt").read_bytes() == b"hello"
    assert not (root / "usr/share/other").exists() and not (root / "usr/share/doc/escape").exists()
    assert not deb.exists()  # the .deb is removed once unpacked
    assert ensure_packages(["sounds-test"]) == folders  # reused, nothing to download


def test_missing_apt_get_says_what_to_do(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(data_root))  # no apt-get on this PATH
    with pytest.raises(PackageUnavailableError, match="apt-get is not available.*_downloads"):
        ensure_packages(["asterisk-core-sounds-en"])


def test_a_broken_deb_is_reported(data_root: Path) -> None:
    (debs_dir() / "_downloads").mkdir(parents=True)
    (debs_dir() / "_downloads" / "broken_1.0_all.deb").write_bytes(b"not an archive")
    with pytest.raises(PackageUnavailableError, match="not a Debian package"):
        ensure_packages(["broken"])
    assert not (debs_dir() / "broken").exists()
