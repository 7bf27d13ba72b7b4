"""Exact nearest-code search with bounded memory, shared by every quantizer.

Codes are described by a `CodebookIndex`: code j = transform @ basis[j] + bias (a plain codebook has no
transform and no bias; SimVQ's codes are its frozen basis through the learned map). The nearest code minimises

    ||x - c_j||^2 = ||c_j||^2 - 2 (x @ transform) . basis[j] - 2 x . bias + ||x||^2,

and the last two terms do not depend on j. So the search is a matmul of the transformed queries against the
basis, chunked over queries so that the score matrix never exceeds `SCORE_BUDGET_BYTES`; the projected K x D
codebook is never materialised, only its norms are, block by block. Result: the fp32 brute-force argmin (ties
aside), with memory bounded by one chunk at any K.

Two ways to get there, chosen per codebook by `build_index`:
- fp32: one `addmm` per chunk with the code norms fused in. Used for small codebooks and wherever bf16 is not
  faster: an AVX2 CPU without AVX512-BF16 or AMX ran a bf16 matmul 5x *slower* than fp32, while an AVX512-BF16
  EPYC ran the (1500 x 512) @ (512 x 65536) cross term in 0.32 s against 0.76 s (torch 2.13, 2 threads).
  `bf16_pays` times a small matmul once per device to decide.
- bf16 scores with a certified fp32 re-rank, for large codebooks where bf16 is fast. The code norms stay fp32
  (exact; bf16 norms would need error bounds wider than the gaps between codes); one bf16 matmul per chunk
  scores every code, and every rounding on the way is bounded: the inputs' (Cauchy-Schwarz on the rounding
  residues), the fp32 accumulation's, and the bf16 rounding of the output, which grows with |score|, so each
  query carries a shift that puts its best score near zero. The nearest code must score within twice that
  bound of the best approximate score; when the first `CANDIDATES` codes by approximate score include every
  code that does, they are re-ranked by the fp32 score, and otherwise (codes packed closer than bf16 can tell
  apart) the query is scored in fp32. So the answer is the fp32 search's, whatever the data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

SCORE_BUDGET_BYTES = 32 * 2**20  # one chunk of scores
NORM_BLOCK = 4096                # codes projected at once when computing norms (cache-sized blocks)
LOW_PRECISION_MIN_WORK = 2**22   # K x basis dim from which bf16 pays (measured: K = 6,000 at 512)
CANDIDATES = (16, 64)            # re-ranked per query: first try, then for the queries the first did not settle
BF16 = 2.0 ** -8                 # unit roundoff of bf16 (8 significant bits, round to nearest)
FP32 = 2.0 ** -24
SAFETY = 1.05                    # covers the second-order terms the bounds below leave out


def _accumulation(device: torch.device, terms: int) -> float:
    """Relative error bound (against the sum of |terms|) of a bf16 matmul's accumulation: gamma_n of fp32 in
    Higham's notation, as CPU kernels accumulate in fp32. cuBLAS may also reduce split-K partial sums in bf16
    unless PyTorch is told not to (`allow_bf16_reduced_precision_reduction`), counted here as two more bf16
    roundings of the whole sum: wider bounds, more fp32 fallbacks. Untested on a GPU so far."""
    reduced = device.type == "cuda" and torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    return terms * FP32 / (1 - terms * FP32) + (2 * BF16 if reduced else 0.0)


@dataclass(frozen=True)
class BasisBounds:
    """What the certificate needs from the basis alone; SimVQ's basis is frozen, so it is measured once."""
    key: tuple                    # (data_ptr, version, shape) of the basis it was measured on
    max_norm: float               # max_j ||basis_j||
    max_error: float              # max_j ||basis_j - bf16(basis_j)||


def _basis_key(basis: torch.Tensor) -> tuple:
    # Address and version alone could match a new tensor allocated where a freed one was; two row sums make
    # that coincidence harmless.
    return basis.data_ptr(), basis._version, tuple(basis.shape), basis[0].sum().item(), basis[-1].sum().item()


@dataclass
class _Certificate:
    """The bf16 form of a codebook for the certified search. Rows [basis_j | n_j (two bf16 halves) | 1] against
    queries [q | -1/2 | -1/2 | shift] give v_j = q . basis_j - n_j / 2 + shift, with n_j = ||code_j - bias||^2
    and q the centred query projected: the nearest code has the largest v. `norms` are the fp32 n_j."""
    augmented: torch.Tensor       # (K, Dc + 3) bf16
    norms: torch.Tensor           # (K,) fp32
    bounds: BasisBounds


@dataclass
class CodebookIndex:
    basis: torch.Tensor              # (K, Dc) fp32
    transform: torch.Tensor | None   # (D, Dc) fp32, or None for the identity
    bias: torch.Tensor | None        # (D,) fp32, or None
    squared_norms: torch.Tensor | None = None  # (K,) fp32 ||code_j||^2, for the fp32 search
    certificate: _Certificate | None = None     # for the bf16 search

    @property
    def size(self) -> int:
        return self.basis.shape[0]


_BF16_PAYS: dict[str, bool] = {}


def bf16_pays(device: torch.device) -> bool:
    """Whether a bf16 matmul runs well faster than fp32 here; timed once per device type and thread count."""
    key = f"{device.type}:{torch.get_num_threads()}"
    if key not in _BF16_PAYS:
        a, b = torch.randn(256, 256, device=device), torch.randn(256, 8192, device=device)
        times = {}
        for dtype in (torch.float32, torch.bfloat16):
            x, y = a.to(dtype), b.to(dtype)
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                x @ y
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                runs.append(time.perf_counter() - start)
            times[dtype] = min(runs)
        _BF16_PAYS[key] = times[torch.bfloat16] < 0.6 * times[torch.float32]
    return _BF16_PAYS[key]


@torch.no_grad()
def build_index(basis: torch.Tensor, transform: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                low_precision: bool | None = None, bounds: BasisBounds | None = None) -> CodebookIndex:
    """Prepare a codebook for search. `low_precision` None: bf16 for large codebooks where it pays. `bounds`
    from the index this one replaces are reused if they were measured on this very basis, unchanged."""
    basis, transform, bias = (t.detach().float() if t is not None else None for t in (basis, transform, bias))
    index = CodebookIndex(basis, transform, bias)
    if low_precision is None:
        low_precision = basis.numel() >= LOW_PRECISION_MIN_WORK and bf16_pays(basis.device)
    if low_precision:
        reusable = bounds is not None and bounds.key == _basis_key(basis)
        index.certificate = _certify(basis, transform, bounds if reusable else None)
    else:
        index.squared_norms = _squared_norms(basis, transform, bias)
    return index


def _squared_norms(basis: torch.Tensor, transform: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """||transform @ basis_j + bias||^2 for every j, NORM_BLOCK codes at a time: the codebook is never whole."""
    norms = torch.empty(basis.shape[0], device=basis.device)
    for start in range(0, basis.shape[0], NORM_BLOCK):
        codes = basis[start:start + NORM_BLOCK]
        if transform is not None:
            codes = codes @ transform.T
        norms[start:start + NORM_BLOCK] = (codes if bias is None else codes + bias).square().sum(1)
    return norms


def _certify(basis: torch.Tensor, transform: torch.Tensor | None, bounds: BasisBounds | None) -> _Certificate:
    size, basis_dim = basis.shape
    augmented = torch.empty(size, basis_dim + 3, dtype=torch.bfloat16, device=basis.device)
    augmented[:, -1] = 1
    basis_norm, basis_error = basis.new_zeros(()), basis.new_zeros(())
    for start in range(0, size, NORM_BLOCK):
        block = basis[start:start + NORM_BLOCK]
        augmented[start:start + NORM_BLOCK, :basis_dim] = block  # block by block: no K x Dc temporary
        if bounds is None:
            basis_norm = torch.maximum(basis_norm, torch.linalg.vector_norm(block, dim=1).max())
            basis_error = torch.maximum(basis_error, torch.linalg.vector_norm(
                block - augmented[start:start + NORM_BLOCK, :basis_dim].float(), dim=1).max())
    norms = _squared_norms(basis, transform, None)  # centred: the bias moves to the queries
    # Two bf16 halves hold n_j to 16 bits: |n - high - low| <= u^2 n.
    augmented[:, basis_dim] = norms
    augmented[:, basis_dim + 1] = norms - augmented[:, basis_dim].float()
    return _Certificate(augmented, norms, bounds or BasisBounds(_basis_key(basis), basis_norm.item(),
                                                                basis_error.item()))


@torch.no_grad()
def nearest_code(queries: torch.Tensor, index: CodebookIndex) -> torch.Tensor:
    """Index of the nearest code for each row of `queries` (N, D); exact, memory bounded by one chunk."""
    queries = queries.detach().float()
    if index.certificate is not None and len(queries):
        return _nearest_low_precision(queries, index)
    return _nearest_fp32(queries, index)


def _nearest_fp32(queries: torch.Tensor, index: CodebookIndex) -> torch.Tensor:
    projected = queries @ index.transform if index.transform is not None else queries
    chunk = max(1, SCORE_BUDGET_BYTES // (4 * index.size))
    result = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    for start in range(0, len(queries), chunk):
        scores = torch.addmm(index.squared_norms, projected[start:start + chunk], index.basis.T, alpha=-2)
        result[start:start + chunk] = scores.argmin(1)
    return result


def _nearest_low_precision(queries: torch.Tensor, index: CodebookIndex) -> torch.Tensor:
    certificate = index.certificate
    centered = queries - index.bias if index.bias is not None else queries
    projected = centered @ index.transform if index.transform is not None else centered
    basis_dim = projected.shape[1]
    # The output of a bf16 matmul is rounded to bf16 too, an error relative to |v|; a per-query shift that
    # brings the best v near zero keeps it small. v_best = (||x - bias||^2 - d^2) / 2 for the nearest distance d,
    # which a bf16 search of a few queries estimates well enough.
    low = torch.empty(len(queries), basis_dim + 3, dtype=torch.bfloat16, device=queries.device)
    low[:, :basis_dim], low[:, basis_dim:basis_dim + 2], low[:, -1] = projected, -0.5, 0
    distances = centered.square().sum(1)
    sample = slice(None, None, max(1, len(queries) // 8))  # an estimate only: bf16 is good enough
    typical = (distances[sample] - 2 * (low[sample] @ certificate.augmented.T).amax(1).float()).median()
    low[:, -1] = (typical - distances) / 2
    # Errors of each v_j before the final rounding (the same for all j): bf16 inputs (Cauchy-Schwarz on the
    # rounding residues), the norm halves, fp32 accumulation over every term of the sum.
    rounded = low[:, :basis_dim].float()
    low_norm = torch.linalg.vector_norm(rounded, dim=1)
    largest_norm = certificate.norms.max()
    error = SAFETY * (
        torch.linalg.vector_norm(projected - rounded, dim=1) * certificate.bounds.max_norm
        + low_norm * certificate.bounds.max_error
        + BF16 ** 2 * largest_norm / 2
        + _accumulation(queries.device, basis_dim + 3) * (
            low_norm * (certificate.bounds.max_norm + certificate.bounds.max_error)
            + largest_norm / 2 + low[:, -1].float().abs()))
    rounding = SAFETY * BF16 / (1 - BF16)
    chunk = max(1, SCORE_BUDGET_BYTES // (2 * index.size))
    result = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    for start in range(0, len(queries), chunk):
        rows = slice(start, start + chunk)
        scores = low[rows] @ certificate.augmented.T  # v~: larger is nearer
        found = torch.empty(len(scores), dtype=torch.long, device=queries.device)
        pending, threshold = torch.arange(len(scores), device=queries.device), None
        for count in CANDIDATES:
            if count >= index.size:
                break
            values, ids = (scores if len(pending) == len(scores) else scores[pending]).topk(count, dim=1)
            if threshold is None:
                # The nearest code j* has v~_j* >= v~_best - 2 error - (roundings of v~_best and v~_j*), where
                # |v~_j*| <= |v~_best| when v~_j* >= 0, and otherwise from solving the same inequality for it.
                best = values[:, 0].float()
                reach = best - 2 * error[rows]
                threshold = torch.minimum(reach - 2 * rounding * best.abs(),
                                          (reach - rounding * best.abs()) / (1 - rounding))
            settled = values[:, -1].float() < threshold[pending]  # every other code scores below the threshold
            found[pending[settled]] = _rerank(projected[rows][pending[settled]], ids[settled], certificate.norms,
                                              index.basis)
            pending = pending[~settled]
            if not len(pending):
                break
        if len(pending):  # too many codes within reach: score these queries in fp32
            found[pending] = torch.addmm(certificate.norms, projected[rows][pending], index.basis.T,
                                         alpha=-2).argmin(1)
        result[rows] = found
    return result


def _rerank(projected: torch.Tensor, ids: torch.Tensor, norms: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The candidate (ids (N, k)) with the best fp32 score n_j - 2 q . basis_j, the fp32 search's own score."""
    scores = norms[ids] - 2 * (basis[ids] @ projected.unsqueeze(-1)).squeeze(-1)
    return ids.gather(1, scores.argmin(1, keepdim=True)).squeeze(1)
