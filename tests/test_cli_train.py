"""`mgs train` from the command line: config file + dotted overrides + --steps, the closing table, config errors
(exit 2 with the key named), refusing to overwrite a run, --help-config."""

import json

import yaml

from mgs.cli import main

CFG = {
    "model": {"name": "tiny:llama"},
    "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou"}, "eval_limit": 2},
                {"name": "digits", "kind": "toy", "params": {"chars": "0123456789"}, "eval_limit": 2}],
    "grpo": {"group_size": 2, "prompts_per_step": 2, "kl_coef": 0.0},
    "rollout": {"max_new_tokens": 4},
    "optim": {"lr": 1e-3, "weight_decay": 0.0},
    "eval": {"before": True, "after": True},
    "logging": {"progress": False},
}


def test_train_compare_prints_table(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "run"
    rc = main(["train", str(path), "train.compare=[mixed, mgs]", "surgery.monitor=true", "--steps", "1",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "mixed" in text and "mgs" in text and "eval vowels after" in text and "cos digits__vowels" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"mixed", "mgs"} and summary["mgs"]["steps"] == 1
    # both sub-runs start from the same weights: one shared before-eval
    assert summary["mixed"]["eval"]["before"] == summary["mgs"]["eval"]["before"]
    assert (out / "mgs" / "metrics.jsonl").is_file() and (out / "mixed" / "surgery" / "step_000001.json").is_file()
    assert main(["train", str(path), "train.compare=[mixed, mgs]", "--out", str(out)]) == 2  # no silent overwrite


def test_config_errors_and_reference(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG))
    assert main(["train", str(path), "surgery.granularity=modul", "--out", str(tmp_path / "x")]) == 2
    assert "surgery.granularity: 'modul' is not allowed" in capsys.readouterr().out
    assert main(["train", "--help-config"]) == 0
    assert "grpo.kl_coef (default 0.001)" in capsys.readouterr().out
