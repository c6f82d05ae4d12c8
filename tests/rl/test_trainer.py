"""End to end on a tiny random model with two toy domains whose rewards vary with the output (so advantages and
gradients are non-zero and the domains conflict): every strategy runs 2 steps and writes the run directory of
docs/contracts.md; resume after step 1 equals the uninterrupted step 2; sequential switches stages on time; saved
domain gradients agree with the logged cosines."""

import json
import math

import pytest
import torch

from mgs.config import from_dict
from mgs.rl import trainer


def config(tmp_path, **sections):
    data = {
        "model": {"name": "tiny:llama"},
        "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou"}, "eval_limit": 3},
                    {"name": "digits", "kind": "toy", "params": {"chars": "0123456789 "}, "eval_limit": 3}],
        "grpo": {"group_size": 4, "prompts_per_step": 2, "kl_coef": 0.01},
        "rollout": {"max_new_tokens": 6},
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "train": {"steps": 2, "out_dir": str(tmp_path / "run"), "micro_batch_size": 4},
        "eval": {"before": False, "after": False},
        "logging": {"progress": False},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return from_dict(data)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_params(run_dir):
    ck = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip() / "trainable.pt"
    return torch.load(ck)


def test_mgs_end_to_end_run_directory(tmp_path):
    cfg = config(tmp_path, strategy={"name": "mgs"}, surgery={"granularity": "tensor"},
                 eval={"before": True, "after": True}, diagnostics={"save_domain_grads_steps": [1]})
    summary = trainer.run(cfg)
    run_dir = tmp_path / "run"
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["stage"] == "mgs"
    for r in rows:
        for d in ("vowels", "digits"):
            assert r[f"grad/{d}/norm"] > 0
            for k in ("reward_mean", "reward_std", "reward_none_frac", "response_tokens_mean", "entropy",
                      "zero_std_group_frac", "num_samples"):
                assert f"train/{d}/{k}" in r
        for k in ("train/loss", "train/kl", "train/entropy", "train/clip_frac", "train/grad_norm", "train/lr",
                  "train/skipped", "surgery/cos/digits__vowels", "surgery/conflict_frac/digits__vowels",
                  "time/rollout_s", "time/reward_s", "time/train_s", "time/surgery_s", "time/optim_s",
                  "time/step_s", "mem/domain_buffers_gb"):
            assert k in r, k
        assert r["train/new_compiled_graphs"] == 0  # train.compile resolves off on CPU: nothing compiled
    assert rows[1]["train/kl"] > 0  # the policy moved away from the reference
    for sub in ("config.yaml", "summary.json", "eval/before.json", "eval/after.json",
                "completions/step_000001.jsonl", "surgery/step_000002.json", "checkpoints/step_000002/model",
                "checkpoints/step_000002/optimizer.pt", "checkpoints/step_000002/state.json"):
        assert (run_dir / sub).exists(), sub
    comp = [json.loads(x) for x in (run_dir / "completions/step_000001.jsonl").read_text().splitlines()]
    assert len(comp) == 2 * 4 and {"uid", "domain", "prompt", "response", "reward", "advantage"} <= set(comp[0])
    assert summary["eval"]["after"]["vowels"]["metric"] == "score_mean"
    # the saved domain gradients give the logged whole-model cosine
    grads = torch.load(run_dir / "grads/step_000001.pt")
    a = torch.cat([g.flatten() for g in grads["digits"].values()]).double()
    b = torch.cat([g.flatten() for g in grads["vowels"].values()]).double()
    cos = float(a @ b / (a.norm() * b.norm()))
    assert cos == pytest.approx(rows[0]["surgery/cos/digits__vowels"], abs=1e-4)  # fp32 Gramians
    assert math.sqrt(float(a @ a)) == pytest.approx(rows[0]["grad/digits/norm"], rel=1e-5)


def test_resume_after_step_1_matches_uninterrupted(tmp_path):
    full = config(tmp_path / "full", strategy={"name": "mgs"})
    trainer.train(full)
    one = config(tmp_path / "resumed", strategy={"name": "mgs"}, train={"steps": 1})
    trainer.train(one)
    two = config(tmp_path / "resumed", strategy={"name": "mgs"})
    trainer.train(two, resume=True)
    a, b = final_params(tmp_path / "full" / "run"), final_params(tmp_path / "resumed" / "run")
    num = sum(float((a[n] - b[n]).double().pow(2).sum()) for n in a)
    den = sum(float(a[n].double().pow(2).sum()) for n in a)
    assert (num / den) ** 0.5 < 1e-5
    assert [r["step"] for r in metrics(tmp_path / "resumed" / "run")] == [1, 2]


def test_mixed_monitor_and_sequential_stages(tmp_path):
    mixed = config(tmp_path / "m", strategy={"name": "mixed"}, surgery={"monitor": True})
    trainer.train(mixed)
    rows = metrics(tmp_path / "m" / "run")
    assert all("surgery/cos/digits__vowels" in r and r["grad/vowels/norm"] > 0 for r in rows)
    seq = config(tmp_path / "s", strategy={"name": "sequential", "stages": [
        {"steps": 1, "domains": {"vowels": 1}}, {"steps": 2, "domains": {"digits": 1}}]})
    trainer.train(seq)
    rows = metrics(tmp_path / "s" / "run")
    assert [r["stage"] for r in rows] == ["vowels", "digits", "digits"]
    assert "train/vowels/reward_mean" in rows[0] and "train/digits/reward_mean" not in rows[0]
    assert "train/digits/reward_mean" in rows[2] and "train/vowels/reward_mean" not in rows[2]


def test_decode_cache_reserved_for_the_longest_training_prompt(tmp_path):
    """The graph backend's static cache is sized at the first rollout for the longest prompt of the domains the
    plan trains on (rounded to the backend's length multiple) + max_new_tokens, so it never grows mid-run."""
    from mgs.domains.template import apply_template
    from mgs.rl.model import encode_prompts

    cfg = config(tmp_path, rollout={"backend": "graph", "max_new_tokens": 6})
    run = trainer.Run(cfg)
    run.backend.length_multiple = 16
    assert run.backend._max_cache_len == 0
    lengths = [len(ids) for d in ("vowels", "digits") for ids in encode_prompts(
        run.policy.tokenizer, [apply_template(s.messages, "none") for s in run.stream(d).samples])]
    assert run.reserve_decode_cache() == max(lengths)
    expected = -(-max(lengths) // 16) * 16 + 6
    assert run.backend._max_cache_len == expected
    run.rollout(1, run.plan.stages[0])  # the first rollout reserves (again) and generates: no growth
    assert run.backend._max_cache_len == expected


def test_training_steps_do_not_recompile_the_decode_step(tmp_path, monkeypatch):
    """With the compiled decode step (graph backend) and the compiled training forward both on, later steps reuse
    the one decode graph: the training forward leaves the layers exactly as it found them, and the cache is sized
    up front. (A leftover attribute on the layers recompiled the decode step after step 1: 8 s on an H100.)"""
    import torch._inductor.config
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from mgs.rl.fast_decode import GraphDecodeBackend

    cfg = config(tmp_path, rollout={"backend": "graph", "compile": "on", "max_new_tokens": 4},
                 train={"compile": "on"}, grpo={"kl_coef": 0.0})
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1, raising=False)  # no worker pool left behind
    run = trainer.Run(cfg)
    code = GraphDecodeBackend._forward_last.__code__
    entries = []
    for step in (1, 2, 3):
        scored, _ = run.rollout(step, run.plan.stages[0])
        run.learn(scored, step, run.plan.stages[0])
        entries.append(len(_debug_get_cache_entry_list(code)))
    assert entries[0] >= 1 and entries == [entries[0]] * 3, entries
