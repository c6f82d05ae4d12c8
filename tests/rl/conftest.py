"""Fixtures shared by the rollout tests of both backends (helpers in rollout_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from rollout_helpers import QUESTIONS, make_eos_prone

from mgs.rl.model import build_tiny_policy, encode_prompts


@pytest.fixture


def eos_policy(smollm2_tokenizer, prompts):
    policy = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer, tie_word_embeddings=False)
    return make_eos_prone(policy, prompts)


@pytest.fixture


def sampling_eos_policy(smollm2_tokenizer):
    """EOS row along a fixed random direction: under sampling some rows stop at once, the others never."""
    policy = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer, tie_word_embeddings=False)
    u = torch.randn(policy.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        policy.model.get_output_embeddings().weight[policy.tokenizer.eos_token_id] = 5.0 * u / u.norm()
    return policy


@pytest.fixture


def prompts(smollm2_tokenizer):
    ids = encode_prompts(smollm2_tokenizer, [[{"role": "user", "content": q}] for q in QUESTIONS])
    assert len({len(p) for p in ids}) == len(ids)  # really different lengths
    return ids
