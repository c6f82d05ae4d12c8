"""The two passes over the gradients: per-group Gramians G G^T [D, D], and the weighted combine sum_i c_i g_i.

Gradients come in one of two layouts:
- `{domain: {param_name: Tensor}}` (convenient; each tensor is stacked into a temporary [D, n] when read), or
- `StackedGrads(domains, {param_name: Tensor [D, *shape]})`: the trainer's own per-tensor buffers (or [D, n]
  per group). Nothing is copied: the Gramian of a tensor is one `G.view(D, -1) @ G.view(D, -1).T`, and the
  combine is one `c [1, D] @ G.view(D, -1)` written straight into the output tensor (e.g. `param.grad`).
Both work on any slice of the tensors (FSDP shards, even empty ones): Gramians of the slices add up to the
Gramian of the whole, and the combine is elementwise, so sharded callers sum the Gramians over ranks and stay
exact. Gramians accumulate in fp32 (fp64 when the gradients are fp64); fp32 matmuls run at full IEEE
precision even where TF32 is enabled. The combine may write into an output of another dtype, or into row 0
of the stacked buffer itself (`out={name: buffer[0]}`: no extra gradient-sized memory).

Two implementations (`IMPLS`, `impl=` on both passes): "torch" (any device/dtype; the CPU matmul path, and on
CUDA an elementwise combine, which beats cuBLAS's skinny [1, D] x [D, n] product) and "triton" (mgs.surgery.kernels:
one streaming read per pass, fp32 accumulation, for fp32/bf16/fp16 stacked buffers on CUDA). "auto" (default)
takes triton where it applies, else torch.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence, Union

import torch

from mgs.surgery import kernels

# Gramians of long rows are computed in column blocks of this many (see `_accumulate_gram`).
GRAM_CHUNK_COLUMNS = 1 << 16
# Blocks converted to fp32 at once where low-precision inputs can't be multiplied with fp32 output directly.
_CONVERT_BATCHES = 32


@dataclass
class StackedGrads:
    """Pre-stacked per-domain gradients: `tensors[name]` is [D, *shape], row i belonging to `domains[i]`."""

    domains: list[str]
    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        self.domains = list(self.domains)
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            raise ValueError(f"StackedGrads needs distinct domain names, got {self.domains}")
        for name, tensor in self.tensors.items():
            if tensor.dim() < 1 or tensor.shape[0] != len(self.domains):
                raise ValueError(
                    f"stacked gradient of {name!r} has shape {tuple(tensor.shape)}; expected [D={len(self.domains)}, ...]"
                )


DomainGrads = Mapping[str, Mapping[str, torch.Tensor]]
Grads = Union[DomainGrads, StackedGrads]


def check_domain_grads(domain_grads: DomainGrads, domains: Sequence[str] | None = None) -> list[str]:
    """Validate `{domain: {name: Tensor}}` and return the domain order (as given, else sorted by name).

    Errors name the offending domain / parameter: a domain expected in `domains` but missing, a parameter
    present in one domain and not another, shapes / dtypes / devices that disagree.
    """
    if not domain_grads:
        raise ValueError("domain_grads is empty: pass {domain: {param_name: grad}} with at least one domain")
    if domains is not None:
        domains = list(domains)
        missing = [d for d in domains if d not in domain_grads]
        extra = sorted(set(domain_grads) - set(domains))
        if missing or extra:
            raise ValueError(
                f"domain_grads has domains {sorted(domain_grads)} but the caller expects {domains}"
                + (f"; missing: {missing} (did that domain get no samples this step?)" if missing else "")
                + (f"; unexpected: {extra}" if extra else "")
            )
    else:
        domains = sorted(domain_grads)
    first = domains[0]
    reference = domain_grads[first]
    for domain in domains[1:]:
        grads = domain_grads[domain]
        if grads.keys() != reference.keys():
            only_first = sorted(set(reference) - set(grads))
            only_here = sorted(set(grads) - set(reference))
            name = (only_first or only_here)[0]
            raise ValueError(
                f"parameter {name!r} is in domain {first if only_first else domain!r}'s gradients but not in "
                f"{domain if only_first else first!r}'s; every domain must have the same parameter names"
            )
        for name, tensor in grads.items():
            ref = reference[name]
            if tensor.shape != ref.shape or tensor.dtype != ref.dtype or tensor.device != ref.device:
                raise ValueError(
                    f"parameter {name!r}: domain {domain!r} has {tuple(tensor.shape)} {tensor.dtype} on "
                    f"{tensor.device}, domain {first!r} has {tuple(ref.shape)} {ref.dtype} on {ref.device}"
                )
    return domains


def grad_domains(grads: Grads, domains: Sequence[str] | None = None) -> list[str]:
    """The domain order of `grads` (checking it in the dict layout)."""
    if isinstance(grads, StackedGrads):
        if domains is not None and list(domains) != grads.domains:
            raise ValueError(f"StackedGrads rows are {grads.domains} but the caller expects {list(domains)}")
        return grads.domains
    return check_domain_grads(grads, domains)


def param_names(grads: Grads, domains: Sequence[str]) -> list[str]:
    return list(grads.tensors) if isinstance(grads, StackedGrads) else list(grads[domains[0]])


def _rows(grads: Grads, domains: Sequence[str], name: str) -> torch.Tensor:
    """One tensor's gradients as [D, n]: a view for StackedGrads, a temporary stack for the dict layout."""
    if isinstance(grads, StackedGrads):
        try:
            tensor = grads.tensors[name]
        except KeyError:
            raise KeyError(f"parameter {name!r} of the partition is not among the stacked gradients") from None
        return tensor.reshape(tensor.shape[0], -1)
    try:
        return torch.stack([grads[d][name].reshape(-1) for d in domains])
    except KeyError:
        raise KeyError(f"parameter {name!r} of the partition is not among the domain gradients") from None


@contextmanager
def _ieee_fp32(device: torch.device) -> Iterator[None]:
    """Full-precision fp32 matmuls on CUDA for the duration (TF32 would round the inputs to 10 mantissa bits)."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    if previous != "ieee":
        matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        if previous != "ieee":
            matmul.fp32_precision = previous


def _batched_gram(batches: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sum_b batches[b] @ batches[b].T for batches [c, D, k], accumulated in `dtype` (fp32 or fp64)."""
    if batches.dtype == dtype:
        return torch.bmm(batches, batches.transpose(1, 2)).sum(dim=0)
    if batches.is_cuda and batches.dtype in (torch.bfloat16, torch.float16) and dtype == torch.float32:
        try:  # one pass, fp32 accumulation and output, no copy
            return torch.bmm(batches, batches.transpose(1, 2), out_dtype=torch.float32).sum(dim=0)
        except (RuntimeError, TypeError):
            pass
    total = torch.zeros(batches.shape[1], batches.shape[1], dtype=dtype, device=batches.device)
    for slab in batches.split(_CONVERT_BATCHES):  # convert a few MB at a time, never the whole tensor
        wide = slab.to(dtype)
        total += torch.bmm(wide, wide.transpose(1, 2)).sum(dim=0)
    return total


def _accumulate_gram(rows: torch.Tensor, out: torch.Tensor, chunk_columns: int) -> None:
    """out [D, D] += rows [D, n] @ rows.T, accumulated in out's dtype (fp32 or fp64).

    Long rows are cut into [n // chunk_columns] column blocks multiplied as one batched matmul (a view, no
    copy): BLAS handles many short inner products far better than one [D, n] x [n, D] product with huge n,
    and the per-block partial sums make the fp32 accumulation more accurate too."""
    num_domains, n = rows.shape
    if chunk_columns > 0 and n >= 2 * chunk_columns:
        blocks = n // chunk_columns
        body = rows[:, : blocks * chunk_columns].reshape(num_domains, blocks, chunk_columns).transpose(0, 1)
        out += _batched_gram(body, out.dtype)
        rows = rows[:, blocks * chunk_columns :]
    if rows.shape[1] > 0:
        out += _batched_gram(rows.unsqueeze(0), out.dtype)


def accumulation_dtype(grads: Grads, domains: Sequence[str]) -> torch.dtype:
    """fp64 if any gradient is fp64, else fp32."""
    if isinstance(grads, StackedGrads):
        dtypes = {t.dtype for t in grads.tensors.values()}
    else:
        dtypes = {t.dtype for t in grads[domains[0]].values()}
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _device(grads: Grads, domains: Sequence[str]) -> torch.device:
    tensors = grads.tensors.values() if isinstance(grads, StackedGrads) else grads[domains[0]].values()
    return next(iter(tensors)).device


def _fits_kernels(stacked: torch.Tensor) -> bool:
    """`kernels.supports` of the [D, n] rows of a stacked buffer; a contiguous buffer (the trainer's) passes
    without building the view (this runs per tensor, twice per step)."""
    if stacked.is_contiguous():
        return stacked.dtype in kernels.DTYPES and stacked.shape[0] <= kernels.MAX_DOMAINS
    return kernels.supports(stacked.reshape(stacked.shape[0], -1))


IMPLS = ("auto", "torch", "triton")
_triton_broken = False  # set when a Triton kernel failed under impl="auto": auto uses torch from then on


def _disable_triton(error: Exception) -> None:
    global _triton_broken
    _triton_broken = True
    warnings.warn(f"mgs.surgery: Triton kernels failed ({error!r}); impl='auto' uses the torch path from now on")


def choose_impl(grads: Grads, domains: Sequence[str], impl: str = "auto") -> str:
    """"torch" or "triton" for `impl` in IMPLS: auto = triton for StackedGrads on CUDA whose every buffer the
    kernels can read (fp32/bf16/fp16, rows with unit column stride), with Triton installed; torch otherwise."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    if impl == "torch":
        return impl
    device = _device(grads, domains)
    fits = isinstance(grads, StackedGrads) and all(_fits_kernels(t) for t in grads.tensors.values())
    if impl == "auto":
        usable = fits and kernels.preferred(device) and not _triton_broken
        return "triton" if usable else "torch"
    if not kernels.available(device):
        raise RuntimeError(
            f"impl='triton' needs Triton and a CUDA device (gradients are on {device}; Triton "
            f"{'is' if kernels.triton is not None else 'is not'} installed): use impl='torch' or 'auto'"
        )
    if not fits:
        raise ValueError(
            "impl='triton' needs StackedGrads whose buffers are fp32/bf16/fp16 with contiguous rows; "
            "use impl='torch' or 'auto' for the dict layout or fp64"
        )
    return impl


def local_gramians(
    grads: Grads,
    groups: Mapping[str, Sequence[str]],
    domains: Sequence[str] | None = None,
    chunk_columns: int = GRAM_CHUNK_COLUMNS,
    impl: str = "auto",
) -> torch.Tensor:
    """This process's Gramians of every group, stacked: [num_groups, D, D] (fp32, fp64 for fp64 grads), on the
    gradients' device, in the order of `groups`. Sum them over ranks (one all-reduce) before `weights`.
    `chunk_columns`: column block of the batched Gramian matmul (torch impl; 0 = one plain matmul per tensor).
    `impl`: "auto" | "torch" | "triton" (see the module docstring)."""
    domains = grad_domains(grads, domains)
    device = _device(grads, domains)
    if choose_impl(grads, domains, impl) == "triton":
        grouped_rows = [[_rows(grads, domains, name) for name in names] for names in groups.values()]
        try:
            return kernels.gramians_triton(grouped_rows, len(domains), device)
        except Exception as error:  # a kernel that fails to compile here: auto falls back, triton raises
            if impl != "auto":
                raise
            _disable_triton(error)
    grams = torch.zeros(len(groups), len(domains), len(domains), dtype=accumulation_dtype(grads, domains), device=device)
    with _ieee_fp32(device):
        for index, names in enumerate(groups.values()):
            for name in names:
                _accumulate_gram(_rows(grads, domains, name), grams[index], chunk_columns)
    return grams


def combine(
    grads: Grads,
    groups: Mapping[str, Sequence[str]],
    coeffs: torch.Tensor,
    out: Mapping[str, torch.Tensor] | None = None,
    domains: Sequence[str] | None = None,
    impl: str = "auto",
) -> dict[str, torch.Tensor]:
    """Combined gradient of every parameter: sum_i coeffs[group, i] * g_i, with `coeffs` [num_groups, D]
    (`Weights.coeffs`). Writes into `out[name]` where given (e.g. `{n: p.grad}`; same numel, contiguous; for
    StackedGrads it may be row 0 of the stacked buffer itself, `buffer[0]`, but no other part of it),
    otherwise into new tensors shaped like the parameter. Returns `{name: combined}`.
    `impl`: "auto" | "torch" | "triton" (see the module docstring)."""
    domains = grad_domains(grads, domains)
    if coeffs.shape != (len(groups), len(domains)):
        raise ValueError(f"coeffs has shape {tuple(coeffs.shape)}; expected [num_groups={len(groups)}, D={len(domains)}]")
    out = out or {}
    combined: dict[str, torch.Tensor] = {}
    chosen = choose_impl(grads, domains, impl)
    if chosen == "triton":
        device = _device(grads, domains)
        fp32_coeffs = coeffs.to(device=device, dtype=torch.float32).contiguous()
        jobs = []
        for index, names in enumerate(groups.values()):
            for name in names:
                stacked = grads.tensors[name]
                rows = stacked.reshape(stacked.shape[0], -1)
                combined[name] = _target(name, stacked, rows, out.get(name))
                jobs.append((rows, index, combined[name]))
        done = [False] * len(jobs)
        if impl != "auto" or not _triton_broken:
            try:
                kernels.combine_many_triton(jobs, fp32_coeffs, done=done)
                return combined
            except Exception as error:  # a launch that fails (compilation) raises before it writes anything
                if impl != "auto":
                    raise
                _disable_triton(error)
        cpu_coeffs = coeffs.tolist()
        for (rows, index, target), finished in zip(jobs, done):
            if not finished:
                _combine_elementwise(cpu_coeffs[index], rows, target)
        return combined
    if isinstance(grads, StackedGrads):
        device_coeffs: dict[torch.dtype, torch.Tensor] = {}
        cpu_coeffs = coeffs.tolist()
        device = _device(grads, domains)
        with _ieee_fp32(device):
            for index, names in enumerate(groups.values()):
                for name in names:
                    stacked = grads.tensors[name]
                    if stacked.dtype not in device_coeffs:
                        device_coeffs[stacked.dtype] = coeffs.to(device=device, dtype=stacked.dtype)
                    rows = stacked.reshape(stacked.shape[0], -1)
                    target = _target(name, stacked, rows, out.get(name))
                    if rows.is_cuda or _aliases_row0(target, rows):
                        _combine_elementwise(cpu_coeffs[index], rows, target)
                    else:
                        _combine_matmul(device_coeffs[stacked.dtype][index : index + 1], rows, target)
                    combined[name] = target
        return combined
    cpu_coeffs = coeffs.tolist()
    for index, names in enumerate(groups.values()):
        for name in names:
            target = out.get(name)
            first = grads[domains[0]][name]
            if target is None:
                target = torch.empty_like(first)
            _check_target(name, target, first.numel())
            torch.mul(first.reshape(target.shape), cpu_coeffs[index][0], out=target)
            for d in range(1, len(domains)):
                target.add_(grads[domains[d]][name].reshape(target.shape), alpha=cpu_coeffs[index][d])
            combined[name] = target
    return combined


def _check_target(name: str, target: torch.Tensor, numel: int) -> None:
    if target.numel() != numel or not target.is_contiguous():
        raise ValueError(
            f"output for {name!r} must be a contiguous tensor with {numel} elements; got "
            f"{tuple(target.shape)} (contiguous={target.is_contiguous()})"
        )


def _aliases_row0(target: torch.Tensor, rows: torch.Tensor) -> bool:
    return target.data_ptr() == rows.data_ptr() and target.dtype == rows.dtype and rows.shape[1] > 0


def _target(name: str, stacked: torch.Tensor, rows: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The output tensor for one parameter: `target` checked (contiguous, right numel, not overlapping the
    stacked buffer except as exactly its row 0), or a new tensor shaped like the parameter."""
    if target is None:
        return torch.empty(stacked.shape[1:], dtype=stacked.dtype, device=stacked.device)
    _check_target(name, target, rows.shape[1])
    if rows.numel() and target.numel() and not _aliases_row0(target, rows):
        start, end = rows.data_ptr(), rows.data_ptr() + rows.numel() * rows.element_size()
        t_start = target.data_ptr()
        t_end = t_start + target.numel() * target.element_size()
        if t_start < end and start < t_end:
            raise ValueError(
                f"output for {name!r} overlaps its stacked gradient buffer; it may only be row 0 of it "
                f"(out[name] = buffer[0], same dtype) or a separate tensor"
            )
    return target


def _combine_matmul(row: torch.Tensor, rows: torch.Tensor, target: torch.Tensor) -> None:
    """row [1, D] @ rows [D, n] -> target (one read of the D rows, one write; the CPU path)."""
    flat = target.view(1, -1)
    if target.dtype == rows.dtype:
        torch.mm(row, rows, out=flat)
    else:
        flat.copy_(torch.mm(row, rows))


def _combine_elementwise(coeffs: Sequence[float], rows: torch.Tensor, target: torch.Tensor) -> None:
    """target = sum_i coeffs[i] * rows[i] as a scale and D - 1 in-place adds (2D passes over n elements). On
    CUDA this runs near copy speed where cuBLAS's [1, D] x [D, n] product does not; it is also the path where
    target is rows[0] (row 0 is scaled first, then only other rows are read)."""
    flat = target.view(-1)
    torch.mul(rows[0], coeffs[0], out=flat)
    for d in range(1, rows.shape[0]):
        flat.add_(rows[d], alpha=coeffs[d])
