"""`torchrun --nproc-per-node 2 -m mgs train CONFIG train.parallel=ddp|fsdp2` end to end on CPU (gloo, tiny Llama, two
toy domains, 2 MGS steps): the run finishes, rank 0 alone writes one metrics line per step, the logged (rank-
aggregated) reward statistics equal those recomputed from the completions every rank contributed, each prompt's G
samples sit together with their group's GRPO advantages, FSDP2's rank-0-only eval does not hang, and a checkpoint
written by 2 FSDP2 ranks resumes in one plain process. Plus the launch errors (ddp without torchrun, none under a
multi-process torchrun)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mgs.rl.grpo import group_advantages

ROOT = Path(__file__).parents[2]
G = 2
CFG = {
    "model": {"name": "tiny:llama"},
    "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou"}, "eval_limit": 2},
                {"name": "digits", "kind": "toy", "params": {"chars": "0123456789"}, "eval_limit": 2}],
    "grpo": {"group_size": G, "prompts_per_step": 4, "kl_coef": 0.001},
    "rollout": {"max_new_tokens": 4},
    "optim": {"lr": 1e-3, "weight_decay": 0.0},
    "eval": {"before": False, "after": True},
    "logging": {"progress": False},
    "train": {"steps": 2},
}


def launch(tmp: Path, parallel: str, out: Path, *extra: str, nproc: int = 2) -> None:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "mgs", "train",
           str(cfg), f"train.parallel={parallel}", *extra, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"torchrun {parallel} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone printed the closing table


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launch")
    launch(tmp, "ddp", tmp / "ddp", "train.save_every=1")
    launch(tmp, "fsdp2", tmp / "fsdp2")
    return tmp


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_run_directory_and_aggregated_metrics(runs, parallel):
    run = runs / parallel
    metrics = _rows(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]  # one line per step: only rank 0 logged
    for m in metrics:
        for key in ("train/loss", "train/grad_norm", "train/lr", "grad/vowels/norm", "surgery/cos/digits__vowels",
                    "time/rollout_s", "time/step_s", "train/vowels/reward_mean", "train/digits/entropy"):
            assert key in m, key
        completions = _rows(run / "completions" / f"step_{m['step']:06d}.jsonl")
        assert len(completions) == CFG["grpo"]["prompts_per_step"] * G  # both ranks' samples
        for start in range(0, len(completions), G):  # a prompt's G samples together, advantages of their group
            group = completions[start : start + G]
            assert len({r["uid"] for r in group}) == 1
            want = group_advantages([r["reward"] for r in group], G).advantages
            assert [r["advantage"] for r in group] == pytest.approx(want, abs=1e-9)
        for d in ("vowels", "digits"):  # the rank-aggregated statistics equal the pooled ones
            rewards = [r["reward"] for r in completions if r["domain"] == d]
            mean = sum(rewards) / len(rewards)
            assert m[f"train/{d}/num_samples"] == len(rewards) == 4
            assert m[f"train/{d}/reward_mean"] == pytest.approx(mean, abs=1e-9)
            assert m[f"train/{d}/reward_std"] == pytest.approx(
                math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)), abs=1e-9)
        surgery = json.loads((run / "surgery" / f"step_{m['step']:06d}.json").read_text())
        assert surgery  # global stats, written once
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert set(summary["eval"]["after"]) == {"vowels", "digits"}  # rank 0 evaluated alone (no FSDP2 hang)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == (["step_000001", "step_000002"] if parallel == "ddp" else ["step_000002"])
    state = json.loads((run / "checkpoints" / "step_000002" / "state.json").read_text())
    assert state["format"] == "dcp" and state["world_size"] == 2 and state["step"] == 2


def test_fsdp2_checkpoint_resumes_in_one_process(runs):
    """2 FSDP2 ranks -> 1 plain process (DCP reshards on load): the trainer restores the trained weights and the data
    position, and step 3 continues the run."""
    import torch

    from mgs.config import load_config
    from mgs.dist import checkpoint as dist_checkpoint
    from mgs.rl import trainer

    run = runs / "fsdp2"
    ckpt = run / "checkpoints" / "step_000002"
    cfg = load_config(runs / "cfg.yaml", [f"train.out_dir={run}", "train.steps=3", "eval.after=false"])
    direct = trainer.Run(cfg)
    dist_checkpoint.load(ckpt, direct.model, direct.optimizer)
    resumed = trainer.Run(cfg)
    initial = {n: p.detach().clone() for n, p in resumed.model.named_parameters()}
    state = trainer._load(resumed, ckpt)
    assert state["step"] == 2 and state["world_size"] == 2
    params = dict(resumed.model.named_parameters())
    assert any(not torch.equal(initial[n], p) for n, p in params.items())  # the trained weights came back ...
    for n, p in direct.model.named_parameters():  # ... the ones the 2 ranks saved
        assert torch.equal(params[n], p), n
    summary = trainer.train(cfg, run, resume=True)
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert [m["step"] for m in _rows(run / "metrics.jsonl")] == [1, 2, 3]
    after = json.loads((run / "checkpoints" / "step_000003" / "state.json").read_text())["data"]
    assert after["vowels"][1] == state["data"]["vowels"][1] + 2  # 2 more vowels prompts drawn at step 3


def test_fsdp2_world_one_equals_one_process(tmp_path):
    """The whole distributed path at world size 1 (torchrun, FSDP2 wrap, gathered-parameter rollouts, sync schedule,
    distributed_update, metric gathering) reproduces the plain one-process run: same rollouts, same numbers."""
    from mgs.cli import main

    launch(tmp_path, "fsdp2", tmp_path / "fsdp2", "eval.after=false", nproc=1)
    assert main(["train", str(tmp_path / "cfg.yaml"), "eval.after=false", "--out", str(tmp_path / "one")]) == 0
    dist_rows, one_rows = _rows(tmp_path / "fsdp2" / "metrics.jsonl"), _rows(tmp_path / "one" / "metrics.jsonl")
    assert len(dist_rows) == len(one_rows) == 2
    for got, want in zip(dist_rows, one_rows):
        keys = [k for k, v in want.items() if isinstance(v, float) and not k.startswith(("time/", "mem/"))]
        assert set(keys) <= set(got) and "train/grad_norm" in keys and "surgery/cos/digits__vowels" in keys
        for k in keys:
            assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k


def test_launch_errors(tmp_path, monkeypatch):
    from mgs.config import load_config
    from mgs.rl import trainer

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = load_config(None, ["train.parallel=ddp", f"train.out_dir={tmp_path / 'a'}", "train.compare=[]"])
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        trainer.train(cfg)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(None, [f"train.out_dir={tmp_path / 'b'}", "train.compare=[]"])
    with pytest.raises(ValueError, match="train.parallel=ddp"):
        trainer.train(cfg)


def test_parallel_config_key():
    from mgs.config import ConfigError, load_config

    assert load_config(None, ["train.compare=[]", "train.parallel=fsdp2"]).train.parallel == "fsdp2"
    with pytest.raises(ConfigError, match=r"train.parallel: 'fsdp' is not allowed.*did you mean 'fsdp2'"):
        load_config(None, ["train.parallel=fsdp"])
    with pytest.raises(ConfigError, match="launch each strategy as its own torchrun run"):
        load_config(None, ["train.parallel=ddp", "train.compare=[mixed, mgs]"])
