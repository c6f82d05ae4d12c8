"""Single-process tests of mgs.dist's pure parts: metric aggregation over ranks (against the pooled statistics of
the union), startup checks' errors, the prompt share, the group rule and the schedule in one process."""

import math

import pytest

from mgs.dist import DistContext, sync_schedule
from mgs.dist.checks import check_batch, check_proportions, check_same_partition, partition_checksum
from mgs.dist.data import check_groups_local, rank_share
from mgs.dist.metrics import aggregate
from mgs.rl.step import TrainSample, plan_schedule


def stats(rewards):
    mean = sum(rewards) / len(rewards)
    return mean, math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))


def test_aggregate_equals_pooled_statistics():
    r0, r1 = [0.1, 0.5, 0.9, 0.3], [0.2, 0.8]
    (m0, s0), (m1, s1), (m, s) = stats(r0), stats(r1), stats(r0 + r1)
    rank0 = ({"train/a/reward_mean": m0, "train/a/reward_std": s0, "train/a/num_samples": 4.0,
              "train/a/reward_none_frac": 0.0, "train/loss": 0.25, "train/pg_loss": 1.0, "train/a/entropy": 2.0,
              "time/train_s": 3.0, "train/grad_norm": 0.7}, {"tokens": 30.0, "tokens/a": 30.0})
    rank1 = ({"train/a/reward_mean": m1, "train/a/reward_std": s1, "train/a/num_samples": 2.0,
              "train/a/reward_none_frac": 0.0, "train/loss": -0.05, "train/pg_loss": 4.0, "train/a/entropy": 5.0,
              "time/train_s": 4.0, "train/grad_norm": 0.7}, {"tokens": 10.0, "tokens/a": 10.0})
    out = aggregate([rank0, rank1])
    assert out["train/a/reward_mean"] == pytest.approx(m)
    assert out["train/a/reward_std"] == pytest.approx(s)
    assert out["train/a/num_samples"] == 6.0
    assert out["train/loss"] == pytest.approx(0.2)
    assert out["train/pg_loss"] == pytest.approx((1.0 * 30 + 4.0 * 10) / 40)
    assert out["train/a/entropy"] == pytest.approx((2.0 * 30 + 5.0 * 10) / 40)
    assert out["time/train_s"] == 4.0 and out["train/grad_norm"] == 0.7


def test_startup_checks_say_what_to_do():
    with pytest.raises(ValueError, match="multiple of 4"):
        check_batch(10, 4)
    check_batch(12, 4)
    with pytest.raises(ValueError, match=r"domains \['chat'\] get no prompt"):
        check_proportions({"math": 3, "chat": 0}, {"math": 0.9, "chat": 0.1}, 3)
    groups = {"embed": ["model.embed_tokens.weight"], "layers.0.mlp": ["model.layers.0.mlp.up_proj.weight"]}
    assert check_same_partition(groups, DistContext.single()) == partition_checksum(groups)
    assert partition_checksum(dict(reversed(list(groups.items())))) != partition_checksum(groups)


def test_prompt_share_and_group_rule():
    ranks = [DistContext(r, 3, r, DistContext.single().device, None) for r in range(3)]
    shares = [rank_share(list(range(8)), c) for c in ranks]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5]]
    check_groups_local(["p1"] * 2 + ["p2"] * 2, 2, DistContext.single())
    with pytest.raises(ValueError, match="mix prompts"):
        check_groups_local(["p1", "p2", "p2", "p2"], 2, DistContext.single())
    with pytest.raises(ValueError, match="whole groups"):
        check_groups_local(["p1"] * 3, 2, DistContext.single())


def test_single_process_schedule_is_the_plain_schedule():
    samples = [TrainSample("b", [1], [2] * n, 0.5) for n in (1, 4, 2)] + [TrainSample("a", [1], [2, 3], -1.0)]
    assert sync_schedule(samples, ["a", "b", "c"], 2, "samples", DistContext.single()) == \
        plan_schedule(samples, ["a", "b", "c"], 2, "samples")
