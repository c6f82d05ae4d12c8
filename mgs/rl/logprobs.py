"""Per-token log-probabilities (and entropies) of completions under a policy, memory-lean and differentiable.

The naive way (full logits -> float32 log_softmax -> gather) materialises [B, T, V] floats: for a 49k vocabulary
that is the largest tensor of an RL step. Here the transformer body runs once, then only the completion
positions go through the LM head, in chunks of `chunk_tokens` tokens, each chunk reduced to (logp, entropy) with
a float32 logsumexp. Under autograd each chunk is checkpointed, so backward recomputes its logits instead of
keeping them. `build_batch` turns `Completion`s into right-padded (prompt + completion) tensors, sorted by length.

Where the tokens sit (`_layout`) is worked out on the CPU, from the CPU batch, and uploaded to the model's device
in one non-blocking copy from pinned memory: deriving it on the GPU (nonzero, masks, .max()) and copying pageable
tensors each block the host until the GPU catches up, ~12 times per micro-batch, which on an H200 left the GPU
idle for ~60 ms of every micro-batch of a 135M model (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from mgs.rl.attention import no_packed_sequence_inference
from mgs.rl.model import model_device
from mgs.rl.rollout import Completion


def _body_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder body returning hidden states, LM head) of an HF causal LM, also when wrapped by peft."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if body is None or head is None:
        raise TypeError(
            f"{type(base).__name__} doesn't expose a decoder body and an LM head (get_decoder / "
            "get_output_embeddings); token_logprobs needs an HF causal LM"
        )
    return body, head


def _wrapped(model: torch.nn.Module) -> bool:
    """DDP / FSDP2 wrappers must be called as a whole (their hooks sync or unshard parameters)."""
    return isinstance(model, torch.nn.parallel.DistributedDataParallel) or type(model).__name__.startswith("FSDP")


_COMPILED_LAYER_CALL: list[Any] = []
_ABSENT = object()
_COMPILED_CHUNK: list[Any] = []


def _decoder_layers(body: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The repeated blocks of a decoder body: its longest ModuleList child (`layers` in Llama/Qwen/Mistral/Gemma,
    `h` in GPT-2)."""
    lists = [m for m in body.children() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len, default=None)


@contextlib.contextmanager
def _compiled_layers(body: torch.nn.Module):
    """Inside: every decoder layer of `body` runs through ONE `torch.compile(dynamic=True)` of nn.Module's call
    (the layers share code, their parameters are graph inputs): one small graph compiles once (~12 s for
    SmolLM2's block on a 2-core CPU) and serves every layer and micro-batch shape, where compiling the unrolled
    30-layer body took ~160 s. It fuses the elementwise chains (RMSNorm in float32, rotary, SiLU x up) that,
    eager, are most of a training step's GPU time and ~17k kernel launches per 130k tokens (profiled on an H100:
    docs/performance.md). Only this forward is affected (the decode graph and other callers see plain layers);
    the backward built inside runs the compiled backward later."""
    layers = _decoder_layers(body)
    if layers is None or not len(layers):
        yield
        return
    if not _COMPILED_LAYER_CALL:
        _COMPILED_LAYER_CALL.append(torch.compile(torch.nn.Module._call_impl, dynamic=True))
    call = _COMPILED_LAYER_CALL[0]
    before = [layer.__dict__.get("_compiled_call_impl", _ABSENT) for layer in layers]
    try:
        for layer in layers:
            layer._compiled_call_impl = functools.partial(call, layer)
        yield
    finally:  # restore exactly (absent stays absent): torch.compile of the decode step guards on the layers' dicts,
        # and a leftover `_compiled_call_impl = None` recompiled it after every first training step
        for layer, old in zip(layers, before):
            if old is _ABSENT:
                layer.__dict__.pop("_compiled_call_impl", None)
            else:
                layer._compiled_call_impl = old


def compiled_graphs() -> int:
    """How many distinct graphs torch.compile has built in this process so far (all callers). A training step
    that raises it recompiled: a new shape regime broke a guard (e.g. a micro-batch under a size threshold), which
    costs about a second on a GPU and is otherwise invisible in the step time."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compiled_chunk() -> Any:
    """The LM-head chunk reduction (float32 cast, logsumexp, gather, softmax, entropy) as one compiled function."""
    if not _COMPILED_CHUNK:
        _COMPILED_CHUNK.append(torch.compile(_chunk_logp_entropy, dynamic=True))
    return _COMPILED_CHUNK[0]


def _body_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """None when every row is right-padded (ones, then zeros): causal attention alone is then exact on the real
    tokens (padding only ever sits after them), and SDPA can take its flash / GQA path instead of expanding K and V
    for a mask. Otherwise the mask itself."""
    lengths = attention_mask.sum(dim=1, keepdim=True)
    prefix = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :] < lengths
    return None if torch.equal(attention_mask.bool(), prefix) else attention_mask


@dataclass
class _Layout:
    """Where the completion tokens of right-padded rows [B, T] sit, as device tensors plus host-side sizes.

    Tc: completion columns (T - min start); b_idx, j_idx [N]: row and column of each real completion token in the
    [B, Tc] output; pos [N]: its position in its row; targets [N]: the token. Padded body: input_ids, and mask
    (None when causal attention alone is exact: `_body_mask`). Packed body: flat_ids, positions [1, M] (real
    tokens concatenated row by row), hidden_idx [N] (the packed position that predicts each target), cu_seqlens
    [S+1] int32, max_len."""

    Tc: int
    b_idx: torch.Tensor
    j_idx: torch.Tensor
    pos: torch.Tensor
    targets: torch.Tensor
    input_ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    flat_ids: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    hidden_idx: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    max_len: int = 0


def upload(tensors: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU tensors -> the same on `device` in one non-blocking copy from pinned memory (per dtype), which does not
    wait for the GPU (a plain `.to(device)` of pageable memory synchronises the stream). CPU device: unchanged.
    Other devices (meta, in the tests) get a plain copy: pinned memory is a CUDA thing."""
    device = torch.device(device)
    if device.type == "cpu" or not tensors:
        return list(tensors)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx])
        on_device = (flat.pin_memory() if device.type == "cuda" else flat).to(device, non_blocking=True)
        offset = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = on_device[offset : offset + n].view(tensors[i].shape)
            offset += n
    return out  # type: ignore[return-value]


def _layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int | torch.Tensor, *, packed: bool,
            device: torch.device) -> _Layout:
    """The token layout, computed on the CPU (the inputs are moved there first if they are not: one sync) and
    uploaded in one go (`upload`)."""
    input_ids, attention_mask = input_ids.cpu(), attention_mask.cpu()
    B, T = input_ids.shape
    start_b = torch.full((B,), int(start), dtype=torch.long) if not torch.is_tensor(start) else start.cpu().long()
    if start_b.shape != (B,) or int(start_b.min()) < 1 or int(start_b.max()) > T:
        raise ValueError(f"start must be an int or [B] tensor with 1 <= start <= T={T}, got {start}")
    Tc = T - int(start_b.min())
    # target (b, j) is token start[b] + j, predicted from the position one earlier
    cols = start_b[:, None] + torch.arange(Tc)[None, :]  # [B, Tc]
    in_range = cols < T
    cols_c = cols.clamp(max=T - 1)
    valid = in_range & attention_mask.gather(1, cols_c).bool()  # [B, Tc]
    b_idx, j_idx = valid.nonzero(as_tuple=True)
    pos = cols[b_idx, j_idx]
    targets = input_ids[b_idx, pos]  # [N]
    if not packed:
        mask = _body_mask(attention_mask)
        extra = [input_ids] + ([mask] if mask is not None else [])
        b_idx, j_idx, pos, targets, *rest = upload([b_idx, j_idx, pos, targets, *extra], device)
        return _Layout(Tc, b_idx, j_idx, pos, targets, input_ids=rest[0], mask=rest[1] if len(rest) > 1 else None)
    if _body_mask(attention_mask) is not None:
        raise ValueError("packed token_logprobs needs right-padded rows (ones, then zeros); build them with build_batch")
    lengths = attention_mask.sum(dim=1)  # [B]
    offsets = torch.cumsum(lengths, 0) - lengths  # where row b starts in the packed row
    real = attention_mask.bool()
    flat_ids = input_ids[real][None]  # [1, M], row-major: row 0's tokens, then row 1's, ...
    positions = torch.arange(T).expand_as(input_ids)[real][None]
    kept = lengths[lengths > 0]  # empty rows take no place in the packed row
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(kept, 0), (1, 0)).to(torch.int32)  # [S+1]
    hidden_idx = offsets[b_idx] + pos - 1  # [N]
    max_len = int(lengths.max())
    b_idx, j_idx, pos, targets, flat_ids, positions, hidden_idx, cu_seqlens = upload(
        [b_idx, j_idx, pos, targets, flat_ids, positions, hidden_idx, cu_seqlens], device)
    return _Layout(Tc, b_idx, j_idx, pos, targets, flat_ids=flat_ids, positions=positions, hidden_idx=hidden_idx,
                   cu_seqlens=cu_seqlens, max_len=max_len)


def _packed_body(body: torch.nn.Module, layout: _Layout) -> torch.Tensor:
    """The body on the real tokens of right-padded rows packed into one row [1, M] (`_layout`), position ids
    restarting at 0 per row, attention kept within each row (mgs.rl.attention's packed kwargs, no mask built).
    Returns hidden [1, M, H]."""
    from mgs.rl.attention import IMPLEMENTATION, PACKED_KWARGS, packed_max_len, packing, varlen_kernel_applies

    impl = getattr(getattr(body, "config", None), "_attn_implementation", None)
    if impl != IMPLEMENTATION:
        raise ValueError(f"packed token_logprobs needs the {IMPLEMENTATION!r} attention (mgs.rl.attention."
                         f"use_gqa_decode; load_policy sets it), this model uses {impl!r}: set train.pack=off")
    weight = body.get_input_embeddings().weight  # the layers' dtype (varlen kernel: CUDA fp16/bf16 only)
    kernel = varlen_kernel_applies(weight.device, weight.dtype)
    extra = dict(zip(PACKED_KWARGS, (layout.cu_seqlens, packed_max_len(layout.max_len), kernel)))
    with packing():
        return body(input_ids=layout.flat_ids, attention_mask=None, position_ids=layout.positions, use_cache=False,
                    **extra).last_hidden_state


def _chunk_logp_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [N, H], targets [N] -> (logp [N], entropy [N]) in float32 (float64 for float64 hidden)."""
    return _logits_logp_entropy(torch.nn.functional.linear(hidden, weight, bias), targets, temperature)


def _logits_logp_entropy(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V] (any float dtype), targets [N] -> (logp [N], entropy [N]) in float32, or float64 for float64
    logits (a float64 model's exact reference stays exact)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    probs = torch.softmax(logits, dim=-1)
    entropy = lse - (probs * logits).sum(-1)
    return logp, entropy


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    start: int | torch.Tensor,
    return_entropy: bool = True,
    entropy_grad: bool = False,
    chunk_tokens: int = 2048,
    temperature: float = 1.0,
    via_forward: bool | None = None,
    compile: bool = False,
    packed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each token from position `start` on, given the tokens before it.

    input_ids, attention_mask [B, T]: right-padded sequences (prompt + completion), best on the CPU: the token
    layout is worked out there and uploaded without a host sync (on the model's device they are copied back first).
    start: int (same completion start for every row) or LongTensor [B] (per-row start = prompt length).
    Returns logp [B, Tc] float32 (float64 for a float64 model) with Tc = T - min(start); column j of row b is the token at position start[b] + j;
    positions past the row's end or on padding are 0. entropy [B, Tc] (of the next-token distribution at the same
    places; detached, a diagnostic, unless `entropy_grad` is set for an entropy bonus in the loss) or None.
    `temperature` divides the logits (match the sampling temperature).
    Gradients flow into logp.

    via_forward: call the model as a whole with `logits_to_keep` (materialises the [B, Tc+1, V] logits of the
    completion span in the model dtype, then reduces them in float32 chunks) instead of body + chunked head.
    Default: only for DDP / FSDP2-wrapped models, whose forward hooks must run.
    compile: run the decoder layers and the LM-head chunks through `torch.compile` (`_compiled_layers`; dynamic
    shapes: compiled once). Ignored on the `via_forward` path; not for models with gradient checkpointing (its
    recomputation would run the plain layers). Same values up to float round-off (fused kernels reorder sums).
    packed: run the body on the real tokens only, concatenated into one row [1, N] (`_packed_body`), instead of the
    padded [B, T]: compute and memory follow the tokens, not rows x longest. Same outputs and layout. Needs
    right-padded rows and a model on the "mgs_sdpa" attention (mgs.rl.attention); ignored on the `via_forward`
    path (DDP / FSDP2 models keep padding).
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must be [B, T]")
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    B = input_ids.shape[0]
    device = model_device(model)
    use_forward = via_forward if via_forward is not None else _wrapped(model)
    if use_forward and packed:
        packed = False  # DDP / FSDP2 models keep padding
    lay = _layout(input_ids, attention_mask, start, packed=packed, device=device)
    T = input_ids.shape[1]

    with no_packed_sequence_inference():
        logp_parts, ent_parts = _forward_chunks(model, lay, T, use_forward, packed, compile, chunk_tokens, temperature,
                                                entropy_grad)
    return _scatter(logp_parts, ent_parts, lay, B, device, return_entropy)


def _forward_chunks(model: torch.nn.Module, lay: _Layout, T: int, use_forward: bool, packed: bool, compile: bool,
                    chunk_tokens: int, temperature: float, entropy_grad: bool
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """token_logprobs' forward: (logp, entropy) of the completion tokens in chunks of `chunk_tokens`."""
    Tc, b_idx, pos, targets = lay.Tc, lay.b_idx, lay.pos, lay.targets
    logp_parts, ent_parts = [], []
    if use_forward:
        keep = Tc + 1  # logits of positions T-keep .. T-1; the first completion token is predicted at min(start)-1
        logits = model(
            input_ids=lay.input_ids, attention_mask=lay.mask, use_cache=False, logits_to_keep=keep
        ).logits  # [B, keep, V]
        rows = logits[b_idx, pos - 1 - (T - logits.shape[1])]  # [N, V]
        for s in range(0, rows.shape[0], chunk_tokens):
            lp, ent = _logits_logp_entropy(rows[s : s + chunk_tokens], targets[s : s + chunk_tokens], temperature)
            logp_parts.append(lp)
            ent_parts.append(ent if entropy_grad else ent.detach())
    else:
        body, head = _body_and_head(model)
        chunk_fn = _compiled_chunk() if compile else _chunk_logp_entropy
        with _compiled_layers(body) if compile else contextlib.nullcontext():
            if packed:
                h = _packed_body(body, lay)[0, lay.hidden_idx]  # [N, H]
            else:
                hidden = body(input_ids=lay.input_ids, attention_mask=lay.mask, use_cache=False).last_hidden_state
                h = hidden[b_idx, pos - 1]  # [N, H]
        weight, bias = head.weight, getattr(head, "bias", None)
        use_ckpt = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
        for s in range(0, h.shape[0], chunk_tokens):
            args = (h[s : s + chunk_tokens], weight, bias, targets[s : s + chunk_tokens], temperature)
            if use_ckpt:  # backward recomputes this chunk's logits instead of keeping [chunk, V] floats alive
                lp, ent = checkpoint(chunk_fn, *args, use_reentrant=False)
            else:
                lp, ent = chunk_fn(*args)
            logp_parts.append(lp)
            ent_parts.append(ent if entropy_grad else ent.detach())
    return logp_parts, ent_parts


def _scatter(logp_parts: list[torch.Tensor], ent_parts: list[torch.Tensor], lay: _Layout, B: int,
             device: torch.device, return_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The flat per-token chunks back into [B, Tc] (zeros off the completion tokens)."""
    Tc, b_idx, j_idx = lay.Tc, lay.b_idx, lay.j_idx
    flat_logp = torch.cat(logp_parts) if logp_parts else torch.zeros(0, dtype=torch.float32, device=device)
    logp = torch.zeros(B, Tc, dtype=flat_logp.dtype, device=device).index_put((b_idx, j_idx), flat_logp)
    entropy = None
    if return_entropy:
        flat_ent = torch.cat(ent_parts) if ent_parts else flat_logp.detach()
        entropy = torch.zeros(B, Tc, dtype=flat_ent.dtype, device=device).index_put((b_idx, j_idx), flat_ent)
    return logp, entropy


@dataclass
class CompletionBatch:
    """Right-padded (prompt + completion) rows; row i is `completions[order[i]]`.

    input_ids, attention_mask [B, T]; start [B] (prompt lengths: the completion of row b starts at start[b]);
    completion_mask [B, Tc] (1 on completion tokens, aligned with `token_logprobs(..., start=start)` output);
    order [B] the permutation applied (sorted by total length, longest first).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    start: torch.Tensor
    completion_mask: torch.Tensor
    order: list[int]

    def to(self, device: torch.device | str) -> "CompletionBatch":
        return CompletionBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.start.to(device),
            self.completion_mask.to(device), self.order,
        )


def build_batch(
    completions: Sequence[Completion], *, pad_token_id: int, sort_by_length: bool = True
) -> CompletionBatch:
    """Stack completions into one right-padded batch (on CPU; `.to(device)` it). Completions with no tokens are
    allowed (their mask row is all 0)."""
    if not completions:
        raise ValueError("build_batch needs at least one completion")
    lengths = [len(c.prompt_ids) + len(c.completion_ids) for c in completions]
    order = sorted(range(len(completions)), key=lambda i: (-lengths[i], i)) if sort_by_length else list(range(len(completions)))
    prompt_lens = [len(completions[i].prompt_ids) for i in order]
    if min(prompt_lens) == 0:
        raise ValueError("a completion has an empty prompt; token_logprobs needs >= 1 prompt token to condition on")
    T = max(lengths)
    Tc = T - min(prompt_lens)
    B = len(order)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    completion_mask = torch.zeros((B, Tc), dtype=torch.long)
    for row, i in enumerate(order):
        c = completions[i]
        ids = list(c.prompt_ids) + list(c.completion_ids)
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        completion_mask[row, : len(c.completion_ids)] = 1
    return CompletionBatch(input_ids, attention_mask, torch.tensor(prompt_lens, dtype=torch.long), completion_mask, order)


def plan_micro_batches(lengths: Sequence[int], max_tokens: int,
                       overhead_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into micro-batches, each a run of the longest-first order whose padded size rows x max_len
    stays <= max_tokens (a single over-long sequence gets a group of its own), choosing the runs that minimise
    padded tokens + `overhead_tokens` per micro-batch (the fixed cost of a forward/backward, in tokens; default
    max_tokens // 4). Filling each micro-batch up to the budget instead (greedy) pads a long-tailed batch heavily:
    its first micro-batch takes the longest rows and many much shorter ones. Dynamic programming over the sorted
    order, O(n x rows per micro-batch) with numpy."""
    import numpy as np

    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    overhead = max_tokens // 4 if overhead_tokens is None else int(overhead_tokens)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    n = len(order)
    sorted_len = np.array([lengths[i] for i in order], dtype=np.int64)
    cost = np.zeros(n + 1, dtype=np.int64)
    start = np.zeros(n + 1, dtype=np.int64)  # start[j]: first index of the micro-batch ending before j
    lo = 0
    for j in range(1, n + 1):
        # group [i, j) is padded to sorted_len[i]; (j - i) x sorted_len[i] grows as i falls, so valid i are a range
        while lo < j - 1 and (j - lo) * sorted_len[lo] > max_tokens:
            lo += 1
        i = np.arange(lo, j)
        candidates = cost[lo:j] + (j - i) * sorted_len[lo:j] + overhead
        best = int(np.argmin(candidates))  # the first minimum: the largest micro-batch among equals
        cost[j], start[j] = candidates[best], lo + best
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[int(start[j]) : j])
        j = int(start[j])
    return groups[::-1]


def forward_tokens(lengths: Sequence[int], packed: bool) -> int:
    """Tokens one forward of a micro-batch with these sequence lengths runs (what a token budget counts): their sum
    packed, rows x longest padded."""
    return sum(lengths) if packed else len(lengths) * max(lengths, default=0)


def plan_packed_micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into packed micro-batches (`token_logprobs(..., packed=True)`): a packed micro-batch costs
    its tokens, not rows x longest, so the best plan is the fewest micro-batches with sum(lengths) <= max_tokens
    each (a single over-long sequence gets a group of its own). First-fit decreasing: longest first, each into the
    first group it fits. Optimal whenever every sequence is short next to the budget (the RL case: a few hundred
    tokens against tens of thousands) and never worse than 11/9 of the optimum + 1 in general. Groups come out
    in first-fit order, each longest first."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    groups: list[list[int]] = []
    room: list[int] = []  # tokens each group can still take
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = int(lengths[i])
        g = next((k for k, r in enumerate(room) if n <= r), None)
        if g is None:
            groups.append([i])
            room.append(max_tokens - n)  # negative for an over-long sequence: nothing joins it
        else:
            groups[g].append(i)
            room[g] -= n
    return groups
