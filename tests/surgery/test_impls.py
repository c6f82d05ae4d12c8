"""The two implementations of the passes (torch, triton), the in-place combine into row 0, and impl selection.

The Triton tests run on CUDA with Triton installed, or on CPU under the Triton interpreter (TRITON_INTERPRET=1
set before the run, with triton importable); otherwise they are skipped.
"""

from __future__ import annotations

import pytest
import torch

from mgs.surgery import StackedGrads, combine, kernels, local_gramians, partition, resolve, weights
from mgs.surgery.gramian import _combine_elementwise, _combine_matmul, choose_impl
from surgery_helpers import DOMAIN_NAMES, conflicting_grads, reference, stack

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not kernels.available(torch.device(TRITON_DEVICE)), reason="needs Triton on CUDA (or TRITON_INTERPRET=1)"
)


def _assert_within(actual, expected, bound, eps):
    """|actual - expected| <= 8 eps * bound elementwise, where bound = sum_i |c_i g_i| (the size of the terms
    that cancel in a combine; rounding errors scale with it, not with the result)."""
    err = (actual.double() - expected.double()).abs()
    assert bool((err <= 8 * eps * bound.double() + 1e-300).all()), f"max error {float(err.max()):.3g}"


def _term_bound(stacked, groups, coeffs):
    absolute = StackedGrads(stacked.domains, {n: t.double().abs() for n, t in stacked.tensors.items()})
    return combine(absolute, groups, coeffs.abs(), impl="torch")


def _stacked(num_domains, dtype, device="cpu", seed=0):
    grads = conflicting_grads(num_domains, seed=seed, dtype=torch.float64)
    domains = DOMAIN_NAMES[:num_domains]
    stacked = stack(grads, domains)
    moved = {n: t.to(device=device, dtype=dtype) for n, t in stacked.tensors.items()}
    return grads, domains, StackedGrads(domains, moved)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_domains", [2, 3])
def test_combine_into_row0_of_the_buffer_matches_a_separate_output(dtype, num_domains):
    grads, domains, stacked = _stacked(num_domains, dtype, seed=20 + num_domains)
    groups = partition(list(stacked.tensors), "module")
    w = weights(local_gramians(stacked, groups), "pcgrad", seed=1, step=2)
    separate = combine(stacked, groups, w.coeffs, impl="torch")
    in_place_buffers = StackedGrads(domains, {n: t.clone() for n, t in stacked.tensors.items()})
    out = {n: t[0] for n, t in in_place_buffers.tensors.items()}
    combined = combine(in_place_buffers, groups, w.coeffs, out=out, impl="torch")
    expected = reference(grads, groups, domains, "pcgrad", [i.get("orders") for i in w.infos])
    bound = _term_bound(stacked, groups, w.coeffs)
    eps = torch.finfo(dtype).eps
    for name, tensor in combined.items():
        assert tensor.data_ptr() == in_place_buffers.tensors[name].data_ptr()
        _assert_within(tensor, separate[name], bound[name], eps * num_domains)
        if dtype == torch.float64:
            torch.testing.assert_close(tensor, expected[name].reshape(tensor.shape), atol=1e-12, rtol=1e-12)


def test_elementwise_combine_equals_matmul_combine():
    """The CUDA torch path (scale + in-place adds) against the CPU matmul path, on CPU in float64."""
    rows = torch.randn(3, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    coeffs = [0.7, -0.25, 1.5]
    a = torch.empty(1000, dtype=torch.float64)
    b = torch.empty(1000, dtype=torch.float64)
    _combine_elementwise(coeffs, rows, a)
    _combine_matmul(torch.tensor([coeffs], dtype=torch.float64), rows, b)
    exact = sum(c * r for c, r in zip(coeffs, rows))
    torch.testing.assert_close(a, exact, atol=1e-14, rtol=1e-14)
    torch.testing.assert_close(b, exact, atol=1e-14, rtol=1e-14)


def test_output_overlapping_the_buffer_elsewhere_than_row0_is_refused():
    _, domains, stacked = _stacked(2, torch.float32)
    groups = partition(list(stacked.tensors), "tensor")
    coeffs = torch.ones(len(groups), 2, dtype=torch.float64)
    out = {n: t[1] for n, t in stacked.tensors.items()}
    with pytest.raises(ValueError, match="row 0"):
        combine(stacked, groups, coeffs, out=out)


def test_impl_selection_and_errors():
    grads, domains, stacked = _stacked(2, torch.float32)
    assert choose_impl(stacked, domains, "auto") == "torch"  # CPU buffers: auto never picks the interpreter
    assert choose_impl(grads, domains, "torch") == "torch"
    with pytest.raises(ValueError, match="impl must be one of"):
        local_gramians(stacked, partition(list(stacked.tensors), "module"), impl="cublas")
    if not kernels.available(torch.device("cpu")):
        with pytest.raises(RuntimeError, match="impl='torch'"):
            local_gramians(stacked, partition(list(stacked.tensors), "module"), impl="triton")


@needs_triton
@pytest.mark.parametrize("batch_below", [1 << 22, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_domains", [2, 3, 4])
def test_triton_matches_torch_and_float64(dtype, num_domains, batch_below, monkeypatch):
    """batch_below 2^22: every test tensor goes through the table launch; 64: the larger ones get their own."""
    monkeypatch.setattr(kernels, "CONFIG", kernels.LaunchConfig(batch_below=batch_below))
    grads, domains, stacked = _stacked(num_domains, dtype, device=TRITON_DEVICE, seed=30 + num_domains)
    exact_stacked = StackedGrads(domains, {n: t.double() for n, t in stacked.tensors.items()})
    for granularity in ("module", "tensor"):
        groups = partition(list(stacked.tensors), granularity)
        fast = local_gramians(stacked, groups, impl="triton")
        slow = local_gramians(stacked, groups, impl="torch")
        exact = local_gramians(exact_stacked, groups)
        assert fast.dtype == torch.float32 and fast.shape == exact.shape and fast.is_contiguous()  # all_reduce needs it
        scale = float(exact.abs().max())
        torch.testing.assert_close(fast.double(), exact, rtol=1e-5, atol=1e-6 * scale)
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6 * scale)
        coeffs = weights(exact.cpu(), "pcgrad", seed=0, step=0).coeffs
        out = combine(stacked, groups, coeffs, impl="triton")
        truth = combine(exact_stacked, groups, coeffs)
        buffers = StackedGrads(domains, {n: t.clone() for n, t in stacked.tensors.items()})
        in_place = combine(buffers, groups, coeffs, out={n: t[0] for n, t in buffers.tensors.items()}, impl="triton")
        bound = _term_bound(stacked, groups, coeffs)
        for name in out:  # triton: fp32 math with fp32 coefficients, one rounding to the output dtype
            _assert_within(out[name], truth[name], bound[name].to(truth[name].device), torch.finfo(dtype).eps)
            torch.testing.assert_close(in_place[name], out[name], atol=0, rtol=0)
    combined, stats = resolve(stacked, impl="triton")
    assert stats.finite and all(t.dtype == dtype for t in combined.values())


@needs_triton
@pytest.mark.parametrize("batch_below", [1 << 22, 1000])
@pytest.mark.parametrize("num_domains", [2, 3])
def test_triton_gramian_of_long_and_empty_tensors(num_domains, batch_below):
    """Many column tiles per program (the strided walk), a ragged last tile, an empty tensor, an empty group;
    in the table launch and (batch_below 1000) the long tensor in a launch of its own."""
    gen = torch.Generator().manual_seed(40 + num_domains)
    long_rows = torch.randn(num_domains, 70_001, generator=gen).to(TRITON_DEVICE)
    short_rows = torch.randn(num_domains, 3, generator=gen).to(TRITON_DEVICE)
    empty_rows = torch.empty(num_domains, 0, device=TRITON_DEVICE)
    config = kernels.LaunchConfig(gram_tile_elements=256, gram_tiles_per_program=50, batch_below=batch_below)
    grams = kernels.gramians_triton([[long_rows, empty_rows], [], [short_rows]], num_domains, long_rows.device, config)
    exact = [long_rows.double() @ long_rows.double().T, torch.zeros(num_domains, num_domains, dtype=torch.float64,
             device=TRITON_DEVICE), short_rows.double() @ short_rows.double().T]
    for got, want in zip(grams, exact):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * float(exact[0].abs().max()))


def test_auto_falls_back_to_torch_when_a_kernel_fails(monkeypatch):
    """A Triton kernel that fails (e.g. does not compile on this GPU) under impl="auto": a warning, then the
    torch path, with results equal to impl="torch"; impl="triton" raises instead."""
    from mgs.surgery import gramian

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel today")

    _, domains, stacked = _stacked(3, torch.float32, seed=50)
    groups = partition(list(stacked.tensors), "module")
    expected_grams = local_gramians(stacked, groups, impl="torch")
    coeffs = weights(expected_grams, "pcgrad").coeffs
    expected = combine(stacked, groups, coeffs, impl="torch")
    monkeypatch.setattr(gramian, "_triton_broken", False)
    monkeypatch.setattr(kernels, "preferred", lambda device: True)
    monkeypatch.setattr(kernels, "available", lambda device: True)
    monkeypatch.setattr(kernels, "gramians_triton", broken)
    monkeypatch.setattr(kernels, "combine_many_triton", broken)
    assert choose_impl(stacked, domains, "auto") == "triton"
    with pytest.raises(RuntimeError, match="no kernel today"):
        local_gramians(stacked, groups, impl="triton")
    with pytest.warns(UserWarning, match="torch path"):
        grams = local_gramians(stacked, groups, impl="auto")
    torch.testing.assert_close(grams, expected_grams, rtol=0, atol=0)
    assert choose_impl(stacked, domains, "auto") == "torch"
    monkeypatch.setattr(gramian, "_triton_broken", False)
    with pytest.warns(UserWarning, match="torch path"):
        combined = combine(stacked, groups, coeffs, impl="auto")
    bound = _term_bound(stacked, groups, coeffs)
    for name in expected:  # the fallback is the elementwise combine, the CPU default a matmul: same up to rounding
        _assert_within(combined[name], expected[name], bound[name], torch.finfo(torch.float32).eps * 3)
