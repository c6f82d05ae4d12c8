"""Triton kernels for the two passes over the gradients, at memory speed on the GPU.

Why: the Gramian of a tensor's stacked gradients [D, n] (D = 2-4, n up to ~5e8) is a skinny matrix product
that cuBLAS runs far below memory bandwidth (bf16 in, fp32 out: ~10x off the read floor on an H100), and the
combine `c [1, D] @ G [D, n]` ran ~4x off. Both are really streaming passes:
- `gramians_triton`: every program walks a strided set of column tiles of one tensor, reads each of the D rows
  once, accumulates all D x D products elementwise in fp32 registers, and writes one [DP, DP] partial (DP = D
  rounded up to a power of two; padded rows are masked, so they cost no memory traffic). A second tiny kernel
  sums each group's partials in a fixed order, so the result is deterministic (no atomics).
- `combine_triton`: one read of the D rows and one write per element, in fp32 with fp32 coefficients, rounded
  once to the output's dtype. The output may be row 0 of the stacked buffer itself (each element is read
  before it is written, by the same program).
Triton ships with CUDA builds of torch; without it (or on CPU) `available()` is False and mgs.surgery uses its
torch path. Setting TRITON_INTERPRET=1 before import runs these kernels on CPU tensors (slowly), for tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

try:  # optional: present with CUDA torch, absent on CPU-only installs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_SEGMENT_ROWS = 256
MAX_DOMAINS = 16


@dataclass
class LaunchConfig:
    """Tile sizes and parallelism of the kernels (not tuned on hardware yet: bench_surgery.py sweeps them).

    gram_tile_elements: DP x columns per Gramian tile, so the fp32 accumulator [DP, DP, columns] holds
    DP x gram_tile_elements values per program (2 x 4096 / 256 threads = 32 registers per thread at D = 2).
    gram_tiles_per_program: column tiles each Gramian program reads (strided); programs = tiles / this, many
    per SM, so the hardware scheduler balances them (no wave tail) and the partials stay ~0.1% of the traffic.
    combine_columns: columns per combine program (one tile each)."""

    gram_tile_elements: int = 4096
    gram_tiles_per_program: int = 16
    gram_warps: int = 8
    combine_columns: int = 2048
    combine_warps: int = 8


CONFIG = LaunchConfig()


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """True where these kernels can run on `device`: CUDA with Triton installed (or the Triton interpreter)."""
    return triton is not None and (device.type == "cuda" or interpreted())


def preferred(device: torch.device) -> bool:
    """True where impl="auto" takes these kernels: CUDA with Triton (never the slow interpreter)."""
    return triton is not None and device.type == "cuda"


def supports(rows: torch.Tensor) -> bool:
    """A [D, n] view the kernels can read: a supported dtype, unit column stride, D <= MAX_DOMAINS."""
    return rows.dtype in DTYPES and (rows.shape[1] <= 1 or rows.stride(1) == 1) and rows.shape[0] <= MAX_DOMAINS


def _padded(num_domains: int) -> int:
    return max(2, triton.next_power_of_2(num_domains))


if triton is not None:

    @triton.jit
    def _gram_partial_kernel(
        x_ptr, partial_ptr, first_partial, n, row_stride, programs, tiles_per_program, D: tl.constexpr, DP: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # program p reads column tiles p, p + programs, p + 2 programs, ... (the last ones may be past n: masked)
        pid = tl.program_id(0)
        rows = tl.arange(0, DP)
        cols = tl.arange(0, BLOCK)
        row_base = x_ptr + rows[:, None].to(tl.int64) * row_stride
        row_ok = rows[:, None] < D
        acc = tl.zeros((DP, DP, BLOCK), dtype=tl.float32)
        for k in range(0, tiles_per_program):
            idx = (pid + k * programs).to(tl.int64) * BLOCK + cols
            x = tl.load(row_base + idx[None, :], mask=row_ok & (idx[None, :] < n), other=0.0).to(tl.float32)
            acc += x[:, None, :] * x[None, :, :]
        gram = tl.sum(acc, axis=2)
        tl.store(partial_ptr + (first_partial + pid) * DP * DP + rows[:, None] * DP + rows[None, :], gram)

    @triton.jit
    def _segment_sum_kernel(partial_ptr, bounds_ptr, out_ptr, DD: tl.constexpr, ROWS: tl.constexpr):
        group = tl.program_id(0)
        lo = tl.load(bounds_ptr + group)
        hi = tl.load(bounds_ptr + group + 1)
        r = tl.arange(0, ROWS)
        k = tl.arange(0, DD)
        acc = tl.zeros((ROWS, DD), dtype=tl.float32)
        for start in range(lo, hi, ROWS):
            idx = start + r
            acc += tl.load(partial_ptr + idx[:, None] * DD + k[None, :], mask=(idx < hi)[:, None], other=0.0)
        tl.store(out_ptr + group * DD + k, tl.sum(acc, axis=0))

    @triton.jit
    def _combine_kernel(
        x_ptr, c_ptr, c_row, out_ptr, n, row_stride, D: tl.constexpr, DP: tl.constexpr, BLOCK: tl.constexpr
    ):
        pid = tl.program_id(0)
        rows = tl.arange(0, DP)
        cols = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        c = tl.load(c_ptr + c_row * D + rows, mask=rows < D, other=0.0)
        mask = (rows[:, None] < D) & (cols[None, :] < n)
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * row_stride + cols[None, :], mask=mask, other=0.0)
        y = tl.sum(x.to(tl.float32) * c[:, None], axis=0)
        tl.store(out_ptr + cols, y.to(out_ptr.dtype.element_ty), mask=cols < n)


def gramians_triton(
    grouped_rows: Sequence[Sequence[torch.Tensor]], num_domains: int, device: torch.device, config: LaunchConfig | None = None
) -> torch.Tensor:
    """Gramians [num_groups, D, D] fp32 of groups of [D, n] row views (each passing `supports`)."""
    if triton is None:
        raise RuntimeError("Triton is not installed: use impl='torch' (or install a CUDA build of torch)")
    config = config or CONFIG
    dp = _padded(num_domains)
    block = max(16, config.gram_tile_elements // dp)
    plan: list[tuple[torch.Tensor, int]] = []
    bounds = [0]
    total = 0
    for rows_list in grouped_rows:
        for rows in rows_list:
            n = rows.shape[1]
            if n == 0:
                continue
            programs = triton.cdiv(triton.cdiv(n, block), config.gram_tiles_per_program)
            plan.append((rows, programs))
            total += programs
        bounds.append(total)
    bounds_t = torch.tensor(bounds, dtype=torch.int32, device=device)  # before the kernels: a blocking copy
    partial = torch.empty(max(bounds[-1], 1), dp, dp, dtype=torch.float32, device=device)
    offset = 0
    for rows, programs in plan:
        tiles = triton.cdiv(triton.cdiv(rows.shape[1], block), programs)
        _gram_partial_kernel[(programs,)](
            rows, partial, offset, rows.shape[1], rows.stride(0), programs, tiles,
            D=num_domains, DP=dp, BLOCK=block, num_warps=config.gram_warps,
        )
        offset += programs
    out = torch.empty(len(grouped_rows), dp, dp, dtype=torch.float32, device=device)
    if len(grouped_rows):
        _segment_sum_kernel[(len(grouped_rows),)](partial, bounds_t, out, DD=dp * dp, ROWS=_SEGMENT_ROWS)
    return out[:, :num_domains, :num_domains]


def combine_triton(
    rows: torch.Tensor, coeffs: torch.Tensor, group: int, target: torch.Tensor, config: LaunchConfig | None = None
) -> None:
    """target (n elements, contiguous, may be rows[0]) = coeffs[group] @ rows [D, n], with `coeffs`
    [num_groups, D] contiguous fp32 on rows' device."""
    num_domains, n = rows.shape
    if n == 0:
        return
    config = config or CONFIG
    grid = (triton.cdiv(n, config.combine_columns),)
    _combine_kernel[grid](
        rows, coeffs, group, target, n, rows.stride(0), D=num_domains, DP=_padded(num_domains),
        BLOCK=config.combine_columns, num_warps=config.combine_warps,
    )
