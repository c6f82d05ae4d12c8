"""The GQA decode attention ("mgs_sdpa") against transformers' own SDPA attention: the function on random float64
inputs (bool and additive masks, pass-through cases), and whole models: every policy load switches to it, and
greedy decoding / logits / log-probs are those of the same weights on plain "sdpa"."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from mgs.rl.attention import IMPLEMENTATION, gqa_decode_attention
from mgs.rl.fast_decode import GraphDecodeBackend
from mgs.rl.model import build_tiny_policy, encode_prompts


class _Attn(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _qkv(batch, heads, kv_heads, q_len, cache_len, head_dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=g, dtype=torch.float64)
    k = torch.randn(batch, kv_heads, cache_len, head_dim, generator=g, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, cache_len, head_dim, generator=g, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (9, 3), (8, 1)])
@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_decode_step_equals_sdpa_with_expanded_cache(heads, kv_heads, mask_kind):
    q, k, v = _qkv(5, heads, kv_heads, 1, 13)
    keep = torch.rand(5, 1, 1, 13, generator=torch.Generator().manual_seed(1)) > 0.4
    keep[..., -1] = True  # every row attends to at least its own token
    mask = keep if mask_kind == "bool" else torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, -1e30)
    module = _Attn(heads // kv_heads)
    ours, _ = gqa_decode_attention(module, q, k, v, mask, scaling=0.37)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.37)
    assert ours.shape == ref.shape == (5, 1, heads, 8)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_other_calls_pass_through_unchanged():
    module = _Attn(3)
    q, k, v = _qkv(2, 6, 2, 4, 4)  # prefill: q_len > 1, causal, no mask
    ours, _ = gqa_decode_attention(module, q, k, v, None, scaling=0.5)
    ref, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.5)
    assert torch.equal(ours, ref)


def _sdpa_twin(policy):
    twin = copy.deepcopy(policy.model)
    twin.set_attn_implementation("sdpa")
    return twin


def test_policies_load_with_it_and_give_the_same_logits(smollm2_tokenizer):
    policy = build_tiny_policy("llama", seed=3, tokenizer=smollm2_tokenizer, dtype=torch.float64)
    assert policy.model.config._attn_implementation == IMPLEMENTATION
    twin = _sdpa_twin(policy)
    # a left-padded decode step through the KV cache: the one place the two implementations take different paths
    ids = torch.randint(3, 500, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[1, :1] = 0
    out = {}
    for name, model in (("ours", policy.model), ("sdpa", twin)):
        with torch.no_grad():
            pre = model(input_ids=ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
            step = model(input_ids=ids[:, 6:], attention_mask=mask, past_key_values=pre.past_key_values, use_cache=True)
        out[name] = step.logits
    torch.testing.assert_close(out["ours"], out["sdpa"], rtol=1e-10, atol=1e-10)


def test_greedy_graph_decoding_matches_plain_sdpa(smollm2_tokenizer):
    policy = build_tiny_policy("llama", seed=5, tokenizer=smollm2_tokenizer, dtype=torch.float64)
    prompts = encode_prompts(smollm2_tokenizer, [[{"role": "user", "content": t}] for t in ("What is 2+2?", "Name a color.", "Hi")])
    kwargs = dict(num_samples=2, max_new_tokens=12, temperature=0.0, seed=0)
    ours = GraphDecodeBackend(policy.model, smollm2_tokenizer).generate(prompts, **kwargs)
    twin = _sdpa_twin(policy)
    ref = GraphDecodeBackend(twin, smollm2_tokenizer).generate(prompts, **kwargs)
    assert [c.completion_ids for c in ours] == [c.completion_ids for c in ref]
    assert any(len(c.completion_ids) > 1 for c in ours)


def test_auto_backend_is_hf_generate_on_cpu(tiny_policy):
    from mgs.rl.rollout import ROLLOUT_BACKENDS, HFGenerateBackend

    backend = ROLLOUT_BACKENDS.get("auto")(tiny_policy.model, tiny_policy.tokenizer, max_batch_size=3)
    assert isinstance(backend, HFGenerateBackend) and backend.max_batch_size == 3
