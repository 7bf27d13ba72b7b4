import pytest
import torch

from codec.quantize import search
from codec.quantize.search import build_index, nearest_code


def brute_force(queries, codebook):
    return torch.cdist(queries.double(), codebook.double()).argmin(1)


def assert_exact(found, queries, codebook):
    """Equal to the float64 argmin, except where two codes are tied to fp32 precision."""
    reference = brute_force(queries, codebook)
    distances = torch.cdist(queries.double(), codebook.double())
    rows = torch.arange(len(queries))
    gap = distances[rows, found] - distances[rows, reference]
    assert (gap >= 0).all()
    assert (gap[found != reference] <= 1e-5 * distances[rows, reference][found != reference].clamp(min=1)).all()
    assert (found == reference).float().mean() > 0.99


@pytest.mark.parametrize("size", [1, 17, 1000, 5000])
@pytest.mark.parametrize("budget", [64, 10**9])
def test_plain_codebook_matches_brute_force(size, budget, monkeypatch):
    monkeypatch.setattr(search, "SCORE_BUDGET_BYTES", budget)  # 64 bytes forces one query per chunk
    torch.manual_seed(size)
    codebook, queries = torch.randn(size, 24), torch.randn(300, 24)
    assert_exact(nearest_code(queries, build_index(codebook)), queries, codebook)


@pytest.mark.parametrize("budget", [64, 10**9])
def test_projected_codebook_matches_brute_force(budget, monkeypatch):
    monkeypatch.setattr(search, "SCORE_BUDGET_BYTES", budget)
    monkeypatch.setattr(search, "NORM_BLOCK", 7)
    torch.manual_seed(0)
    basis, transform, bias = torch.randn(3000, 20), torch.randn(16, 20) / 4, torch.randn(16)
    codebook = basis @ transform.T + bias
    # queries near codes (trained-like) and far from them (early training)
    queries = torch.cat([codebook[torch.randint(0, 3000, (200,))] + 0.05 * torch.randn(200, 16),
                         3 * torch.randn(200, 16)])
    assert_exact(nearest_code(queries, build_index(basis, transform, bias)), queries, codebook)


def test_search_finds_exact_copies():
    codebook = torch.randn(4096, 32)
    ids = torch.randint(0, 4096, (500,))
    assert torch.equal(nearest_code(codebook[ids], build_index(codebook)), ids)


def simvq_like(size, dim=48, basis_dim=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(size, basis_dim, generator=generator) / basis_dim ** 0.5
    transform = torch.randn(dim, basis_dim, generator=generator) * 3 / basis_dim ** 0.5
    bias = torch.randn(dim, generator=generator)
    return basis, transform, bias, basis @ transform.T + bias


@pytest.mark.parametrize("budget", [64, 10**9])
def test_certified_bf16_search_matches_brute_force(budget, monkeypatch):
    monkeypatch.setattr(search, "SCORE_BUDGET_BYTES", budget)
    basis, transform, bias, codebook = simvq_like(6000)
    torch.manual_seed(1)
    queries = torch.cat([codebook[torch.randint(0, 6000, (300,))] + 0.02 * torch.randn(300, 48),
                         bias + 3 * torch.randn(300, 48)])
    index = build_index(basis, transform, bias, low_precision=True)
    assert index.certificate is not None
    assert_exact(nearest_code(queries, index), queries, codebook)
    plain = build_index(codebook, low_precision=True)  # no transform, no bias
    assert_exact(nearest_code(queries, plain), queries, codebook)


def test_certified_search_settles_crowded_queries_exactly(monkeypatch):
    """Codes packed closer than bf16 can tell apart: more candidates than any re-rank list holds, so the
    queries fall back to fp32 and the answer stays exact."""
    calls = []
    original = search._rerank
    monkeypatch.setattr(search, "_rerank", lambda *args: calls.append(args[1].shape) or original(*args))
    torch.manual_seed(2)
    centre = torch.randn(1, 32) * 0.5
    codebook = torch.cat([centre + 0.02 * torch.randn(300, 32), torch.randn(3000, 32)])
    queries = centre + 0.02 * torch.randn(50, 32)
    found = nearest_code(queries, build_index(codebook, low_precision=True))
    assert_exact(found, queries, codebook)
    assert sum(shape[0] for shape in calls) < len(queries)  # some went past the re-rank lists


def test_basis_bounds_are_reused_only_for_the_same_basis():
    basis, transform, bias, _ = simvq_like(5000)
    first = build_index(basis, transform, bias, low_precision=True)
    again = build_index(basis, transform * 1.1, bias, low_precision=True, bounds=first.certificate.bounds)
    assert again.certificate.bounds is first.certificate.bounds
    basis.mul_(2)  # changed in place: its version moves, so the bounds are measured again
    changed = build_index(basis, transform, bias, low_precision=True, bounds=first.certificate.bounds)
    assert changed.certificate.bounds is not first.certificate.bounds
    assert changed.certificate.bounds.max_norm == pytest.approx(2 * first.certificate.bounds.max_norm)
    queries = torch.randn(200, 48) * 3 + bias
    assert_exact(nearest_code(queries, changed), queries, basis @ transform.T + bias)
