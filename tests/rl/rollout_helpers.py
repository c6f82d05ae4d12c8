"""Helpers of the rollout tests (both backends): prompts of different lengths, a rig that makes a tiny random policy
end answers early, and plain per-prompt greedy `generate` as the reference."""

from __future__ import annotations

import torch

from mgs.rl.rollout import split_at_eos


QUESTIONS = ["hi", "What is 17 times 3? Answer with a number only, then stop.", "Name a colour.", "Why is the sky blue?"]


def make_eos_prone(policy, prompt_ids, step: int = 4, scale: float = 1.5):
    """Make the random model end some answers early (to exercise `finished` and padding after EOS): the EOS row
    of the (untied) LM head becomes `scale` x the row of the token that greedy decoding of the first prompt emits at
    `step`, so EOS wins wherever that token would have been the argmax."""
    [(ids, _)] = reference_greedy(policy, prompt_ids[:1], step + 1)
    head = policy.model.get_output_embeddings().weight
    with torch.no_grad():
        head[policy.tokenizer.eos_token_id] = scale * head[ids[step]]
    return policy


def reference_greedy(policy, prompt_ids, max_new_tokens):
    """Plain per-prompt generate: no padding, no batching, dynamic cache."""
    eos = policy.tokenizer.eos_token_id
    out = []
    for p in prompt_ids:
        seq = policy.model.generate(
            input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=policy.tokenizer.pad_token_id,
        )[0, len(p):].tolist()
        out.append(split_at_eos(seq, {eos}))
    return out
