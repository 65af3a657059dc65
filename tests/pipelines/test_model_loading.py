"""Loading: model specs, the CT2 converter (vs ctranslate2's own converter), tokenizer, generation config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.model import bundled, ct2
from pipelines.model.loader import ModelLoadError, load_whisper


@pytest.fixture(scope="module")
def tiny():
    from tests.fixtures.tiny_whisper import tiny_whisper

    return tiny_whisper(seed=3)


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-hf")
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    return folder


def test_tiny_is_deterministic() -> None:
    from tests.fixtures.tiny_whisper import tiny_whisper

    a, b = tiny_whisper(seed=5), tiny_whisper(seed=5)
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bundled:whisper-huge", "the only bundled model is bundled:whisper-base"),
        ("/no/such/folder", "is not a folder"),
        ("./relative/missing", "is not a folder"),
    ],
)
def test_unknown_specs(spec: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_whisper(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_devices() -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_whisper(device="cuda")
    with pytest.raises(ModelLoadError, match="unknown device 'gpu'"):
        load_whisper(device="gpu")


def test_a_file_is_not_a_model(tmp_path: Path) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is not a folder"):
        load_whisper(str(file))


def test_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="as a folder"):
        load_whisper(str(tmp_path))


def test_loads_a_local_folder_offline(tiny, tiny_folder, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load_whisper(str(tiny_folder), device="cpu")
    assert bundle.name == str(tiny_folder) and bundle.device.type == "cpu"
    assert not bundle.model.training and bundle.n_layers == 2
    assert bundle.model.generation_config.alignment_heads == [[1, 0], [1, 1]]
    for key, value in tiny.model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value), key


def test_ct2_reader_inverts_ctranslate2_converter(tiny, tiny_folder, tmp_path) -> None:
    """ctranslate2's TransformersConverter writes a model.bin; our reader + mapping must undo it exactly."""
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(tiny_folder)).convert(str(tmp_path / "ct2"), force=True)
    parsed = ct2.read_ct2((tmp_path / "ct2" / "model.bin").read_bytes())
    assert parsed.spec == "WhisperSpec"
    config = ct2.whisper_config(parsed)
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "vocab_size"):
        assert getattr(config, key) == getattr(tiny.model.config, key), key
    state = ct2.hf_state_dict(parsed, config)
    reference = tiny.model.state_dict()
    assert set(state) == set(reference)
    for key, value in state.items():
        assert torch.equal(value, reference[key]), key


def test_ct2_reader_rejects_other_formats() -> None:
    with pytest.raises(ct2.CT2FormatError, match="format version"):
        ct2.read_ct2(b"\x05\x00\x00\x00" + b"\x00" * 16)


def test_tokenizer_specials_and_timestamps() -> None:
    tokenizer = bundled.build_tokenizer()
    assert len(tokenizer) == 51865
    ids = tokenizer.convert_tokens_to_ids(["<|en|>", "<|transcribe|>", "<|notimestamps|>", "<|0.00|>"])
    assert ids == [50259, 50359, 50363, bundled.TIMESTAMP_BEGIN]
    text_ids = tokenizer(" Hello world", add_special_tokens=False).input_ids
    assert (
        tokenizer.decode([50258, 50259, 50359, *text_ids, 50257], skip_special_tokens=True) == " Hello world"
    )
    decoded = tokenizer.decode(
        [50258, 50259, 50359, 50364, *text_ids, 50414, 50257],
        output_offsets=True,
        decode_with_timestamps=True,
    )
    assert decoded["offsets"] == [{"text": " Hello world", "timestamp": (0.0, 1.0)}]  # no 2.12 s shift


def test_generation_config() -> None:
    tokenizer = bundled.build_tokenizer()
    config = bundled.build_generation_config(tokenizer)
    assert len(config.lang_to_id) == 99 and config.lang_to_id["<|en|>"] == 50259
    assert config.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert (config.no_timestamps_token_id, config.prev_sot_token_id, config.decoder_start_token_id) == (
        50363,
        50361,
        50258,
    )
    assert config.begin_suppress_tokens == [220, 50257] and len(config.suppress_tokens) == 88
    assert len(config.alignment_heads) == 8 and config.alignment_heads[:2] == [[3, 1], [4, 2]]
    assert config.is_multilingual
