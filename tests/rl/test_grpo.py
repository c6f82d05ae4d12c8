"""GRPO numbers against hand computations: group advantages (None rewards, zero-std groups), clipped loss with
dual clip, k3 KL, token-mean sums."""

import math

import pytest
import torch

from mgs.rl.grpo import clipped_policy_loss, group_advantages, grpo_loss_terms, kl_k3


def test_group_advantages_by_hand():
    rewards = [1, 0, 0, 0, 1, 1, 1, 1, None, 1, 0, None]
    out = group_advantages(rewards, group_size=4, eps=0.0)
    # group 1: mean 0.25, unbiased std sqrt(0.75/3) = 0.5
    assert out.advantages[:4] == pytest.approx([1.5, -0.5, -0.5, -0.5])
    # group 2: zero std -> 0, counted
    assert out.advantages[4:8] == [0.0, 0.0, 0.0, 0.0]
    # group 3: None excluded; scored [1, 0]: mean 0.5, std sqrt(0.5) -> +-0.7071
    assert out.advantages[8] is None and out.advantages[11] is None
    assert out.advantages[9:11] == pytest.approx([0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)])
    assert out.zero_std_groups == 1 and out.num_groups == 3


def test_group_advantages_eps_and_single_scored_sample():
    out = group_advantages([2.0, 0.0, None, None, None, None], group_size=2, eps=0.5)
    std = math.sqrt(2.0)  # scored [2, 0]: mean 1, unbiased std sqrt(2)
    assert out.advantages[:2] == pytest.approx([1 / (std + 0.5), -1 / (std + 0.5)])
    assert out.advantages[2:] == [None, None, None, None]
    # one group all None, one group... both zero-std groups
    assert out.zero_std_groups == 2
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0, 3.0], group_size=2)


def test_clipped_loss_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.8]]))
    old = torch.log(torch.tensor([[0.4, 0.4, 0.2]]))  # ratios 1.25, 1.25, 4
    adv = torch.tensor([[1.0, -1.0, -1.0]])
    loss, clipped = clipped_policy_loss(logp, old, adv, clip_eps=0.2, dual_clip=3.0)
    # A=+1, ratio 1.25: max(-1.25, -1.2) = -1.2 (clipped); A=-1, ratio 1.25: max(1.25, 1.2) = 1.25
    # A=-1, ratio 4: max(4, 1.2) = 4 capped by dual clip at 3
    assert loss.tolist()[0] == pytest.approx([-1.2, 1.25, 3.0], rel=1e-6)
    assert clipped.tolist()[0] == [1.0, 0.0, 0.0]
    loss_nodual, _ = clipped_policy_loss(logp, old, adv, clip_eps=0.2, dual_clip=0.0)
    assert loss_nodual[0, 2].item() == pytest.approx(4.0, rel=1e-6)


def test_k3_by_hand():
    kl = kl_k3(torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3])))
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)


def test_loss_terms_sums_and_gradient():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.2, 0.4, 0.9]])).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([2.0, -1.0])
    ref = torch.log(torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.8, 0.9]]))
    ent = torch.tensor([[1.0, 2.0, 9.0], [0.5, 0.5, 0.5]])
    t = grpo_loss_terms(logp, mask, adv, ref_logp=ref, entropy=ent, kl_coef=0.1, entropy_coef=0.01)
    # old_logp = logp.detach(): ratio 1, pg = -A per valid token: 2 tokens * -2 + 3 tokens * +1 = -1
    kl = [0.5 + math.log(2) - 1, 0.0, 0.0, 2 - math.log(2) - 1, 0.0]
    want = -1.0 + 0.1 * sum(kl) - 0.01 * (1 + 2 + 1.5)
    assert t.loss_sum.item() == pytest.approx(want, rel=1e-6)
    assert t.tokens.item() == 5 and t.pg_sum.item() == pytest.approx(-1.0)
    t.loss_sum.backward()
    # d/dlogp of -A*exp(logp - stopgrad(logp)) = -A, plus kl_coef * (1 - exp(ref - logp))
    g = logp.grad
    assert g[0, 0].item() == pytest.approx(-2 + 0.1 * (1 - 0.5), rel=1e-6)
    assert g[1, 1].item() == pytest.approx(1 + 0.1 * (1 - 2.0), rel=1e-6)
    assert g[0, 2].item() == 0.0  # masked
