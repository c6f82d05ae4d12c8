"""Attention for decoding without copying the KV cache: grouped-query attention as one SDPA call per layer.

Why: transformers' SDPA path expands K and V to every query head (`repeat_kv`) whenever an attention mask is
given, and decoding a left-padded batch always has one. For SmolLM2-135M (9 query heads, 3 KV heads) that turns
each decode step into a read of the whole static cache, a write of 3x that and a read of the 3x copy, per layer:
about 30 GB of memory traffic per step at 512 rows x 384 cached tokens, most of an H100 decode step's time.

With one new token per row (q_len == 1) the query heads that share a KV head can instead be laid out as that KV
head's *queries*: q [B, H, 1, D] -> [B, H_kv, H / H_kv, D], attention against the unexpanded cache
[B, H_kv, L, D] with the row's mask [B, 1, 1, L] broadcast over heads and queries. Same numbers (each query head
attends to exactly the same keys with the same mask), no copy. Every other call (prefill, training, no GQA) goes
to transformers' own SDPA function unchanged.

Packed (padding-free) training forwards go through the same implementation: the micro-batch is ONE row [1, N] of
its samples' tokens concatenated, and the body's forward gets `packed_cu_seqlens` (int32 [S+1], the samples'
boundaries) and `packed_max_len` (an upper bound of the longest sample) as extra keyword arguments, which
transformers hands on to the attention function. Each sample then attends causally to itself only: on CUDA in
fp16/bf16 through torch's variable-length flash kernel (`torch.nn.attention.varlen.varlen_attn`), elsewhere through
one causal SDPA call per sample (exact; the reference and the CPU path). Inside `packing()` the mask builder
returns None: transformers would otherwise see the restarting position ids, build an [N, N] block mask (GBs at
N = 32k) and force a masked SDPA that the packed path never reads.

`use_gqa_decode(model)` registers this as the attention implementation "mgs_sdpa" (with SDPA's mask builder) and
switches a model that uses "sdpa" to it; models on other implementations are left alone.
"""

from __future__ import annotations

import contextlib
import inspect

import torch

IMPLEMENTATION = "mgs_sdpa"
# what a packed forward passes through the body: cu_seqlens int32 [S+1], max_len int, kernel bool (the varlen
# flash kernel, decided eagerly by `varlen_kernel_applies`: nothing inside a compiled layer inspects the device)
PACKED_KWARGS = ("packed_cu_seqlens", "packed_max_len", "packed_kernel")
_packing = False  # True inside `packing()`: the mask builder of "mgs_sdpa" returns None (a plain global: the
# compiled decode step reads it too, and dynamo guards a module global without a graph break)


def gqa_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface function. query [B, H, Tq, D], key/value [B, H_kv, L, D] ->
    (output [B, Tq, H, D], None). With `packed_cu_seqlens` in kwargs: a packed row (B = 1), see
    `packed_attention`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seqlens, max_len, kernel = (kwargs.pop(name, None) for name in PACKED_KWARGS)
    if cu_seqlens is not None:
        if attention_mask is not None:
            raise ValueError("a packed forward got an attention mask: run it inside mgs.rl.attention.packing() with "
                             "attention_mask=None (the samples' boundaries are packed_cu_seqlens)")
        return packed_attention(query, key, value, cu_seqlens, max_len, scaling=scaling, dropout=dropout,
                                kernel=bool(kernel)), None
    batch, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    plain = (
        q_len != 1 or kv_heads == heads or heads % kv_heads or dropout != 0.0
        or kwargs.get("position_bias") is not None or kwargs.get("output_attentions", False)
        or (attention_mask is not None and (attention_mask.dim() != 4 or attention_mask.shape[1] != 1))
    )
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # query head h reads KV head h // (heads / kv_heads) (transformers' repeat_kv layout)
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


_varlen: tuple = ()  # (torch's varlen_attn or None, whether it takes `enable_gqa`), loaded by `_load_varlen`


def _load_varlen() -> tuple:
    """Import torch's varlen attention once (eagerly: a compiled layer then only reads the module global)."""
    global _varlen
    if not _varlen:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            _varlen = (None, False)
        else:
            _varlen = (varlen_attn, "enable_gqa" in inspect.signature(varlen_attn).parameters)
    return _varlen


def varlen_kernel_applies(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether packed attention can run the flash varlen kernel here: CUDA (compute capability >= 8.0), fp16/bf16,
    and a torch with `torch.nn.attention.varlen`. Elsewhere it takes the exact per-sample SDPA path."""
    device = torch.device(device)
    return (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and _load_varlen()[0] is not None
            and torch.cuda.get_device_capability(device) >= (8, 0))


def packed_max_len(longest: int) -> int:
    """The `packed_max_len` to pass for a longest sample of `longest` tokens: the next power of two, >= 16. It is
    only an upper bound for the kernel's grid; a new value per micro-batch would recompile compiled layers."""
    return max(16, 1 << max(0, int(longest) - 1).bit_length())


def packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_len: int, *, scaling: float | None = None, dropout: float = 0.0,
                     kernel: bool = False) -> torch.Tensor:
    """Causal attention of each packed sample to itself. query [1, H, N, D], key/value [1, H_kv, N, D] (N = the
    samples' tokens concatenated), cu_seqlens int32 [S+1] (sample s is tokens cu[s]:cu[s+1]), max_len >= the
    longest sample -> output [1, N, H, D]. Query head h reads KV head h // (H / H_kv) (transformers' repeat_kv).
    kernel: the flash varlen kernel (only where `varlen_kernel_applies`), else one exact SDPA per sample."""
    if query.shape[0] != 1:
        raise ValueError(f"a packed forward is one row [1, N]; got a batch of {query.shape[0]}")
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} KV heads")
    if kernel:
        if dropout:
            raise ValueError("the varlen attention kernel has no dropout: call model.eval() for packed training "
                             "(or set train.pack=off)")
        varlen_attn, takes_gqa = _varlen
        if varlen_attn is None or query.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError("kernel=True needs torch's varlen attention (checked by varlen_kernel_applies) and "
                             f"fp16/bf16 inputs, got {query.dtype}")
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [N, heads, D]
        gqa = {}
        if kv_heads != heads:
            if takes_gqa:
                gqa = {"enable_gqa": True}
            else:  # torch 2.11's varlen_attn has no enable_gqa: expand K/V to the query heads
                k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, scale=scaling, window_size=(-1, 0),
                          **gqa)
        return out[None]
    return _per_sample_sdpa(query, key, value, cu_seqlens, scaling, dropout)


@torch.compiler.disable  # loops over host-side lengths: a compiled layer calls it eagerly (graph break), no guard on S
def _per_sample_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                     scaling: float | None, dropout: float) -> torch.Tensor:
    """The exact path of `packed_attention`: one causal SDPA per sample (any device and dtype)."""
    bounds = cu_seqlens.tolist()
    gqa = key.shape[1] != query.shape[1]
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, lo:hi], key[:, :, lo:hi], value[:, :, lo:hi], dropout_p=dropout, is_causal=True, scale=scaling,
        enable_gqa=gqa) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    if bounds[-1] != query.shape[2]:
        raise ValueError(f"packed_cu_seqlens ends at {bounds[-1]}, the packed row has {query.shape[2]} tokens")
    return torch.cat(parts, dim=2).transpose(1, 2)  # [1, N, H, D]


@contextlib.contextmanager
def packing():
    """Inside: the "mgs_sdpa" mask builder returns None (see the module docstring). For the body forward of a packed
    micro-batch only."""
    global _packing
    before, _packing = _packing, True
    try:
        yield
    finally:
        _packing = before


@contextlib.contextmanager
def no_packed_sequence_inference():
    """Inside: transformers does not infer packed sequences from the position ids
    (`masking_utils.find_packed_sequence_indices`, run on every forward without an attention mask), which reads a
    device tensor back (`.all()`): a host sync per forward. Our training forwards never need its answer: padded
    rows get no mask only when every row is right-padded (position ids 0..T-1: the inferred answer is "not packed"),
    and for packed rows the "mgs_sdpa" mask builder returns None inside `packing()` whatever it is given. Absent
    in a transformers version: nothing to do (tests/rl/test_step.py's meta-device test notices a new sync)."""
    from transformers import masking_utils

    before = getattr(masking_utils, "find_packed_sequence_indices", None)
    if before is None:
        yield
        return
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = before


def _mask(*args, **kwargs):
    """transformers' SDPA mask builder, except inside `packing()` (no mask: the packed kwargs carry the layout)."""
    if _packing:
        return None
    from transformers import masking_utils

    return masking_utils.sdpa_mask(*args, **kwargs)


def register() -> None:
    """Make "mgs_sdpa" a known attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, gqa_decode_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, _mask)


def use_gqa_decode(model: torch.nn.Module) -> bool:
    """Switch a model on transformers' "sdpa" to "mgs_sdpa" (True if switched). Works through peft wrappers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    base.set_attn_implementation(IMPLEMENTATION)
    return getattr(base.config, "_attn_implementation", None) == IMPLEMENTATION
