"""The experiment launcher of experiments/smollm2-3domain: the matrix has equal compute for every strategy (checked
through mgs's own config loading and strategy plans), --dry-run prints the exact commands, a re-invocation resumes
from the files alone, and one real CPU run (tiny random Llama, the experiment's real domains on a tiny data folder)
goes through train + eval + collect + report with the report's table equal to the eval files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXP = REPO / "experiments" / "smollm2-3domain"


@pytest.fixture(scope="module")
def launcher():
    spec = importlib.util.spec_from_file_location("smollm2_3domain_run", EXP / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _settings(launcher, tmp_path, steps=30, **kw):
    return launcher.Settings(config=EXP / "config.yaml", data_dir=tmp_path / "data", runs_dir=tmp_path / "runs",
                             results_dir=tmp_path / "results", steps=steps, **kw)


ALL = ["math-only", "ifeval-only", "chat-only", "seq-a", "seq-b", "mixed", "pcgrad-global", "mgs-module", "mgs-tensor"]


def test_matrix_has_equal_compute_and_the_right_overrides(launcher, tmp_path):
    from mgs.config import load_config

    _tiny_data(tmp_path / "data")  # the trainers' own benchmark eval (eval.benchmarks) checks its files at load
    s = _settings(launcher, tmp_path, steps=31)  # 31 = 11 + 10 + 10: unequal stage sizes, equal totals
    assert list(launcher.strategy_overrides(launcher.config_domains(s.config), s.steps)) == ALL
    specs = launcher.build_matrix(s, ALL, [0, 1])
    assert [sp.name for sp in specs[:2]] == ["math-only-s0", "math-only-s1"] and len(specs) == 18
    config = launcher.resolved_config(s)
    per_run = {sp.name: launcher.rollouts_and_updates(config, sp) for sp in specs}
    assert set(per_run.values()) == {(31 * 24 * 8, 31)}  # steps x prompts x G completions, 31 updates, every run
    assert launcher.check_equal_compute(config, specs) == (31 * 24 * 8, 31)

    cfgs = {sp.name: load_config(str(config), sp.overrides) for sp in specs}
    for c in cfgs.values():  # every run evaluates the benchmarks in its trainer, with mgs eval's settings
        assert c.eval.benchmarks == ("gsm8k", "math500", "ifeval", "alpaca_eval")
        assert c.eval.data_dir == str(tmp_path / "data") and c.eval.benchmark_limit == 300
        assert c.eval.benchmark_max_new_tokens == 384
    only = cfgs["ifeval-only-s1"]
    assert [d.weight for d in only.domains] == [0.0, 1.0, 0.0] and only.strategy.name == "mixed"
    assert only.train.seed == 1 and only.train.out_dir == str(tmp_path / "runs" / "ifeval-only-s1")
    a, b = cfgs["seq-a-s0"].strategy, cfgs["seq-b-s0"].strategy
    assert [(list(st.domains), st.steps) for st in a.stages] == [(["math"], 11), (["ifeval"], 10), (["chat"], 10)]
    assert [list(st.domains) for st in b.stages] == [["chat"], ["ifeval"], ["math"]]
    assert cfgs["mixed-s0"].surgery.monitor and cfgs["mixed-s0"].strategy.name == "mixed"
    assert [(cfgs[f"{n}-s0"].strategy.name, cfgs[f"{n}-s0"].surgery.granularity)
            for n in ("pcgrad-global", "mgs-module", "mgs-tensor")] == [("mgs", "global"), ("mgs", "module"),
                                                                       ("mgs", "tensor")]
    assert cfgs["chat-only-s0"].domains[2].params["path"] == str((tmp_path / "data").resolve() / "arena_hard")

    specs[0].overrides.append("grpo.group_size=4")  # an unequal run is refused before anything starts
    with pytest.raises(SystemExit, match="unequal compute"):
        launcher.check_equal_compute(config, specs)
    with pytest.raises(SystemExit, match="unknown strategies"):
        launcher.build_matrix(s, ["mixed", "mgs-block"], [0])
    with pytest.raises(SystemExit, match="at least one step per stage"):
        launcher.build_matrix(_settings(launcher, tmp_path, steps=2), ["seq-a"], [0])
    assert len(launcher.build_matrix(_settings(launcher, tmp_path, steps=1), ["mixed", "chat-only"], [0])) == 2


def test_dry_run_prints_every_command_and_runs_nothing(launcher, tmp_path, capsys):
    _tiny_data(tmp_path / "data")
    args = ["--dry-run", "--seeds", "0,1", "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--eval-limit", "50"]
    assert launcher.main(args) == 0
    out = capsys.readouterr().out
    trains = [line for line in out.splitlines() if line.startswith("  train: ")]
    evals = [line for line in out.splitlines() if line.startswith("  eval: ")]
    assert len(trains) == 18 and len(evals) == 19  # 9 strategies x 2 seeds, + the base model's eval
    assert "each 30 updates, 5760 completions" in out
    assert any("strategy.stages=[{domains: {chat: 1.0}, name: chat, steps: 10}" in t for t in trains)
    assert all(" -m mgs train " in t and "--resume" not in t for t in trains)
    assert all("--limit 50" in e and "--dtype bfloat16" in e and "--compile auto" in e and "alpaca_eval" in e
               for e in evals)
    base = [e for e in evals if " eval smollm2-135m-instruct --out " in e]  # the untrained model, evaluated once
    assert len(base) == 1 and f"{tmp_path / 'results' / 'base' / 'eval' / 'bench.json'}" in base[0]
    assert not (tmp_path / "runs" / "mixed-s0").exists() and not (tmp_path / "results").exists()
    short = tmp_path / "runs" / "data" / "arena_hard_max512"  # the long-prompt filter's copy: the 900-token one goes
    assert all(f"domains.2.params.path={short}" in t for t in trains)
    for name in ("question.jsonl", "o3-mini-2025-01-31.jsonl"):
        uids = [json.loads(line)["uid"] for line in (short / name).read_text().splitlines()]
        assert uids == [f"u{i}" for i in range(16)]

    capsys.readouterr()
    assert launcher.main(args[:-2] + ["--tune", "--lr-sweep", "1e-6,2e-5"]) == 0
    out = capsys.readouterr().out
    trains = [line for line in out.splitlines() if line.startswith("  train: ")]
    assert len(trains) == 4 and not [line for line in out.splitlines() if line.startswith("  eval: ")]
    assert all("optim.lr=" in t and "train.save_final=false" in t and "/tuning/mixed-lr" in t for t in trains)


def test_resume_state_comes_from_the_files(launcher, tmp_path):
    _tiny_data(tmp_path / "data")
    s = _settings(launcher, tmp_path)
    config = launcher.resolved_config(s)
    spec = launcher.build_matrix(s, ["mixed"], [0])[0]
    state = lambda: launcher.plan_run(s, config, spec, "bfloat16")  # noqa: E731
    st, cmds = state()
    assert st == "fresh" and [p for p, _ in cmds] == ["train", "eval"] and "--resume" not in cmds[0][1]
    (spec.run_dir / "checkpoints" / "latest").mkdir(parents=True)
    st, cmds = state()
    assert st == "resume" and cmds[0][1][-1] == "--resume" and [p for p, _ in cmds] == ["train", "eval"]
    (spec.run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))
    st, cmds = state()
    assert st == "eval" and [p for p, _ in cmds] == ["eval"] and cmds[0][1][3:7] == ["eval", str(spec.run_dir),
                                                                                   "--tag", "bench"]
    (spec.run_dir / "checkpoints" / "latest").rmdir()
    assert state()[0] == "fresh"  # finished, but nothing left to evaluate: trained again
    (spec.run_dir / "eval").mkdir()
    (spec.run_dir / "eval" / "bench.json").write_text("{}")
    assert state() == ("collect", [])
    spec.done_marker.parent.mkdir(parents=True)
    spec.done_marker.write_text("{}")
    assert state() == ("done", [])


def _tiny_data(root: Path) -> Path:
    def jsonl(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    jsonl(root / "gsm8k" / "test.jsonl", [{"question": "What is 2 + 3?", "answer": "#### 5"},
                                          {"question": "What is 4 * 4?", "answer": "#### 16"}])
    jsonl(root / "math500" / "test.jsonl", [{"problem": "Compute $1+1$.", "answer": "2"},
                                            {"problem": "Compute $2 \\cdot 5$.", "answer": "10"}])
    jsonl(root / "ifeval" / "input_data.jsonl", [
        {"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "Write a poem.", "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"relation": "at least", "num_words": 300}]}])
    (root / "alpaca_eval").mkdir()
    (root / "alpaca_eval" / "alpaca_eval_gpt4_baseline.json").write_text(json.dumps([
        {"instruction": "Name a fruit.", "output": "An apple is a fruit.", "dataset": "t"},
        {"instruction": "Why is the sky blue?", "output": "Rayleigh scattering of sunlight.", "dataset": "t"}]))
    topics = ["sleep", "tea", "rust", "tides", "bread", "chess", "rain", "jazz", "maps", "bees", "glass", "kites",
              "soap", "ink", "salt", "moss"]
    jsonl(root / "arena_hard" / "question.jsonl", [
        {"uid": f"u{i}", "category": "hard_prompt", "prompt": f"Explain {t} in one sentence."}
        for i, t in enumerate(topics)] + [{"uid": "long", "prompt": "Summarise: " + "tea and bread " * 300}])
    jsonl(root / "arena_hard" / "o3-mini-2025-01-31.jsonl", [
        {"uid": f"u{i}", "messages": [{"role": "user", "content": "q"},
                                      {"role": "assistant", "content": {"answer": f"{t.title()} is a common topic."}}]}
        for i, t in enumerate(topics)] + [{"uid": "long", "messages": [{"role": "assistant", "content": "Tea."}]}])
    return root


TINY = ["model.name=tiny:llama", "model.dtype=float32", "rollout.backend=hf", "rollout.max_new_tokens=6",
        "grpo.prompts_per_step=3", "grpo.group_size=2", "optim.lr=1.0e-3", "train.micro_batch_size=8",
        "train.save_every=0", "domains.0.eval_limit=2", "domains.1.eval_limit=2", "domains.2.eval_limit=2",
        "domains.1.params.num_train=16", "domains.0.params.num_train=16"]


@pytest.mark.parametrize("separate_eval", [False, True], ids=["eval-in-trainer", "mgs-eval-process"])
def test_end_to_end_on_cpu_train_eval_collect_report(launcher, tmp_path, capsys, separate_eval):
    data = _tiny_data(tmp_path / "data")
    args = ["--strategies", "mixed,seq-a", "--seeds", "0", "--steps", "3", "--data-dir", str(data),
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--report-dir", str(tmp_path / "report"), "--benchmarks", "gsm8k,ifeval,alpaca_eval", "--eval-limit", "2",
            "--eval-max-new-tokens", "6", "--eval-batch-size", "4", "--device", "cpu", "--parallel", "2", "--no-base",
            *[x for o in TINY for x in ("--set", o)], *(["--eval-in-separate-process"] if separate_eval else [])]
    rc = launcher.main(args)
    out = capsys.readouterr().out
    assert rc == 0, out + "".join(p.read_text()[-3000:] for p in (tmp_path / "runs" / "logs").glob("*.log"))
    assert "done   mixed-s0 train in" in out
    if separate_eval:
        assert "done   seq-a-s0 eval in" in out and "skip " not in out
    else:  # the trainer wrote eval/bench.json: no mgs eval process
        assert "skip   seq-a-s0 eval (bench.json written by the trainer)" in out and "seq-a-s0 eval in" not in out

    results = tmp_path / "results"
    for run in ("mixed-s0", "seq-a-s0"):
        files = {p.relative_to(results / run).as_posix() for p in (results / run).rglob("*") if p.is_file()}
        assert {"config.yaml", "metrics.jsonl", "summary.json", "eval/bench.json", "eval/after.json",
                "eval/bench.scores.json"} <= files  # per-prompt scores survive collect, for paired comparisons
        assert not any(f.startswith("checkpoints") or f.endswith(".records.jsonl") for f in files)
        assert not (tmp_path / "runs" / run / "checkpoints").exists()  # dropped once evaluated
    # monitor stats: packed into one file, which reads back as every step the trainer wrote
    from mgs.diagnostics import RunDir

    assert not (results / "mixed-s0" / "surgery").exists() and (results / "mixed-s0" / "surgery.jsonl.gz").is_file()
    assert RunDir(results / "mixed-s0").surgery_steps() == RunDir(tmp_path / "runs" / "mixed-s0").surgery_steps() != []
    stage_files = sorted(p.name for p in (results / "seq-a-s0" / "eval").glob("stage_*.json")
                         if not p.name.endswith(".scores.json"))
    assert stage_files == ["stage_1_math.json", "stage_2_ifeval.json", "stage_3_chat.json"]

    md = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| strategy | seeds |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    assert names[2:] == ["gsm8k", "ifeval", "alpaca_eval*", "Total"]
    for run, label in (("mixed-s0", "mixed"), ("seq-a-s0", "sequential (math -> ifeval -> chat)")):
        bench = json.loads((results / run / "eval" / "bench.json").read_text())
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} | 0 |"))
        cells = dict(zip(names, [c.strip() for c in row.strip("|").split("|")]))
        assert cells["gsm8k"] == f"{bench['sets']['gsm8k']['score']:.1f}"
        assert cells["alpaca_eval*"] == f"{bench['sets']['alpaca_eval']['score']:.1f}"
        assert cells["Total"] == f"{bench['total']['value']:.1f}"
    assert "conflict_heatmap_" in md and "Forgetting" in md
    assert "| sequential (math -> ifeval -> chat) | mixed | gsm8k | 2 |" in md  # paired over the 2 shared prompts
    cfg = yaml.safe_load((results / "seq-a-s0" / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 3 and cfg["model"]["name"] == "tiny:llama"

    # re-invoked: everything is done, nothing is started, the report is rebuilt
    assert launcher.main(args) == 0
    out = capsys.readouterr().out
    assert "mixed-s0: done" in out and "seq-a-s0: done" in out and "start " not in out


def test_deadline_stops_new_work_and_interrupts_trainers_cleanly(launcher, tmp_path, capsys):
    """At the deadline nothing new starts, a running trainer gets SIGINT (the trainer's checkpoint-and-stop signal)
    and the job's later phases are left for the next invocation."""
    trainer = ("import signal, sys, time, pathlib\n"
               "def stop(*_):\n    pathlib.Path(sys.argv[1]).write_text('checkpointed'); sys.exit(130)\n"
               "signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(30)\n")
    mark = tmp_path / "ckpt"
    done = []
    jobs = [launcher.Job("a", launcher.deque([("train", [sys.executable, "-c", trainer, str(mark)]),
                                              ("eval", [sys.executable, "-c", "pass"])]), lambda: done.append("a"),
                         tmp_path / "logs"),
            launcher.Job("b", launcher.deque([("eval", [sys.executable, "-c", "pass"])]), lambda: done.append("b"),
                         tmp_path / "logs")]
    t0 = launcher.time.time()
    status = launcher.schedule(jobs, parallel=1, deadline_s=1.5, env=launcher.child_env(1), poll_s=0.1)
    assert launcher.time.time() - t0 < 15
    assert status == {"a": "stopped", "b": "pending"} and done == []
    assert mark.read_text() == "checkpointed"
    assert not (tmp_path / "logs" / "a.eval.log").exists() and not (tmp_path / "logs" / "b.eval.log").exists()
    assert "deadline (2 s): no new work; stopping 1 running, 1 left" in capsys.readouterr().out


def test_a_job_ignoring_the_stop_request_is_killed_after_the_grace(launcher, tmp_path, capsys):
    """A trainer busy in its final eval ignores SIGINT: the launcher kills it `stop_grace_s` after the deadline, so
    the whole command ends within deadline + grace (a GPU call has a hard limit)."""
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n"
    jobs = [launcher.Job("a", launcher.deque([("train", [sys.executable, "-c", stubborn])]), lambda: None,
                         tmp_path / "logs")]
    t0 = launcher.time.time()
    status = launcher.schedule(jobs, parallel=1, deadline_s=1.0, env=launcher.child_env(1), poll_s=0.1,
                               stop_grace_s=1.0)
    assert launcher.time.time() - t0 < 10
    assert status == {"a": "stopped"}
    assert "after the deadline: killing ['a']" in capsys.readouterr().out


def test_tuning_ranks_learning_rates_by_held_out_evals_only(launcher, tmp_path):
    (tmp_path / "data").mkdir()
    s = _settings(launcher, tmp_path)
    specs = launcher.build_matrix(s, ["mixed"], [0, 1], lrs=[1e-6, 2e-5])
    assert [sp.name for sp in specs] == ["mixed-lr1e-06-s0", "mixed-lr1e-06-s1", "mixed-lr2e-05-s0", "mixed-lr2e-05-s1"]
    assert all(sp.done_marker.name == "after.json" and "tuning" in sp.result_dir.parts for sp in specs)
    scores = {"mixed-lr1e-06-s0": (10, 20, 30), "mixed-lr1e-06-s1": (20, 30, 40), "mixed-lr2e-05-s0": (40, 20, 0)}
    for sp in specs:
        if sp.name in scores:  # the last run has not finished: left out, not counted as 0
            sets = {d: {"domain": d, "main_metric": "m", "score": v, "stderr": 0.0, "proxy": d == "chat",
                        "metrics": {}} for d, v in zip(("math", "ifeval", "chat"), scores[sp.name])}
            sp.done_marker.parent.mkdir(parents=True)
            sp.done_marker.write_text(json.dumps({"tag": "after", "sets": sets, "total": {"value": 0.0}}))
    assert launcher.tuning_table(s, specs) == [("lr1e-06", pytest.approx(25.0)), ("lr2e-05", pytest.approx(20.0))]
    # --lr-from-tuning reads the same ranking back from the collected files alone
    lr, ranking = launcher.tuned_lr(s.results_dir)
    assert lr == 1e-6 and ranking == launcher.tuning_table(s, specs)
    with pytest.raises(SystemExit, match="run --tune first"):
        launcher.tuned_lr(tmp_path / "nothing")
