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
