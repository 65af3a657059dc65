"""SAELens folder format: round trip, cfg.json keys, and SAELens itself loading our folders."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.errors import MissingStageError
from pipelines.sae import load_sae, save_sae
from pipelines.sae.saelens import SAEFormatError, hook_name_for
from tests.pipelines.test_sae_arch import ARCHS, make_sae

METADATA = {"model_name": "bundled:whisper-base", "hook_name": "encoder.layer_norm", "layer": 6}


def saved(arch: str, folder: Path):
    sae = make_sae(arch).eval()
    if arch == "batchtopk":
        sae.threshold.fill_(0.25)
    save_sae(sae, folder, METADATA)
    return sae


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_gives_identical_outputs(tmp_path: Path, arch: str) -> None:
    sae = saved(arch, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg and not loaded.training
    x_BD = torch.randn(16, 16) * 5
    assert torch.equal(loaded.encode(x_BD), sae.encode(x_BD))
    assert torch.equal(loaded(x_BD).x_hat_BD, sae(x_BD).x_hat_BD)


@pytest.mark.parametrize(
    ("arch", "saelens_arch"), [("topk", "topk"), ("batchtopk", "jumprelu"), ("relu", "standard")]
)
def test_cfg_json_and_weights_follow_saelens(tmp_path: Path, arch: str, saelens_arch: str) -> None:
    saved(arch, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == saelens_arch
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["device"]) == (16, 64, "float32", "cpu")
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none" and cfg["reshape_activations"] == "none"
    if saelens_arch == "topk":
        assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False
    meta = cfg["metadata"]
    assert meta["model_name"] == "bundled:whisper-base" and meta["hook_name"] == "encoder.layer_norm"
    assert meta["context_size"] == 1500 and meta["sae_lens_version"].startswith("6.")
    assert meta["whisper_atlas_sae"]["arch"] == arch
    shapes = {
        name: tuple(t.shape) for name, t in load_file(str(tmp_path / "sae_weights.safetensors")).items()
    }
    expected = {"W_enc": (16, 64), "b_enc": (64,), "W_dec": (64, 16), "b_dec": (16,)}
    assert shapes == ({**expected, "threshold": (64,)} if arch == "batchtopk" else expected)


def test_foreign_saelens_folder_with_rescaled_decoder_loads_equivalently(tmp_path: Path) -> None:
    """A SAELens-style topk folder without our metadata, apply_b_dec_to_input false, unnormalised decoder."""
    sae = make_sae("topk").eval()
    norms_F = torch.rand(64) + 0.5
    state = {
        "W_enc": (sae.W_enc.detach() / norms_F).contiguous(),
        "b_enc": (sae.b_enc.detach() - sae.b_dec.detach() @ sae.W_enc.detach()) / norms_F,
        "W_dec": sae.W_dec.detach() * norms_F[:, None],
        "b_dec": sae.b_dec.detach(),
    }
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "sae_weights.safetensors"))
    cfg = {"architecture": "topk", "d_in": 16, "d_sae": 64, "k": 4, "apply_b_dec_to_input": False}
    cfg |= {"rescale_acts_by_decoder_norm": True, "normalize_activations": "none", "metadata": {}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_sae(tmp_path)
    x_BD = torch.randn(8, 16) * 5
    assert torch.allclose(loaded(x_BD).x_hat_BD, sae(x_BD).x_hat_BD, atol=1e-4)


def test_bad_folders_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingStageError, match="whisper-atlas train"):
        load_sae(tmp_path / "missing")
    saved("topk", tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(SAEFormatError):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(SAEFormatError, match="gated"):
        load_sae(tmp_path)


def test_hook_names() -> None:
    assert hook_name_for(6, 6) == "encoder.layer_norm"
    assert hook_name_for(4, 6) == "encoder.layers.3"
    assert hook_name_for(0, 6) == "encoder.layers.0.input"


SAELENS_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from sae_lens import SAE
    x = torch.from_numpy(np.load(sys.argv[1]))
    for folder in sys.argv[2:]:
        sae = SAE.load_from_disk(folder)
        with torch.no_grad():
            z = sae.encode(x)
            np.save(folder + "/z.npy", z.numpy())
            np.save(folder + "/x_hat.npy", sae.decode(z).numpy())
        print(type(sae).__name__)
    """
)
SAELENS_CLASSES = {"topk": "TopKSAE", "batchtopk": "JumpReLUSAE", "relu": "StandardSAE"}


def test_saelens_loads_our_folders_with_the_same_outputs(tmp_path: Path) -> None:
    """sae-lens' own `SAE.load_from_disk` (a dev dependency, imported in a child process because importing
    it takes seconds) reads each folder and agrees with us."""
    saes = {arch: saved(arch, tmp_path / arch) for arch in ARCHS}
    x_BD = (torch.randn(16, 16) * 5).numpy()
    np.save(tmp_path / "x.npy", x_BD)
    folders = [str(tmp_path / arch) for arch in ARCHS]
    done = subprocess.run(
        [sys.executable, "-c", SAELENS_SCRIPT, str(tmp_path / "x.npy"), *folders],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [SAELENS_CLASSES[arch] for arch in ARCHS]
    for arch, sae in saes.items():
        with torch.no_grad():
            out = sae(torch.from_numpy(x_BD))
        np.testing.assert_allclose(np.load(tmp_path / arch / "z.npy"), out.latents_BF.numpy(), atol=1e-5)
        np.testing.assert_allclose(np.load(tmp_path / arch / "x_hat.npy"), out.x_hat_BD.numpy(), atol=1e-5)
