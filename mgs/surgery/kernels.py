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
Tensors under `LaunchConfig.batch_below` columns share one launch per pass (addresses read from an int64
table), so small models and small tensors are not launch-bound; plans are cached per buffer layout.
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
_SEGMENT_ELEMENTS = 8192  # partial values summed per step of the segment kernel (rows x DP x DP)
MAX_DOMAINS = 16


@dataclass
class LaunchConfig:
    """Tile sizes and parallelism of the kernels (not tuned on hardware yet: bench_surgery.py sweeps them).

    gram_tile_elements: DP x columns per Gramian tile, so the fp32 accumulator [DP, DP, columns] holds
    DP x gram_tile_elements values per program (2 x 4096 / 256 threads = 32 registers per thread at D = 2).
    gram_tiles_per_program: column tiles each Gramian program reads (strided); programs = tiles / this, many
    per SM, so the hardware scheduler balances them (no wave tail) and the partials stay ~0.1% of the traffic.
    combine_columns: columns per combine program (one tile each).
    batch_below: tensors with fewer columns than this (norms, biases, small projections; every tensor of a
    SmolLM2-sized model) share one launch per pass and dtype, through a table of addresses: launch overhead,
    not bandwidth, is their cost. Larger tensors get a launch of their own, specialised (vectorised loads)."""

    gram_tile_elements: int = 4096
    gram_tiles_per_program: int = 16
    gram_warps: int = 8
    combine_columns: int = 2048
    combine_warps: int = 8
    batch_below: int = 1 << 22


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
    def _gram_partial_batched_kernel(
        table_ptr, program_tensor_ptr, partial_ptr, x_like, D: tl.constexpr, DP: tl.constexpr, BLOCK: tl.constexpr,
        TILES: tl.constexpr,
    ):
        # One launch for many small tensors. table row t: [address, n, row_stride, first grid program,
        # first partial row, programs] (int64); program_tensor[p]: the tensor of grid program p.
        p = tl.program_id(0)
        t = tl.load(program_tensor_ptr + p).to(tl.int64)
        x_ptr = tl.load(table_ptr + t * 6).to(tl.pointer_type(x_like.dtype.element_ty))
        n = tl.load(table_ptr + t * 6 + 1)
        row_stride = tl.load(table_ptr + t * 6 + 2)
        local = p - tl.load(table_ptr + t * 6 + 3)
        first_partial = tl.load(table_ptr + t * 6 + 4)
        programs = tl.load(table_ptr + t * 6 + 5)
        rows = tl.arange(0, DP)
        cols = tl.arange(0, BLOCK)
        row_base = x_ptr + rows[:, None].to(tl.int64) * row_stride
        row_ok = rows[:, None] < D
        acc = tl.zeros((DP, DP, BLOCK), dtype=tl.float32)
        for k in range(0, TILES):
            idx = (local + k * programs) * BLOCK + cols
            x = tl.load(row_base + idx[None, :], mask=row_ok & (idx[None, :] < n), other=0.0).to(tl.float32)
            acc += x[:, None, :] * x[None, :, :]
        gram = tl.sum(acc, axis=2)
        tl.store(partial_ptr + (first_partial + local) * DP * DP + rows[:, None] * DP + rows[None, :], gram)

    @triton.jit
    def _combine_batched_kernel(
        table_ptr, program_tensor_ptr, c_ptr, x_like, out_like, D: tl.constexpr, DP: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # One launch for many small tensors. table row t: [x address, out address, n, row_stride,
        # first grid program, coefficient row] (int64).
        p = tl.program_id(0)
        t = tl.load(program_tensor_ptr + p).to(tl.int64)
        x_ptr = tl.load(table_ptr + t * 6).to(tl.pointer_type(x_like.dtype.element_ty))
        out_ptr = tl.load(table_ptr + t * 6 + 1).to(tl.pointer_type(out_like.dtype.element_ty))
        n = tl.load(table_ptr + t * 6 + 2)
        row_stride = tl.load(table_ptr + t * 6 + 3)
        local = p - tl.load(table_ptr + t * 6 + 4)
        c_row = tl.load(table_ptr + t * 6 + 5)
        rows = tl.arange(0, DP)
        cols = local * BLOCK + tl.arange(0, BLOCK)
        c = tl.load(c_ptr + c_row * D + rows, mask=rows < D, other=0.0)
        mask = (rows[:, None] < D) & (cols[None, :] < n)
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * row_stride + cols[None, :], mask=mask, other=0.0)
        y = tl.sum(x.to(tl.float32) * c[:, None], axis=0)
        tl.store(out_ptr + cols, y.to(out_like.dtype.element_ty), mask=cols < n)

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


_PLANS: dict[tuple, tuple] = {}  # launch tables per buffer layout (the trainer's buffers persist: built once)
_MAX_PLANS = 8


def _cached(key: tuple, build):
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
        plan = _PLANS[key] = build()
    return plan


def _program_map(programs: Sequence[int], device: torch.device) -> torch.Tensor:
    """[sum(programs)] int32: entry p = the index of the tensor grid program p belongs to."""
    counts = torch.tensor(programs, dtype=torch.int64)
    return torch.repeat_interleave(torch.arange(len(programs), dtype=torch.int32), counts).to(device)


def _gram_plan(grouped_rows, dp: int, block: int, config: LaunchConfig, device: torch.device):
    """Partial rows in group order (so each group's are contiguous), the tensors that get a launch of their own,
    and one table launch per dtype for the rest. Returns (bounds [G + 1] on device, partial rows, single,
    batched launches)."""
    bounds = [0]
    total = 0
    single: list[tuple[int, int, int, int]] = []  # (flat index, programs, first partial row, tiles per program)
    batched: dict[torch.dtype, list[tuple[int, list[int]]]] = {}
    flat = 0
    for rows_list in grouped_rows:
        for rows in rows_list:
            n = rows.shape[1]
            if n > 0:
                programs = triton.cdiv(triton.cdiv(n, block), config.gram_tiles_per_program)
                if n >= config.batch_below:
                    single.append((flat, programs, total, triton.cdiv(triton.cdiv(n, block), programs)))
                else:
                    batched.setdefault(rows.dtype, []).append(
                        (flat, [rows.data_ptr(), n, rows.stride(0), 0, total, programs])
                    )
                total += programs
            flat += 1
        bounds.append(total)
    launches = []
    for entries in batched.values():
        first = 0
        for _, row in entries:
            row[3] = first
            first += row[5]
        table = torch.tensor([row for _, row in entries], dtype=torch.int64).to(device)
        launches.append((entries[0][0], table, _program_map([row[5] for _, row in entries], device), first))
    return torch.tensor(bounds, dtype=torch.int32).to(device), total, single, launches


def gramians_triton(
    grouped_rows: Sequence[Sequence[torch.Tensor]], num_domains: int, device: torch.device, config: LaunchConfig | None = None
) -> torch.Tensor:
    """Gramians [num_groups, D, D] fp32 of groups of [D, n] row views (each passing `supports`)."""
    if triton is None:
        raise RuntimeError("Triton is not installed: use impl='torch' (or install a CUDA build of torch)")
    config = config or CONFIG
    dp = _padded(num_domains)
    block = max(16, config.gram_tile_elements // dp)
    flat_rows = [rows for rows_list in grouped_rows for rows in rows_list]
    key = ("gram", num_domains, device, repr(config), tuple(len(r) for r in grouped_rows),
           tuple((r.data_ptr(), r.shape[1], r.stride(0), r.dtype) for r in flat_rows))
    bounds, total, single, launches = _cached(key, lambda: _gram_plan(grouped_rows, dp, block, config, device))
    partial = torch.empty(max(total, 1), dp, dp, dtype=torch.float32, device=device)
    for flat, programs, first_partial, tiles in single:
        rows = flat_rows[flat]
        _gram_partial_kernel[(programs,)](
            rows, partial, first_partial, rows.shape[1], rows.stride(0), programs, tiles,
            D=num_domains, DP=dp, BLOCK=block, num_warps=config.gram_warps,
        )
    for flat, table, program_map, programs in launches:
        _gram_partial_batched_kernel[(programs,)](
            table, program_map, partial, flat_rows[flat], D=num_domains, DP=dp, BLOCK=block,
            TILES=config.gram_tiles_per_program, num_warps=config.gram_warps,
        )
    out = torch.empty(len(grouped_rows), dp, dp, dtype=torch.float32, device=device)
    if len(grouped_rows):
        _segment_sum_kernel[(len(grouped_rows),)](
            partial, bounds, out, DD=dp * dp, ROWS=max(16, _SEGMENT_ELEMENTS // (dp * dp)), num_warps=8
        )
    return out[:, :num_domains, :num_domains].contiguous()  # callers all-reduce it in place


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


def combine_many_triton(
    jobs: Sequence[tuple[torch.Tensor, int, torch.Tensor]],
    coeffs: torch.Tensor,
    config: LaunchConfig | None = None,
    done: list[bool] | None = None,
) -> None:
    """`combine_triton` for many (rows [D, n], group, target) at once: tensors with at least
    `config.batch_below` columns get a launch each, the others one table launch per (input, output) dtype.
    `done[i]` is set once job i's launch went out (so a caller can finish the rest another way if a launch
    raises: in-place outputs must not be combined twice)."""
    config = config or CONFIG
    if not jobs:
        return
    num_domains = jobs[0][0].shape[0]
    key = ("combine", coeffs.device, repr(config),
           tuple((r.data_ptr(), r.shape[1], r.stride(0), r.dtype, g, t.data_ptr(), t.dtype) for r, g, t in jobs))
    single, launches = _cached(key, lambda: _combine_plan(jobs, config, coeffs.device))
    done = [False] * len(jobs) if done is None else done
    for first_job, table, program_map, programs, members in launches:
        rows, _, target = jobs[first_job]
        _combine_batched_kernel[(programs,)](
            table, program_map, coeffs, rows, target, D=num_domains, DP=_padded(num_domains),
            BLOCK=config.combine_columns, num_warps=config.combine_warps,
        )
        for index in members:
            done[index] = True
    for index in single:
        rows, group, target = jobs[index]
        combine_triton(rows, coeffs, group, target, config)
        done[index] = True


def _combine_plan(jobs, config: LaunchConfig, device: torch.device):
    single: list[int] = []
    batched: dict[tuple[torch.dtype, torch.dtype], list[tuple[int, list[int]]]] = {}
    for index, (rows, group, target) in enumerate(jobs):
        n = rows.shape[1]
        if n == 0:
            continue
        if n >= config.batch_below:
            single.append(index)
        else:
            batched.setdefault((rows.dtype, target.dtype), []).append(
                (index, [rows.data_ptr(), target.data_ptr(), n, rows.stride(0), 0, group])
            )
    launches = []
    for entries in batched.values():
        first = 0
        programs = []
        for _, row in entries:
            row[4] = first
            programs.append(triton.cdiv(row[2], config.combine_columns))
            first += programs[-1]
        table = torch.tensor([row for _, row in entries], dtype=torch.int64).to(device)
        members = [index for index, _ in entries]
        launches.append((entries[0][0], table, _program_map(programs, device), first, members))
    return single, launches
