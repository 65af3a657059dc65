"""SAE architectures: shapes, sparsity, the sparse training path, decoder constraints and folding."""

from __future__ import annotations

import pytest
import torch

from pipelines.errors import AtlasError
from pipelines.sae import SAEConfig, TrainConfig, build_sae
from pipelines.sae.geometric_median import geometric_median
from tests.fixtures.sae_data import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["topk", "batchtopk", "relu"]


def make_sae(arch: str, d_in: int = 16, d_sae: int = 64, k: int = 4, seed: int = 0, dtype=torch.float32):
    sae = build_sae(SAEConfig(d_in=d_in, d_sae=d_sae, arch=arch, k=k)).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    sae.reset_parameters(gen)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d_in, generator=gen))
        sae.b_enc.copy_(torch.rand(d_sae, generator=gen) * 0.2)
    return sae


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_nonnegative_latents(arch: str) -> None:
    sae = make_sae(arch).eval()
    x_BD = torch.randn(10, 16, generator=torch.Generator().manual_seed(1))
    out = sae(x_BD)
    assert out.x_hat_BD.shape == (10, 16) and out.latents_BF.shape == (10, 64)
    assert (out.latents_BF >= 0).all()
    # forward() decodes sparsely, decode() densely: equal up to float32 summation order
    torch.testing.assert_close(out.x_hat_BD, sae.decode(sae.encode(x_BD)), rtol=1e-5, atol=1e-6)
    assert (sae.d_in, sae.d_sae) == (16, 64)


def test_topk_l0_equals_k() -> None:
    sae = make_sae("topk").eval()
    with torch.no_grad():
        sae.b_enc.fill_(5.0)  # every pre-activation positive, so exactly k survive
    latents_BF = sae.encode(torch.randn(20, 16))
    assert ((latents_BF > 0).sum(-1) == 4).all()


def test_batchtopk_keeps_k_per_frame_on_average_and_learns_a_threshold() -> None:
    sae = make_sae("batchtopk").train()
    with torch.no_grad():
        sae.b_enc.fill_(5.0)
    x_BD = torch.randn(20, 16)
    out = sae.training_step(x_BD, None, 8, 0.0)
    assert out.n_active == 20 * 4
    assert float(sae.threshold[0]) > 0 and bool((sae.threshold == sae.threshold[0]).all())
    sae.eval()
    pre_BF = sae.pre_activations(x_BD)
    assert torch.equal(sae.encode(x_BD) > 0, pre_BF > sae.threshold)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_training_step_matches_dense_autograd(arch: str) -> None:
    """The sparse path (embedding_bag decode, sparse encoder gradient) against plain dense autograd."""
    torch.manual_seed(0)
    sae = make_sae(arch, dtype=torch.float64).train()
    x_BD = torch.randn(8, 16, dtype=torch.float64) * 3
    dead_F = torch.zeros(64, dtype=torch.bool)
    dead_F[::3] = True
    k_aux, coeff = 8, 1 / 32
    out = sae.training_step(x_BD, dead_F, k_aux, coeff)
    out.loss.backward()
    sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()

    pre_BF = (x_BD - sae.b_dec) @ sae.W_enc + sae.b_enc
    if arch == "topk":
        values, indices = pre_BF.topk(4, dim=-1)
        latents_BF = torch.zeros_like(pre_BF).scatter(-1, indices, values.relu())
    else:
        values, indices = pre_BF.flatten().topk(8 * 4)
        latents_BF = torch.zeros_like(pre_BF).flatten().scatter(-1, indices, values.relu()).view_as(pre_BF)
    err_BD = latents_BF @ sae.W_dec + sae.b_dec - x_BD
    dead_idx = dead_F.nonzero().squeeze(1)
    aux_values, aux_which = pre_BF[:, dead_idx].topk(k_aux, dim=-1)
    aux_BF = torch.zeros_like(pre_BF).scatter(-1, dead_idx[aux_which], aux_values.relu())
    aux = min(len(dead_idx) / k_aux, 1.0) * (aux_BF @ sae.W_dec + err_BD.detach()).pow(2).sum(-1).mean()
    loss = err_BD.pow(2).sum(-1).mean() + coeff * aux
    loss.backward()
    assert torch.allclose(out.loss, loss)
    for name, p in sae.named_parameters():
        assert torch.allclose(sparse_grads[name], p.grad, atol=1e-10), name


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_rows_stay_unit_norm_and_parallel_gradient_is_removed(arch: str) -> None:
    sae = make_sae(arch).train()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(5):
        out = sae.training_step(torch.randn(32, 16) * 3, None, 8, 0.0)
        opt.zero_grad()
        out.loss.backward()
        sae.remove_parallel_grad()
        grad_FD = sae.W_dec.grad
        parallel_F = (grad_FD * sae.W_dec).sum(-1)
        assert (parallel_F.abs() <= 1e-5 * grad_FD.norm(dim=-1) + 1e-7).all()
        opt.step()
        sae.normalise_decoder()
        assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_folded_normalisation_equals_unfolded(arch: str) -> None:
    """An SAE run on scale * x and mapped back equals the folded SAE run on raw x."""
    sae = make_sae(arch).eval()
    if arch == "batchtopk":
        sae.threshold.fill_(0.3)
    scale = 0.37
    x_BD = torch.randn(12, 16) * 20
    unfolded = sae(scale * x_BD)
    folded_sae = make_sae(arch).eval()
    folded_sae.load_state_dict(sae.state_dict())
    folded_sae.fold_input_scale(scale)
    folded = folded_sae(x_BD)
    assert torch.allclose(folded.x_hat_BD, unfolded.x_hat_BD / scale, atol=1e-4)
    assert torch.allclose(folded.latents_BF, unfolded.latents_BF / scale, atol=1e-5)
    assert torch.allclose(folded_sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-6)


def test_geometric_median_is_robust_to_outliers() -> None:
    points = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1000.0, 1000.0]])
    median = geometric_median(points)
    assert median.norm() < 1.0 < points.mean(0).norm()
    square = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert geometric_median(square).abs().max() < 1e-5


def test_bad_configs_raise_one_line_atlas_errors() -> None:
    bad = [
        lambda: SAEConfig(d_in=8, arch="gated"),  # type: ignore[arg-type]
        lambda: SAEConfig(d_in=8, d_sae=16, k=17),
        lambda: SAEConfig(d_in=0),
        lambda: TrainConfig(epochs=0),
        lambda: TrainConfig(heldout_fraction=1.0),
        lambda: TrainConfig(lr=-1.0),
    ]
    for make in bad:
        with pytest.raises(AtlasError) as info:
            make()
        assert "\n" not in str(info.value)
