import pytest
import torch

from codec.quantize import FactorizedQuantizer, ResidualQuantizer, SimVQ, VectorQuantizer

KINDS = ["simvq", "vq", "factorized-simvq"]


def make(kind, stages):
    def single(i):
        if kind == "factorized-simvq":
            return FactorizedQuantizer(8, 3, SimVQ(3, 32, seed=i))
        return (SimVQ if kind == "simvq" else VectorQuantizer)(8, 32, seed=i)
    layers = [single(i) for i in range(stages)]
    return ResidualQuantizer(layers) if stages > 1 else layers[0]


def test_simvq_gradient_reaches_w_and_b_never_c():
    torch.manual_seed(0)
    quantizer = SimVQ(8, 64)
    basis = quantizer.basis.clone()
    latents = torch.randn(2, 8, 10, requires_grad=True)
    out = quantizer(latents)
    (out.quantized.square().mean() + out.loss).backward()
    assert quantizer.projection.weight.grad is not None and quantizer.projection.weight.grad.abs().sum() > 0
    assert quantizer.projection.bias.grad is not None and quantizer.projection.bias.grad.abs().sum() > 0
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert not quantizer.basis.requires_grad and quantizer.basis.grad is None
    assert all(p is not quantizer.basis for p in quantizer.parameters())
    torch.optim.SGD(quantizer.parameters(), lr=1.0).step()
    assert torch.equal(quantizer.basis, basis)


def test_factorized_codes_train_projections_and_map_but_never_the_basis():
    torch.manual_seed(0)
    quantizer = make("factorized-simvq", 1).train()
    latents = torch.randn(2, 8, 10, requires_grad=True)
    out = quantizer(latents)
    (out.quantized.square().mean() + out.loss).backward()
    inner = quantizer.inner
    for parameter in (quantizer.project_in.weight, quantizer.project_out.weight, inner.projection.weight,
                      inner.projection.bias):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert inner.basis.grad is None and not inner.basis.requires_grad


def test_factorized_search_is_by_angle():
    """The nearest code is the one at the smallest angle, in the small space."""
    torch.manual_seed(0)
    quantizer = make("factorized-simvq", 1).eval()
    latents = torch.randn(1, 8, 20)
    small = quantizer.project_in(latents.transpose(1, 2)[0])
    codes = torch.nn.functional.normalize(quantizer.inner.vectors(torch.arange(32)), dim=1)
    expected = (torch.nn.functional.normalize(small, dim=1) @ codes.T).argmax(1)
    assert torch.equal(quantizer.encode(latents)[0, 0], expected)


def test_simvq_basis_is_fixed_by_seed():
    assert torch.equal(SimVQ(8, 16, seed=3).basis, SimVQ(8, 16, seed=3).basis)
    assert not torch.equal(SimVQ(8, 16, seed=3).basis, SimVQ(8, 16, seed=4).basis)


def test_simvq_loss_is_codebook_plus_quarter_commitment():
    torch.manual_seed(0)
    quantizer = SimVQ(8, 16)
    latents = torch.randn(1, 8, 5)
    out = quantizer(latents)
    codes = quantizer.vectors(out.codes[:, 0]).transpose(1, 2)
    assert torch.allclose(out.loss, 1.25 * (codes - latents).square().mean(), atol=1e-6)


def test_simvq_codes_apply_the_learned_map():
    torch.manual_seed(0)
    quantizer = SimVQ(8, 16)
    ids = torch.arange(16)
    expected = quantizer.basis @ quantizer.projection.weight.T + quantizer.projection.bias
    assert torch.allclose(quantizer.vectors(ids), expected, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stages", [1, 3])
def test_decode_of_encode_equals_quantized(kind, stages):
    torch.manual_seed(0)
    quantizer = make(kind, stages)
    latents = torch.randn(2, 8, 7)
    out = quantizer(latents)
    codes = quantizer.encode(latents)
    assert torch.equal(codes, out.codes)
    assert torch.allclose(quantizer.decode(codes), out.quantized, atol=1e-5)


@pytest.mark.parametrize("kind", ["simvq", "vq"])
def test_straight_through_passes_identity_gradient(kind):
    quantizer = make(kind, 3)
    latents = torch.randn(2, 8, 7, requires_grad=True)
    quantizer(latents).quantized.sum().backward()
    assert torch.allclose(latents.grad, torch.ones_like(latents))


def test_residual_stages_reduce_error_and_dropout_uses_fewer_codebooks():
    torch.manual_seed(0)
    quantizer = ResidualQuantizer([SimVQ(8, 256, seed=i) for i in range(4)])
    latents = torch.randn(4, 8, 50) * 0.5
    errors = [(quantizer.decode(quantizer.encode(latents, n)) - latents).square().mean() for n in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2]
    assert quantizer(latents, num_codebooks=2).codes.shape == (4, 2, 50)
    with pytest.raises(ValueError):
        quantizer.encode(latents, 5)


def test_dropped_stage_decodes_to_zero():
    quantizer = ResidualQuantizer([SimVQ(8, 16, seed=i) for i in range(2)])
    codes = torch.tensor([[[3, 4]], [[-1, -1]]]).view(1, 2, 2)
    only_first = quantizer.decode(codes[:, :1])
    assert torch.allclose(quantizer.decode(codes), only_first)


def test_vector_quantizer_trains_only_chosen_codes():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(8, 64)
    out = quantizer(torch.randn(1, 8, 4))
    out.loss.backward()
    touched = (quantizer.codebook.grad.abs().sum(1) > 0).nonzero().flatten()
    assert set(touched.tolist()) == set(out.codes.flatten().tolist())


MEMORY_PROBE = """
import resource, torch
from codec.quantize import SimVQ
torch.manual_seed(0)
quantizer = SimVQ(128, 262_144)
latents = torch.randn(20, 128, 75, requires_grad=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = quantizer(latents)
(out.quantized.square().mean() + out.loss).backward()
assert quantizer.projection.weight.grad is not None and out.codes.shape == (20, 1, 75)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.slow
def test_simvq_with_262144_codes_runs_forward_and_backward_in_bounded_memory():
    """1,500 tokens x 262,144 codes would be a 1.5 GiB fp32 distance matrix; the search never builds it.

    Runs in a fresh process so that the peak resident memory is this step's alone."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True)
    growth_mib = float(result.stdout.strip().splitlines()[-1])
    assert growth_mib < 600, f"peak memory grew {growth_mib:.0f} MiB"


@pytest.mark.parametrize("kind", KINDS)
def test_first_training_batch_places_the_codebook_on_the_data(kind):
    """Latents that fill a few directions (as real ones do) are spread over many codes, not one hub."""
    torch.manual_seed(0)
    quantizer = make(kind, 1).train()
    directions = torch.randn(3, 8)
    latents = (torch.randn(4, 50, 3) @ directions + 5.0).transpose(1, 2)  # offset far from the initial codes
    assert not quantizer.initialized
    codes = quantizer(latents).codes
    assert quantizer.initialized
    assert len(torch.unique(codes)) > 16  # of 32 codes
    quantizer.eval()
    assert torch.equal(quantizer.encode(latents), codes)


def test_evaluation_does_not_initialize():
    quantizer = SimVQ(8, 32).eval()
    before = quantizer.projection.weight.clone()
    quantizer(torch.randn(1, 8, 10))
    assert not quantizer.initialized and torch.equal(quantizer.projection.weight, before)


def test_low_rank_simvq_stages_each_reduce_the_residual():
    """Residual SimVQ with a small basis (Dc = 4 in D = 32, as the bundled model's 8 in 128): fitted on the first
    batch, every further stage leaves less of the latents unexplained. (Searched by angle in the small space, the
    factorized stages of an earlier bundled model did the opposite: error grew with every stage.)"""
    torch.manual_seed(0)
    mixing = torch.randn(32, 32) / 32 ** 0.5
    latents = (mixing @ torch.randn(4, 32, 200)).requires_grad_(False)
    quantizer = ResidualQuantizer([SimVQ(32, 64, basis_dim=4, seed=i) for i in range(4)]).train()
    quantizer(latents)  # fits each stage's codebook to its residual
    quantizer.eval()
    errors = []
    for n in range(1, 5):
        decoded = quantizer.decode(quantizer.encode(latents, n))
        errors.append(((latents - decoded).square().sum() / latents.square().sum()).item())
    assert errors[0] < 1 and all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


def test_simvq_loss_trains_the_map_by_the_codebook_term_and_the_latents_by_beta_commitment():
    """loss = mean ||q - sg(z)||^2 + beta mean ||sg(q) - z||^2 with q = scale (C[ids] W^T + b): W and b get the
    first term's gradient at weight 1, the latents z only beta times the second's. Swapping the terms (or their
    weights) changes both gradients, checked here against their values by hand."""
    torch.manual_seed(0)
    quantizer = SimVQ(8, 32, basis_dim=4, beta=0.25).eval()  # eval: no fit to the batch, W stays as drawn
    quantizer.scale.fill_(0.7)  # not 1, so that the scale's place in the gradient is checked too
    latents = torch.randn(2, 8, 5, requires_grad=True)
    out = quantizer(latents)
    out.loss.backward()
    z = latents.detach().transpose(1, 2).reshape(-1, 8)  # (N, D), in the order of the codes
    ids = out.codes.reshape(-1)
    q = (quantizer.basis[ids] @ quantizer.projection.weight.T + quantizer.projection.bias).detach() * 0.7
    dq = 2 * (q - z) / z.numel()  # d/dq of the codebook term
    assert torch.allclose(quantizer.projection.weight.grad, 0.7 * dq.T @ quantizer.basis[ids], atol=1e-7)
    assert torch.allclose(quantizer.projection.bias.grad, 0.7 * dq.sum(0), atol=1e-7)
    expected_z = (0.25 * 2 * (z - q) / z.numel()).reshape(2, 5, 8).transpose(1, 2)
    assert torch.allclose(latents.grad, expected_z, atol=1e-7)


def test_simvq_gathers_the_chosen_basis_rows_before_projecting_them():
    """Projecting the whole codebook and then gathering would keep a K-row tensor for backward (at K = 262,144
    and D = 512, 512 MiB per stage); gathering first keeps only N rows. Nothing saved for backward has K rows."""
    torch.manual_seed(0)
    size, tokens = 4096, 30
    quantizer = ResidualQuantizer([SimVQ(8, size, basis_dim=8, seed=i) for i in range(2)]).train()
    latents = torch.randn(1, 8, tokens, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = quantizer(latents)
    (out.quantized.square().mean() + out.loss).backward()
    assert quantizer.stages[1].projection.weight.grad.abs().sum() > 0
    assert saved and max(saved) < size, max(saved)  # gathered rows: tokens x 8 = 240 elements


def test_quantizer_dropout_uses_fewer_codebooks_on_its_share_of_steps():
    """The trainer's choice per step (codec/train/trainer.py): with probability quantizer_dropout a number of
    codebooks drawn from 1..n (n included), else n; the same for a step whatever process or resumed run asks."""
    from codec.train.config import TrainConfig
    from codec.train.trainer import codebooks_for_step
    steps, n = range(4000), 8
    config = TrainConfig(quantizer_dropout=0.5, seed=3)
    chosen = [codebooks_for_step(step, config, n) for step in steps]
    assert chosen == [codebooks_for_step(step, TrainConfig(quantizer_dropout=0.5, seed=3), n) for step in steps]
    assert set(chosen) == set(range(1, n + 1))
    fewer = sum(c < n for c in chosen) / len(chosen)
    assert abs(fewer - 0.5 * (n - 1) / n) < 0.03, fewer  # 4 standard deviations of the share
    assert chosen != [codebooks_for_step(step, TrainConfig(quantizer_dropout=0.5, seed=4), n) for step in steps]
    assert {codebooks_for_step(step, TrainConfig(quantizer_dropout=0.0), n) for step in steps} == {n}
