"""Rollouts: the fast path (sorting by length, batching, static cache, extra left padding) gives exactly the
tokens of plain per-prompt greedy `generate`; sampling is seeded, full-distribution and leaves global RNG alone;
EOS / finished / text bookkeeping is right for prompts of different lengths."""

from __future__ import annotations

import pytest
import torch

from rollout_helpers import reference_greedy

from mgs.rl.model import build_tiny_policy
from mgs.rl.rollout import ROLLOUT_BACKENDS, HFGenerateBackend



@pytest.mark.parametrize(
    "cache,max_batch_size,length_multiple,compile",
    # compile=True on CPU: transformers doesn't compile there, but batches are filled up to a fixed row count
    [("dynamic", 3, 1, False), ("static", 3, 8, False), ("static", 16, 1, False), ("static", 5, 4, True)],
)
def test_fast_path_greedy_equals_per_prompt_generate(
    eos_policy, prompts, cache, max_batch_size, length_multiple, compile
):
    max_new_tokens = 12
    ref = reference_greedy(eos_policy, prompts, max_new_tokens)
    assert {f for _, f in ref} == {True, False}  # the case mix we want: some stop early, some run out
    backend = HFGenerateBackend(
        eos_policy.model, eos_policy.tokenizer, max_batch_size=max_batch_size,
        cache_implementation=cache, length_multiple=length_multiple, compile=compile,
    )
    got = backend.generate(prompts, num_samples=2, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    assert [c.prompt_index for c in got] == [0, 0, 1, 1, 2, 2, 3, 3]
    for c in got:
        ids, finished = ref[c.prompt_index]
        assert c.prompt_ids == prompts[c.prompt_index]
        assert (c.completion_ids, c.finished) == (ids, finished)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_completion_bookkeeping(eos_policy, sampling_eos_policy, prompts, temperature):
    policy = eos_policy if temperature == 0.0 else sampling_eos_policy
    tok = policy.tokenizer
    backend = HFGenerateBackend(policy.model, tok, max_batch_size=5)
    got = backend.generate(prompts, num_samples=3, max_new_tokens=10, temperature=temperature, seed=1)
    assert len(got) == 12 and [c.prompt_index for c in got] == [i for i in range(4) for _ in range(3)]
    assert any(c.finished for c in got) and any(not c.finished for c in got)
    for c in got:
        assert c.completion_ids, "a completion has at least one token"
        if c.finished:
            assert c.completion_ids[-1] == tok.eos_token_id and tok.eos_token_id not in c.completion_ids[:-1]
            assert len(c.completion_ids) <= 10
        else:
            assert len(c.completion_ids) == 10 and tok.eos_token_id not in c.completion_ids
        assert tok.pad_token_id not in c.completion_ids
        assert c.text == tok.decode(c.completion_ids, skip_special_tokens=True)
        assert "<|im_end|>" not in c.text


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny_policy, prompts):
    backend = HFGenerateBackend(tiny_policy.model, tiny_policy.tokenizer, max_batch_size=3)
    torch.manual_seed(123)
    a = backend.generate(prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=7)
    after = torch.rand(3)
    torch.manual_seed(123)
    b = backend.generate(prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=7)
    assert torch.equal(after, torch.rand(3))  # global RNG stream unaffected by generation
    c = backend.generate(prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=8)
    ids = lambda cs: [x.completion_ids for x in cs]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert ids(a)[0] != ids(a)[1]  # the samples of one prompt differ


def test_samples_from_full_distribution_and_top_p(tiny_policy, prompts):
    """transformers' default top_k=50 would confine samples to the 50 likeliest tokens; RL needs the full
    distribution. A tiny random model is almost uniform over 49k tokens, so full sampling lands outside the top 50."""
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    backend = HFGenerateBackend(model, tok, max_batch_size=64)
    got = backend.generate(prompts[:1], num_samples=32, max_new_tokens=1, temperature=1.0, seed=0)
    with torch.no_grad():
        logits = model(torch.tensor([prompts[0]])).logits[0, -1]
    ranks = [(logits > logits[c.completion_ids[0]]).sum().item() for c in got]
    assert max(ranks) > 50
    # top_p tiny -> only the top token survives -> greedy
    nucleus = backend.generate(prompts, num_samples=2, max_new_tokens=5, temperature=1.0, top_p=1e-6, seed=0)
    greedy = backend.generate(prompts, num_samples=2, max_new_tokens=5, temperature=0.0, seed=0)
    assert [c.completion_ids for c in nucleus] == [c.completion_ids for c in greedy]


def test_train_mode_restored_and_errors(tiny_policy, prompts):
    tiny_policy.model.train()
    backend = ROLLOUT_BACKENDS.get("hf")(tiny_policy.model, tiny_policy.tokenizer, max_batch_size=4)
    backend.generate(prompts[:1], num_samples=1, max_new_tokens=2, temperature=1.0, seed=0)
    assert tiny_policy.model.training
    assert backend.generate([], num_samples=2, max_new_tokens=2, temperature=1.0, seed=0) == []
    with pytest.raises(ValueError, match="empty prompt"):
        backend.generate([[]], num_samples=1, max_new_tokens=2, temperature=1.0, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        backend.generate(prompts, num_samples=1, max_new_tokens=2, temperature=-1.0, seed=0)
    with pytest.raises(ValueError, match="cache_implementation"):
        HFGenerateBackend(tiny_policy.model, tiny_policy.tokenizer, cache_implementation="paged")
    with pytest.raises(KeyError, match="choose from"):
        ROLLOUT_BACKENDS.get("vllm")


def test_batches_sorted_by_length(tiny_policy):
    backend = HFGenerateBackend(tiny_policy.model, tiny_policy.tokenizer, max_batch_size=2)
    assert backend.plan_batches([3, 9, 5, 9, 1]) == [[1, 3], [2, 0], [4]]
    backend.max_batch_size = 4
    assert backend.plan_batches([3, 9, 5, 9, 1]) == [[1, 3, 2], [0, 4]]  # balanced, not [4 rows, 1 row]
    assert backend.cache_implementation == "dynamic" and not backend.compile and backend.length_multiple == 1


def test_peft_and_gradient_checkpointing_policies_generate_the_same_greedy_tokens(smollm2_tokenizer, prompts):
    """LoRA starts as the identity (B = 0) and checkpointing changes no numbers: all three decode alike, also when
    the policy is left in train mode by the trainer."""
    outs = []
    for kwargs in [{}, {"lora": {"r": 2, "alpha": 4}}, {"gradient_checkpointing": True}]:
        policy = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer, **kwargs)
        policy.model.train()
        backend = HFGenerateBackend(policy.model, policy.tokenizer, max_batch_size=4)
        outs.append([c.completion_ids for c in backend.generate(
            prompts, num_samples=1, max_new_tokens=5, temperature=0.0, seed=0
        )])
        assert policy.model.training
    assert outs[0] == outs[1] == outs[2]


def test_cuda_batch_rows_sized_by_kv_cache(tiny_policy):
    """The CUDA default (one batch when it fits): rows = share of free memory / (KV bytes per token x cache len)."""
    cfg = tiny_policy.model.config
    backend = HFGenerateBackend(tiny_policy.model, tiny_policy.tokenizer, kv_memory_fraction=0.5)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 4  # float32 K and V
    assert backend.kv_bytes_per_token() == per_token
    assert backend.fit_batch_rows(cache_len=100, free_bytes=2 * 100 * per_token * 7) == 7  # half of 14 rows
    assert backend.fit_batch_rows(cache_len=100, free_bytes=10) == 1
    assert backend.fit_batch_rows(cache_len=1, free_bytes=1 << 40) == backend.max_batch_size == 32  # CPU cap
    assert not backend.auto_batch  # CPU: the fixed default, no memory probing
    with pytest.raises(ValueError, match="kv_memory_fraction"):
        HFGenerateBackend(tiny_policy.model, tiny_policy.tokenizer, kv_memory_fraction=0.0)
