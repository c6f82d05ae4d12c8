"""On a real short run (tiny random Llama, two toy domains, strategy mgs, 3 steps, domain gradients saved at step 2):
the diagnostics' cosines equal those of the saved gradients, the report shows the run's own numbers, and
`mgs eval RUN_DIR` evaluates its latest checkpoint with JSON numbers equal to its records' aggregates."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from mgs.cli import main
from mgs.diagnostics import RunDir
from mgs.diagnostics.conflict import group_rows, whole_model
from mgs.reports.build import SECTIONS
from mgs.surgery import partition


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, smollm2_tokenizer):
    from mgs.config import from_dict
    from mgs.rl.model import build_tiny_policy
    from mgs.rl.trainer import train

    out = tmp_path_factory.mktemp("run") / "mgs"
    cfg = from_dict({
        "model": {"name": "tiny:llama"},
        "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou"}, "eval_limit": 3},
                    {"name": "digits", "kind": "toy", "params": {"chars": "0123456789"}, "eval_limit": 3}],
        "strategy": {"name": "mgs"},
        "grpo": {"group_size": 2, "prompts_per_step": 4},
        "rollout": {"max_new_tokens": 6},
        "optim": {"lr": 1e-3, "weight_decay": 0.0},
        "train": {"steps": 3, "seed": 0, "out_dir": str(out), "micro_batch_size": 8},
        "logging": {"progress": False},
        "diagnostics": {"save_domain_grads_steps": [2]},
    })
    train(cfg, policy=build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer))
    return RunDir(out)


def _cos(a, b) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def test_diagnostic_cosines_equal_saved_gradients(real_run):
    assert real_run.grad_steps() == [2]
    grads = real_run.grads(2)
    groups = partition(list(grads["vowels"]), real_run.cfg("surgery.granularity"))
    rows = [r for r in group_rows(real_run) if r.step == 2]
    assert {r.group for r in rows} == set(groups)
    nonzero = 0
    for group, members in groups.items():
        a = torch.cat([grads["digits"][n].flatten() for n in members])
        b = torch.cat([grads["vowels"][n].flatten() for n in members])
        if a.norm() == 0 or b.norm() == 0:
            continue
        nonzero += 1
        (row,) = [r for r in rows if r.group == group]
        assert row.cos == pytest.approx(_cos(a, b), abs=1e-5)
        assert row.conflict == (float(a.double() @ b.double()) < 0)
    assert nonzero >= len(groups) // 2  # the toy rewards give real, non-zero policy gradients
    a = torch.cat([g.flatten() for g in grads["digits"].values()])
    b = torch.cat([g.flatten() for g in grads["vowels"].values()])
    s = whole_model(real_run)["digits__vowels"]
    assert s.cos[s.steps.index(2)] == pytest.approx(_cos(a, b), abs=1e-5)


def test_report_of_a_real_run(real_run, tmp_path):
    out = tmp_path / "rep"
    assert main(["report", str(real_run.path), "--out", str(out)]) == 0
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page and f"## {title}" in md
    assert page.count("data:image/png;base64,") >= 6
    after = json.loads((real_run.path / "eval" / "after.json").read_text())
    header = next(line for line in md.splitlines() if line.startswith("| strategy | seeds |"))
    row = next(line for line in md.splitlines() if line.startswith("| mgs | 0 |"))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    for d in ("vowels", "digits"):
        entry = after["sets"][d]
        assert entry["score"] == 100 * entry["metrics"][entry["main_metric"]]
        assert cells[d] == f"{entry['score']:.1f}"
    cos = [m["surgery/cos/digits__vowels"] for m in real_run.metrics]
    assert f"| {statistics.fmean(cos):.3f} |" in md


def test_mgs_eval_run_dir_on_a_tiny_data_dir(real_run, tmp_path):
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    (data / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "What is 4 * 4?", "answer": "#### 16"},
        {"question": "What is 9 - 1?", "answer": "#### 8"}]))
    (data / "ifeval").mkdir()
    (data / "ifeval" / "input_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma",
         "length_constraints:number_words"], "kwargs": [{}, {"relation": "less than", "num_words": 100}]},
        {"key": 2, "prompt": "Write a poem.", "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"relation": "at least", "num_words": 300}]}]))
    assert main(["eval", str(real_run.path), "--data-dir", str(data), "--benchmarks", "gsm8k,ifeval",
                 "--limit", "2", "--max-new-tokens", "6", "--samples", "2", "--tag", "bench"]) == 0
    payload = json.loads((real_run.path / "eval" / "bench.json").read_text())
    records = [json.loads(line) for line in (real_run.path / "eval" / "bench.records.jsonl").read_text().splitlines()]
    assert set(payload["sets"]) == {"gsm8k", "gsm8k@2", "ifeval"}
    assert payload["step"] == 3 and payload["model"].endswith("step_000003")
    g = [r["score"] for r in records if r["set"] == "gsm8k"]
    assert len(g) == 2 and payload["sets"]["gsm8k"]["score"] == pytest.approx(100 * sum(g) / len(g))
    assert len([r for r in records if r["set"] == "gsm8k@2"]) == 4
    ife = [r for r in records if r["set"] == "ifeval"]
    verdicts = [list(r["info"]["followed"].values()) for r in ife]
    m = payload["sets"]["ifeval"]["metrics"]
    assert m["prompt_level_strict_acc"] == pytest.approx(sum(all(v) for v in verdicts) / len(verdicts))
    assert m["inst_level_strict_acc"] == pytest.approx(sum(map(sum, verdicts)) / sum(map(len, verdicts)))
    # IFEval counts an empty/blank response as following nothing; the greedy tiny model writes only newlines
    assert sum(map(len, verdicts)) == 3 and m["num_instructions"] == 3
    assert payload["sets"]["ifeval"]["score"] == pytest.approx(100 * m["prompt_level_strict_acc"])
    assert payload["total"]["sets"] == ["gsm8k", "ifeval"]
    assert payload["total"]["value"] == pytest.approx(
        (payload["sets"]["gsm8k"]["score"] + payload["sets"]["ifeval"]["score"]) / 2)
