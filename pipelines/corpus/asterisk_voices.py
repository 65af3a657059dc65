"""Second Asterisk voices: older prompt sets for es (Colombia), fr and it, each recorded by another speaker.

Why: they give es, fr and it a second speaker saying the core prompts, so a split can hold a speaker out while
the prompt and language stay. The packages ship no transcripts, but their files carry the core prompt names
(`vm-goodbye`): a prompt whose name has a core text in its language joins the core prompt's parallel group;
the rest (digits, letters, tones, names the core set lacks) are skipped. Only the Italian voice reads the core
text, so only it takes that text as transcript: on 12 random prompts Whisper base scored a median CER of 0.07
against the core text (0.02 for the core voice), but 0.51 (es) and 0.72 (fr) for the other two, which read
translations of their own (same meaning, other words) and so stay untranscribed. The audio is 8 kHz (raw
GSM 06.10 or WAV) and is upsampled to 16 kHz when decoded.
Two of the three copyright files predate the machine-readable format, so each voice's licence and holders
are written here as read from its copyright file, and listing checks that the file still names the holder.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import av
import numpy as np

from pipelines.audio import decode_audio, probe_seconds
from pipelines.corpus import asterisk
from pipelines.corpus.candidate import Candidate, slug
from pipelines.corpus.manifest import SPEECH
from pipelines.errors import AtlasError, AudioDecodeError

GSM_RATE = 8000
GSM_FRAME_BYTES = 33
"""A GSM 06.10 frame codes 20 ms (160 samples at 8 kHz) in 33 bytes, so a raw file's length follows."""
GSM_BYTES_PER_SECOND = GSM_FRAME_BYTES * 50


@dataclass(frozen=True)
class Voice:
    """One prompt package: where its files are and whose voice and rights they are."""

    package: str
    language: str
    folder: str
    """Folder of the prompts under `usr/share/asterisk/sounds/`."""
    suffix: str
    """`.gsm` (raw GSM 06.10) or `.wav`."""
    name: str
    """Short name of the voice (or of its folder); the speaker id is `asterisk-<name>`."""
    reads_core_text: bool
    """Whether the voice says the core text of its prompts (then that text is the transcript)."""
    licence: str
    copyright: str
    holder: str
    """A name the package's copyright file must contain (guards the licence written here)."""

    @property
    def speaker(self) -> str:
        return slug("asterisk", self.name)


VOICES = (
    Voice(
        "asterisk-prompt-es-co",
        "es",
        "es",
        ".gsm",
        "july",
        False,
        "GPL-2",
        "2006, Avatar Ltda. (voice: July E. Jiménez)",
        "Avatar Ltda.",
    ),
    Voice(
        "asterisk-prompt-fr-armelle",
        "fr",
        "fr",
        ".gsm",
        "armelle",
        False,
        "BSD-style (copyright notice kept, no endorsement)",
        "2006, Michel Gutierrez (voice: Armelle Desjardins)",
        "Michel Gutierrez",
    ),
    Voice(
        "asterisk-prompt-it-menardi-wav",
        "it",
        "it_IT_f_Menardi",
        ".wav",
        "menardi",
        True,
        "CC-BY-SA-3.0-IT",
        "2006-2011, Marco Menardi and Paola Dal Zot (the voice), http://www.voip.ammdomus.it",
        "Marco Menardi",
    ),
)


def packages() -> list[str]:
    return [voice.package for voice in VOICES]


def prompts(folders: dict[str, Path], voice: Voice, min_seconds: float = 0.0) -> list[Candidate]:
    """The voice's prompts whose name has a core text in its language and that last `min_seconds` to 30 s."""
    texts = asterisk.read_transcripts(folders[f"asterisk-core-sounds-{voice.language}"], voice.language)
    root = folders[voice.package]
    _check_rights(root / "usr/share/doc" / voice.package / "copyright", voice)
    sounds = root / "usr/share/asterisk/sounds" / voice.folder
    candidates = []
    for name, transcript in sorted(texts.items()):
        audio = sounds / f"{name}{voice.suffix}"
        if not audio.is_file():
            continue
        if voice.suffix == ".gsm":
            seconds, load = audio.stat().st_size / GSM_BYTES_PER_SECOND, partial(decode_gsm, audio)
        else:
            try:
                seconds, load = probe_seconds(audio), partial(decode_audio, audio)
            except AudioDecodeError:
                continue
        if 0 < seconds and min_seconds <= seconds <= asterisk.MAX_SECONDS:
            candidates.append(
                Candidate(
                    id=slug("asterisk", voice.language, voice.name, name),
                    load=load,
                    seconds=seconds,
                    category=SPEECH,
                    source=voice.package,
                    licence=voice.licence,
                    language=voice.language,
                    transcript=transcript if voice.reads_core_text else "",
                    group=slug("asterisk", name),
                    speaker=voice.speaker,
                    extra={"prompt": name, "voice": voice.name, "copyright": voice.copyright},
                )
            )
    return candidates


def decode_gsm(path: Path) -> np.ndarray:
    """A raw GSM 06.10 file as 16 kHz mono float32 (FFmpeg's codec, then the WAV path of `decode_audio`).

    The GSM demuxer is not among the formats `decode_audio` accepts from users, so the frames go to the codec
    directly and the 8 kHz PCM reaches the resampler as an in-memory WAV.
    """
    data = Path(path).read_bytes()
    usable = len(data) - len(data) % GSM_FRAME_BYTES
    if usable == 0:
        raise AudioDecodeError(f"{Path(path).name}: no whole GSM frame")
    codec = av.CodecContext.create("gsm", "r")
    codec.sample_rate = GSM_RATE
    try:
        pcm = [
            frame.to_ndarray().reshape(-1)
            for start in range(0, usable, GSM_FRAME_BYTES)
            for frame in codec.decode(av.Packet(data[start : start + GSM_FRAME_BYTES]))
        ]
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"{Path(path).name}: not GSM 06.10 audio ({exc})") from exc
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(GSM_RATE)
        out.writeframes(np.concatenate(pcm).astype("<i2").tobytes())
    return decode_audio(buffer.getvalue())


def _check_rights(copyright_file: Path, voice: Voice) -> None:
    package = copyright_file.parents[3]
    if not copyright_file.is_file():
        raise AtlasError(f"{voice.package} has no copyright file: delete {package} and rerun")
    if voice.holder not in copyright_file.read_text(encoding="utf-8", errors="replace"):
        raise AtlasError(
            f"the copyright file of {voice.package} no longer names {voice.holder}: check its licence"
        )
