"""Forgetting and rigidity of a sequential run from its stage evaluations (the paper's definitions, its numbers)."""

from __future__ import annotations

import json

import pytest
import yaml

from mgs.diagnostics import RunDir
from mgs.diagnostics.sequential import forgetting, matched_rigidity, rigidity, stages
from mgs.eval.results import SetInfo, write_eval
from mgs.eval.runner import EvalResult


def _run(root, strategy, stage_specs, evals):
    root.mkdir(parents=True)
    cfg = {"strategy": {"name": strategy, "stages": [{"domains": {d: 1.0 for d in ds}, "steps": n}
                                                     for ds, n in stage_specs]},
           "domains": [{"name": d} for ds, _ in stage_specs for d in ds], "train": {"seed": 0}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows, step = [], 0
    for ds, n in stage_specs:
        for _ in range(n):
            step += 1
            rows.append({"step": step, "stage": "+".join(ds)})
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for tag, (at_step, scores) in evals.items():
        results = {d: EvalResult({"accuracy": v}, main_metric="accuracy") for d, v in scores.items()}
        write_eval(root / "eval" / f"{tag}.json", results, {d: SetInfo(domain=d) for d in scores}, tag=tag,
                   model="m", step=at_step)
    return RunDir(root)


def test_forgetting_and_rigidity_paper_numbers(tmp_path):
    seq = _run(tmp_path / "seq", "sequential", [(["chat"], 2), (["math"], 2)],
               {"stage_1": (2, {"chat": 0.479, "math": 0.30}), "after": (4, {"chat": 0.409, "math": 0.60})})
    single = _run(tmp_path / "single", "sequential", [(["math"], 4)], {"after": (4, {"math": 0.70})})
    st = stages(seq)
    assert [(s.name, s.domains, s.last_step) for s in st] == [("chat", ["chat"], 2), ("math", ["math"], 4)]
    assert forgetting(seq) == {"chat": {"math": pytest.approx(7.0)}}
    assert rigidity(seq, {"math": single}) == {"math": pytest.approx(10.0)}
    with pytest.raises(ValueError, match="not trained"):
        rigidity(seq, {"ifeval": single})


def test_rigidity_at_equal_steps_compares_with_another_orders_first_stage(tmp_path):
    # chat -> math (2 steps each) against math -> chat: math learned from the base model reaches 60, after chat 45
    chat_first = _run(tmp_path / "cm", "sequential", [(["chat"], 2), (["math"], 2)],
                      {"stage_1": (2, {"chat": 0.50, "math": 0.10}), "after": (4, {"chat": 0.40, "math": 0.45})})
    math_first = _run(tmp_path / "mc", "sequential", [(["math"], 2), (["chat"], 2)],
                      {"stage_1": (2, {"chat": 0.20, "math": 0.60}), "after": (4, {"chat": 0.47, "math": 0.55})})
    longer = _run(tmp_path / "m4", "sequential", [(["math"], 4)], {"after": (4, {"math": 0.90})})
    got = matched_rigidity(chat_first, [chat_first, longer, math_first])
    assert set(got) == {"math"}  # the 4-step math run is not a reference for a 2-step stage
    assert got["math"].points == pytest.approx(15.0) and got["math"].reference == "mc" and got["math"].steps == 2
    assert matched_rigidity(math_first, [chat_first])["chat"].points == pytest.approx(3.0)  # 50 - 47
    assert matched_rigidity(math_first, [longer]) == {}
