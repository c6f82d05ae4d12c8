"""Sequential runs evaluate after every stage: a real 2-stage run (tiny random Llama, toy domains `vowels` then
`digits`, 1 step each) writes RUN/eval/stage_<k>_<name>.json at each stage's last step, and `mgs report` shows
forgetting of the stage-1 domain equal to (its score after stage 1 - its score after stage 2) read from those files.
Also: `train.save_final=false` leaves no final checkpoint; the closing table prints conflict fractions unsigned."""

from __future__ import annotations

import json

import pytest

from mgs.cli import main
from mgs.config import from_dict
from mgs.rl import trainer


def _config(run_dir, stages):
    return from_dict({
        "model": {"name": "tiny:llama"},
        "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou \n"}, "eval_limit": 4},
                    {"name": "digits", "kind": "toy", "params": {"chars": "0123456789 "}, "eval_limit": 4}],
        "strategy": {"name": "sequential", "stages": stages},
        "grpo": {"group_size": 4, "prompts_per_step": 2, "kl_coef": 0.0},
        "rollout": {"max_new_tokens": 6},
        "optim": {"lr": 5e-2, "weight_decay": 0.0},
        "train": {"out_dir": str(run_dir), "micro_batch_size": 8, "save_final": False},
        "eval": {"before": False, "after": True},
        "logging": {"progress": False, "save_completions": False},
    })


def test_two_stage_run_writes_stage_evals_and_report_shows_forgetting(tmp_path, smollm2_tokenizer):
    from mgs.rl.model import build_tiny_policy

    run_dir, single_dir = tmp_path / "seq", tmp_path / "single_digits"
    cfg = _config(run_dir, [{"steps": 1, "domains": {"vowels": 1}}, {"steps": 1, "domains": {"digits": 1}}])
    assert cfg.eval.each_stage  # on by default
    trainer.train(cfg, policy=build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer))

    s1 = json.loads((run_dir / "eval" / "stage_1_vowels.json").read_text())
    s2 = json.loads((run_dir / "eval" / "stage_2_digits.json").read_text())
    assert (s1["step"], s1["stage"], s2["step"], s2["stage"]) == (1, "vowels", 2, "digits")
    for payload in (s1, s2):
        assert set(payload["sets"]) == {"vowels", "digits"}
        for entry in payload["sets"].values():
            assert entry["metrics"]["num_prompts"] == 4
            assert entry["score"] == pytest.approx(100 * entry["metrics"][entry["main_metric"]])
    # greedy eval of the same weights: the last stage's eval is the after-eval
    after = json.loads((run_dir / "eval" / "after.json").read_text())
    assert after["sets"]["vowels"]["score"] == s2["sets"]["vowels"]["score"]
    forgetting = s1["sets"]["vowels"]["score"] - s2["sets"]["vowels"]["score"]
    assert forgetting != 0  # stage 2 really changed the stage-1 domain's score (the check below is not trivial)
    assert not (run_dir / "checkpoints").exists()  # train.save_final=false
    # the single-domain baseline of digits (same initial weights, 1 step) for rigidity
    trainer.train(_config(single_dir, [{"steps": 1, "domains": {"digits": 1}}]),
                  policy=build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer))
    single = json.loads((single_dir / "eval" / "after.json").read_text())

    out = tmp_path / "rep"
    assert main(["report", str(run_dir), "--out", str(out), "--baseline-single", f"digits={single_dir}"]) == 0
    md = (out / "report.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")][1:] for line in md.splitlines()
            if "| forgetting |" in line or "| rigidity |" in line]
    rigidity = single["sets"]["digits"]["score"] - s2["sets"]["digits"]["score"]
    assert rows == [["forgetting", "vowels", "digits", f"{forgetting:.1f}"],
                    ["rigidity", "digits", "single-domain run (1 step)", f"{rigidity:.1f}"]], md


def test_format_table_conflict_fraction_unsigned_cosine_signed():
    summary = {"model": "m", "model_note": "n", "eval": {"before": None, "after": None}, "train_reward": {},
               "conflicts": {"a__b": {"cos_mean": -0.25, "negative_cos_steps_frac": 1.0, "conflict_frac_mean": 0.5}},
               "steps": 1, "skipped_steps": 0, "step_s_mean": 1.0}
    lines = trainer.format_table({"mgs": summary}).splitlines()
    (cos,) = [ln for ln in lines if ln.startswith("cos a__b")]
    (frac,) = [ln for ln in lines if ln.startswith("groups conflicting a__b")]
    assert cos.split()[-1] == "-0.250" and frac.split()[-1] == "0.500"
