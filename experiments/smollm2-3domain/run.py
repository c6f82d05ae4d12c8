"""One command for the small-scale, seeded rerun of the paper's comparison (issue 9): strategies x seeds at equal
compute, each run = `mgs train` (config.yaml + dotted overrides) then `mgs eval RUN` on the benchmarks, as parallel
processes on one GPU, resumable, then `mgs report` over the collected small result files.

    python experiments/smollm2-3domain/run.py --dry-run           # every command, nothing run
    python experiments/smollm2-3domain/run.py --parallel 6 --deadline-s 520
    python experiments/smollm2-3domain/run.py --tune --lr-sweep 1e-6,5e-6,2e-5   # lr chosen once on Mixed
    python experiments/smollm2-3domain/run.py --report-only

Why a launcher and not a loop inside mgs: each run is exactly what a user would type (`mgs train` / `mgs eval`),
runs are independent processes (several share one GPU; a crash or a time limit costs one run), and the state of the
matrix is nothing but files: a run whose collected eval JSON exists is done and skipped; a run with a checkpoint is
resumed (`mgs train --resume`); at `--deadline-s` no new work starts and running trainers get SIGINT, so they
checkpoint after their current step and the next invocation resumes them. Only small files (config, metrics,
summary, eval JSON, surgery conflict tables) are copied into --results-dir; checkpoints stay in --runs-dir and are
deleted once a run is evaluated.

Equal compute: every strategy gets the same train.steps x grpo.prompts_per_step x grpo.group_size rollouts and
train.steps updates; a single-domain run puts all prompts on its domain (the other weights 0), a sequential run
splits the steps into equal stages (`equal_stages`). `build_matrix` checks it through mgs's own strategy plans.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONCLUSION = HERE / "conclusion.md"  # written by hand as results come in; the report shows it after its summary
DEFAULT_BENCHMARKS = "gsm8k,math500,ifeval,alpaca_eval"
# ordered: the single-domain references first, then the sequential orders, then the mixed-batch strategies
BATCH_STRATEGIES: dict[str, list[str]] = {
    "mixed": ["strategy.name=mixed", "surgery.monitor=true"],
    "pcgrad-global": ["strategy.name=mgs", "surgery.granularity=global", "surgery.method=pcgrad"],
    "mgs-module": ["strategy.name=mgs", "surgery.granularity=module", "surgery.method=pcgrad"],
    "mgs-tensor": ["strategy.name=mgs", "surgery.granularity=tensor", "surgery.method=pcgrad"],
}
RESULT_FILES = ("config.yaml", "metrics.jsonl", "summary.json")  # + eval/*.json (scores too) and surgery.jsonl.gz


# --------------------------------------------------------------------------------------------- the matrix
def equal_stages(steps: int, n: int) -> list[int]:
    """`steps` split into n stages as equal as possible (the first ones get the remainder); refuses empty stages."""
    if steps < n:
        raise SystemExit(f"--steps {steps}: a sequential run needs at least one step per stage ({n} stages)")
    return [steps // n + (1 if i < steps % n else 0) for i in range(n)]


def sequential_overrides(order: list[str], steps: int) -> list[str]:
    stages = [{"name": d, "steps": s, "domains": {d: 1.0}} for d, s in zip(order, equal_stages(steps, len(order)))]
    return ["strategy.name=sequential", "surgery.monitor=false",
            "strategy.stages=" + yaml.safe_dump(stages, default_flow_style=True, width=10_000).strip()]


def single_overrides(domain: str, domains: list[str]) -> list[str]:
    return ["strategy.name=mixed", "surgery.monitor=false"] + [
        f"domains.{i}.weight=0" for i, d in enumerate(domains) if d != domain]


def strategy_overrides(domains: list[str], steps: int) -> dict[str, Callable[[], list[str]]]:
    """Strategy name -> a function giving its dotted overrides, for the config's domains (in config order):
    `<d>-only` per domain, `seq-a` (config order) and `seq-b` (reversed), then the mixed-batch strategies. Functions,
    so that a check of one strategy (e.g. too few steps for 3 stages) fires only when that strategy is asked for."""
    table: dict[str, Callable[[], list[str]]] = {
        f"{d}-only": (lambda d=d: single_overrides(d, domains)) for d in domains}
    table["seq-a"] = lambda: sequential_overrides(domains, steps)
    table["seq-b"] = lambda: sequential_overrides(domains[::-1], steps)
    table.update({name: (lambda o=over: list(o)) for name, over in BATCH_STRATEGIES.items()})
    return table


@dataclass
class RunSpec:
    name: str  # run folder name, e.g. mixed-s0, mixed-lr2e-05-s0
    strategy: str
    seed: int
    overrides: list[str]
    run_dir: Path
    result_dir: Path
    lr: float | None = None  # set on tuning runs, which are judged by their held-out `after` eval, not benchmarks

    @property
    def evaluate(self) -> bool:
        return self.lr is None

    @property
    def done_marker(self) -> Path:
        return self.result_dir / "eval" / ("bench.json" if self.evaluate else "after.json")

    @property
    def run_marker(self) -> Path:
        """The done marker's file inside the run directory (where the trainer or `mgs eval` writes it)."""
        return self.run_dir / self.done_marker.relative_to(self.result_dir)


@dataclass
class Settings:
    config: Path
    data_dir: Path
    runs_dir: Path
    results_dir: Path
    steps: int
    benchmarks: str = DEFAULT_BENCHMARKS
    eval_limit: int | None = 300
    eval_max_new_tokens: int = 384
    eval_batch_size: int = 64
    eval_compile: str = "auto"
    eval_in_train: bool = True  # the trainer evaluates the benchmarks itself (eval.benchmarks); mgs eval = fallback
    device: str | None = None
    extra: list[str] = field(default_factory=list)  # --set KEY=VALUE, applied to every training run
    python: str = sys.executable


def resolved_config(s: Settings) -> Path:
    """config.yaml with {data_dir} filled in, written into the runs folder (the file every train command reads)."""
    text = s.config.read_text()
    if "{data_dir}" in text and not s.data_dir.is_dir():
        raise SystemExit(f"--data-dir {s.data_dir} is not a folder; pass the folder laid out like ../shared/data")
    out = s.runs_dir / "config.resolved.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.replace("{data_dir}", str(s.data_dir.resolve())))
    return out


def short_arena_hard(s: Settings, max_prompt_tokens: int) -> list[str]:
    """Arena-Hard has prompts up to ~11k tokens (80 of 750 above the paper's 896); a rollout batch is as long as its
    longest prompt, so such prompts would blow up every process's KV cache. Writes a copy of question.jsonl and the
    o3-mini answers with the prompts of at most `max_prompt_tokens` (model tokenizer, no template) into the runs
    folder and returns the overrides pointing the config's arena_hard chat domains at it (uids unchanged)."""
    from mgs.rl.model import cached_alias_tokenizer

    cfg = yaml.safe_load(resolved_config(s).read_text())
    overrides = []
    for i, d in enumerate(cfg.get("domains") or []):
        params = d.get("params") or {}
        if d.get("kind") != "chat" or params.get("source") != "arena_hard":
            continue
        src, dst = Path(params["path"]), s.runs_dir / "data" / f"arena_hard_max{max_prompt_tokens}"
        refs = (params.get("source_params") or {}).get("references", "o3-mini-2025-01-31.jsonl")
        if not (src / "question.jsonl").is_file():
            raise SystemExit(f"{src / 'question.jsonl'} not found: --data-dir must hold arena_hard/ (or pass "
                             "--max-chat-prompt-tokens 0 to use the config's chat data as it is)")
        if not (dst / "question.jsonl").is_file():
            tok = cached_alias_tokenizer(cfg["model"]["name"])
            rows = [json.loads(line) for line in (src / "question.jsonl").read_text().split("\n") if line.strip()]
            keep = [r for r in rows if len(tok(r["prompt"])["input_ids"]) <= max_prompt_tokens]
            uids = {str(r["uid"]) for r in keep}
            answers = [line for line in (src / refs).read_text().split("\n")
                       if line.strip() and str(json.loads(line)["uid"]) in uids]
            dst.mkdir(parents=True, exist_ok=True)
            (dst / refs).write_text("".join(line + "\n" for line in answers))
            (dst / "question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
            say(f"arena_hard: {len(keep)} of {len(rows)} prompts with <= {max_prompt_tokens} tokens -> {dst}")
        overrides.append(f"domains.{i}.params.path={dst}")
    return overrides


def config_domains(path: Path) -> list[str]:
    specs = (yaml.safe_load(path.read_text()) or {}).get("domains") or []
    return [d.get("name") or d.get("kind") for d in specs]


def _lr_tag(lr: float) -> str:
    return f"lr{lr:g}".replace("+", "")


def build_matrix(s: Settings, strategies: list[str], seeds: list[int], lrs: list[float] | None = None) -> list[RunSpec]:
    """One RunSpec per (strategy, [lr,] seed); fails on unknown strategies and on unequal compute."""
    table = strategy_overrides(config_domains(s.config), s.steps)
    unknown = [n for n in strategies if n not in table]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {list(table)}")
    specs = []
    for name in strategies:
        for lr in lrs or [None]:
            for seed in seeds:
                run = f"{name}-{_lr_tag(lr)}-s{seed}" if lr is not None else f"{name}-s{seed}"
                sub = Path("tuning") if lr is not None else Path()
                over = table[name]() + [f"train.steps={s.steps}", f"train.seed={seed}",
                                      f"train.out_dir={s.runs_dir / sub / run}"]
                if lr is not None:
                    over += [f"optim.lr={lr:.4e}", "train.save_final=false", "train.save_every=0"]
                elif s.eval_in_train:
                    over += bench_overrides(s)
                if s.device:
                    over.append(f"model.device={s.device}")
                specs.append(RunSpec(run, name, seed, over + list(s.extra), s.runs_dir / sub / run,
                                     s.results_dir / sub / run, lr=lr))
    return specs


def bench_overrides(s: Settings) -> list[str]:
    """The trainer's own benchmark eval (`eval.benchmarks`): the same sets, limit and length as `mgs eval`, run in
    the training process right after the last step with its compiled decode graph (no reload, no new compile: on
    a GPU shared by several runs a separate eager `mgs eval` took ~330 s per run in session 3)."""
    return [f"eval.benchmarks=[{s.benchmarks}]", f"eval.data_dir={s.data_dir}",
            f"eval.benchmark_limit={s.eval_limit or 'null'}", f"eval.benchmark_max_new_tokens={s.eval_max_new_tokens}"]


def rollouts_and_updates(config: Path, spec: RunSpec) -> tuple[int, int]:
    """(sampled completions, optimizer steps) of a run, from mgs's own config loading and strategy plan."""
    from mgs.config import load_config
    from mgs.rl.trainer import STRATEGIES

    cfg = load_config(str(config), spec.overrides)
    steps = STRATEGIES.get(cfg.strategy.name)(cfg).total_steps
    return steps * cfg.grpo.prompts_per_step * cfg.grpo.group_size, steps


def check_equal_compute(config: Path, specs: list[RunSpec]) -> tuple[int, int]:
    seen = {spec.name: rollouts_and_updates(config, spec) for spec in specs}
    if len(set(seen.values())) > 1:
        raise SystemExit(f"unequal compute across runs (completions, updates): {seen}")
    return next(iter(seen.values()))


# --------------------------------------------------------------------------------------------- commands and state
def train_cmd(s: Settings, config: Path, spec: RunSpec, resume: bool) -> list[str]:
    return [s.python, "-m", "mgs", "train", str(config), *spec.overrides, *(["--resume"] if resume else [])]


def eval_args(s: Settings, dtype: str) -> list[str]:
    args = ["--benchmarks", s.benchmarks, "--data-dir", str(s.data_dir), "--max-new-tokens",
            str(s.eval_max_new_tokens), "--batch-size", str(s.eval_batch_size), "--dtype", dtype,
            "--compile", s.eval_compile]
    if s.eval_limit:
        args += ["--limit", str(s.eval_limit)]
    if s.device:
        args += ["--device", s.device]
    return args


def eval_cmd(s: Settings, spec: RunSpec, dtype: str) -> list[str]:
    return [s.python, "-m", "mgs", "eval", str(spec.run_dir), "--tag", "bench", *eval_args(s, dtype)]


def base_cmd(s: Settings, model: str, dtype: str) -> list[str]:
    return [s.python, "-m", "mgs", "eval", model, "--out", str(s.results_dir / "base" / "eval" / "bench.json"),
            *eval_args(s, dtype)]


def _finished(run_dir: Path) -> bool:
    p = run_dir / "summary.json"
    return p.is_file() and json.loads(p.read_text()).get("status") == "finished"


def plan_run(s: Settings, config: Path, spec: RunSpec, dtype: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """(state, [(phase, command)]) from the files alone: done (collected) | collect (evaluated, not yet copied) |
    eval (trained) | resume (checkpoint) | fresh (nothing usable: a partial run directory without a checkpoint, or a
    finished one whose checkpoint is gone, is started over)."""
    if spec.done_marker.is_file():
        return "done", []
    finished = _finished(spec.run_dir)
    if finished and spec.run_marker.is_file():
        return "collect", []
    evals = [("eval", eval_cmd(s, spec, dtype))] if spec.evaluate else []
    checkpoint = (spec.run_dir / "checkpoints" / "latest").exists()
    if finished and (checkpoint or not spec.evaluate):
        return "eval", evals
    if checkpoint and not finished:
        return "resume", [("train", train_cmd(s, config, spec, resume=True))] + evals
    return "fresh", [("train", train_cmd(s, config, spec, resume=False))] + evals


def collect(spec: RunSpec, keep_checkpoints: bool = False) -> None:
    """Copy the run's small files into its result folder (eval JSON last: it is the done marker), then drop the
    checkpoints unless asked to keep them. eval/*.json includes each eval's `<tag>.scores.json` (per-prompt
    headline scores, one float per prompt: what `mgs report`'s paired differences need), not the large
    `<tag>.records.jsonl` (responses)."""
    from mgs.diagnostics.rundir import SURGERY_PACK, pack_surgery

    src, dst = spec.run_dir, spec.result_dir
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "eval").mkdir(parents=True)
    for name in RESULT_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    if (src / "surgery").is_dir():  # one lossless gzip file (~8x smaller): the results live in the repository
        pack_surgery(src / "surgery", dst / SURGERY_PACK)
    evals = sorted((src / "eval").glob("*.json")) if (src / "eval").is_dir() else []
    for p in sorted(evals, key=lambda p: p == spec.run_marker):
        shutil.copy2(p, dst / "eval" / p.name)
    if not keep_checkpoints and spec.evaluate:
        shutil.rmtree(src / "checkpoints", ignore_errors=True)


# --------------------------------------------------------------------------------------------- the scheduler
@dataclass
class Job:
    name: str
    steps: deque  # of (phase, command)
    on_done: Callable[[], None]
    log_dir: Path
    eval_marker: Path | None = None  # an "eval" phase is skipped when this file exists (the trainer wrote it)
    proc: subprocess.Popen | None = None
    phase: str = ""
    started: float = 0.0
    log = None

    def start_next(self, env: dict[str, str]) -> None:
        self.phase, cmd = self.steps.popleft()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_dir / f"{self.name}.{self.phase}.log", "a")
        self.log.write(f"$ {shlex.join(cmd)}\n")
        self.log.flush()
        self.started = time.time()
        # same process group: a terminal Ctrl-C reaches the trainers once (they checkpoint), a group kill kills all
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        say(f"start  {self.name} {self.phase}")

    def drop_done_evals(self) -> None:
        """Skip the `mgs eval` phase when the trainer already evaluated the benchmarks (eval.benchmarks)."""
        while self.steps and self.steps[0][0] == "eval" and self.eval_marker is not None and self.eval_marker.is_file():
            self.steps.popleft()
            say(f"skip   {self.name} eval ({self.eval_marker.name} written by the trainer)")

    def stop(self) -> None:
        """Trainers get SIGINT (they finish the step and checkpoint); an eval is simply ended (it is redone)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.phase == "train" else signal.SIGTERM)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def schedule(jobs: list[Job], parallel: int, deadline_s: float | None, env: dict[str, str],
             poll_s: float = 1.0, stop_grace_s: float = 60.0) -> dict[str, str]:
    """Run the jobs' commands, at most `parallel` processes at once; returns {job: finished|failed|stopped|pending}.
    At the deadline running jobs are asked to stop; those still running `stop_grace_s` later are killed (a trainer
    in its final held-out eval ignores the request until the eval ends: a GPU pilot overran its call that way)."""
    t0 = time.time()
    killed = False
    pending, running, status = deque(jobs), [], {j.name: "pending" for j in jobs}
    stopping = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        while running or (pending and not stopping):
            if not stopping and deadline_s is not None and time.time() - t0 > deadline_s:
                stopping = True
                say(f"deadline ({deadline_s:.0f} s): no new work; stopping {len(running)} running, "
                    f"{len(pending)} left for the next invocation")
                for job in running:
                    job.stop()
            if stopping and not killed and time.time() - t0 > deadline_s + stop_grace_s and running:
                killed = True
                say(f"{stop_grace_s:.0f} s after the deadline: killing {[j.name for j in running]}")
                for job in running:
                    job.proc.kill()
            while not stopping and pending and len(running) < parallel:
                job = pending.popleft()
                job.start_next(env)
                running.append(job)
            time.sleep(poll_s)
            for job in list(running):
                rc = job.proc.poll()
                if rc is None:
                    continue
                job.log.close()
                secs = time.time() - job.started
                if rc != 0:
                    status[job.name] = "stopped" if stopping else "failed"
                    say(f"{status[job.name]:6s} {job.name} {job.phase} rc={rc} after {secs:.0f} s "
                        f"(log: {job.log_dir / f'{job.name}.{job.phase}.log'})")
                    running.remove(job)
                    continue
                say(f"done   {job.name} {job.phase} in {secs:.0f} s")
                job.drop_done_evals()
                if job.steps and not stopping:
                    job.start_next(env)
                    continue
                running.remove(job)
                if job.steps:
                    continue  # stopped between phases: the next invocation picks it up
                job.on_done()
                status[job.name] = "finished"
    except KeyboardInterrupt:  # the terminal sent SIGINT to the whole group: the trainers got it too
        say("interrupted: waiting for the trainers to checkpoint")
        _wait_or_kill(running, grace_s=120)
        raise
    except Terminated:
        say("terminated: stopping running processes (trainers checkpoint)")
        for job in running:
            job.stop()
        _wait_or_kill(running, grace_s=120)
        raise SystemExit(143) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status


class Terminated(Exception):
    """SIGTERM (e.g. `timeout`) reached the launcher: its children are stopped cleanly before it exits."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _wait_or_kill(running: list[Job], grace_s: float) -> None:
    end = time.time() + grace_s
    for job in running:
        try:
            job.proc.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait()


def child_env(parallel: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // max(1, parallel))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


# --------------------------------------------------------------------------------------------- report and tuning
def report_cmd(s: Settings, report_dir: Path, seeds: list[int]) -> list[str] | None:
    """`mgs report` over every collected run (not base/tuning), rigidity against the first seed's single runs."""
    from mgs.diagnostics.rundir import is_run_dir

    runs = sorted(p for p in s.results_dir.iterdir() if p.is_dir() and is_run_dir(p)) if s.results_dir.is_dir() else []
    if not runs:
        return None
    single = []
    for d in config_domains(s.config):
        found = [p for p in runs if p.name.startswith(f"{d}-only-s")]
        found.sort(key=lambda p: (p.name != f"{d}-only-s{seeds[0]}", p.name))
        if found:
            single.append(f"{d}={found[0]}")
    cmd = [s.python, "-m", "mgs", "report", *map(str, runs), "--out", str(report_dir)]
    if CONCLUSION.is_file():  # the author's reading of the numbers, shown after the computed summary
        cmd += ["--conclusion", str(CONCLUSION)]
    return cmd + (["--baseline-single", *single] if single else [])


def tuning_table(s: Settings, specs: list[RunSpec]) -> list[tuple[str, float]]:
    """Per lr: the mean over seeds of the held-out `after` eval's mean headline score over the training domains
    (chat's proxy included: it is the chat training signal); never the benchmarks (no test-set tuning)."""
    from mgs.eval.results import read_eval

    per_lr: dict[str, list[float]] = {}
    for spec in specs:
        if spec.done_marker.is_file():
            sets = read_eval(spec.done_marker)["sets"]
            per_lr.setdefault(_lr_tag(spec.lr), []).append(sum(v["score"] for v in sets.values()) / len(sets))
    return sorted(((lr, sum(v) / len(v)) for lr, v in per_lr.items()), key=lambda x: -x[1])


def tuned_lr(results_dir: Path) -> tuple[float, list[tuple[str, float]]]:
    """The best lr of the tuning runs collected under RESULTS/tuning (same ranking as `tuning_table`: mean over
    seeds of the held-out `after` eval's mean headline score), and the whole ranking."""
    from mgs.eval.results import read_eval

    per_lr: dict[str, list[float]] = {}
    for marker in sorted((results_dir / "tuning").glob("mixed-lr*-s*/eval/after.json")):
        tag = re.match(r"mixed-(lr.+)-s\d+$", marker.parent.parent.name).group(1)
        sets = read_eval(marker)["sets"]
        per_lr.setdefault(tag, []).append(sum(v["score"] for v in sets.values()) / len(sets))
    if not per_lr:
        raise SystemExit(f"--lr-from-tuning: no finished tuning runs in {results_dir / 'tuning'}; run --tune first")
    rows = sorted(((lr, sum(v) / len(v)) for lr, v in per_lr.items()), key=lambda x: -x[1])
    return float(rows[0][0][2:]), rows


# --------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=str(HERE / "config.yaml"), help="base mgs train config (default: %(default)s)")
    p.add_argument("--strategies", default=None, help="comma-separated (default: all; --tune: mixed)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the config's)")
    p.add_argument("--data-dir", default=os.environ.get("MGS_DATA_DIR", str(REPO.parent / "shared" / "data")),
                   help="folder laid out like ../shared/data (default: %(default)s)")
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "smollm2-3domain"),
                   help="big run folders with checkpoints, outside git (default: %(default)s)")
    p.add_argument("--results-dir", default=str(HERE / "results"), help="small collected files (default: %(default)s)")
    p.add_argument("--report-dir", default=str(HERE / "report"), help="mgs report output (default: %(default)s)")
    p.add_argument("--parallel", type=int, default=6, help="processes at once on the GPU (default: %(default)s)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="after this many seconds start nothing new and stop running processes cleanly")
    p.add_argument("--stop-grace-s", type=float, default=60.0,
                   help="seconds after --deadline-s before still-running processes are killed (default: %(default)s)")
    p.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS, help="mgs eval --benchmarks (default: %(default)s)")
    p.add_argument("--eval-limit", type=int, default=300, help="prompts per benchmark; 0 = all (default: %(default)s)")
    p.add_argument("--eval-max-new-tokens", type=int, default=384, help="default: %(default)s")
    p.add_argument("--eval-batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--eval-compile", default="auto", choices=["auto", "on", "off"],
                   help="mgs eval --compile: the decode step compiles once per batch shape (~45 s each on CUDA); "
                        "off may win for short evals (default: %(default)s)")
    p.add_argument("--eval-in-separate-process", action="store_true",
                   help="evaluate the benchmarks with a separate `mgs eval RUN` after training instead of inside the "
                        "trainer (eval.benchmarks; the default, which reuses the trainer's compiled decode step)")
    p.add_argument("--device", default=None, help="model.device of training and mgs eval --device (default: config's)")
    p.add_argument("--max-chat-prompt-tokens", type=int, default=512,
                   help="train/held-out Arena-Hard prompts up to this many tokens; 0 = all (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra dotted override for every training run (repeatable), e.g. rollout.max_new_tokens=128")
    p.add_argument("--tune", action="store_true", help="lr sweep on Mixed, judged on held-out domain evals")
    p.add_argument("--lr-from-tuning", action="store_true",
                   help="set optim.lr of every run to the best lr of the collected --tune runs (RESULTS/tuning)")
    p.add_argument("--lr-sweep", default="1e-6,5e-6,2e-5", help="--tune: learning rates (default: %(default)s)")
    p.add_argument("--no-base", action="store_true", help="skip the base model's benchmark eval")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep run checkpoints after their eval")
    p.add_argument("--dry-run", action="store_true", help="print the commands (and each run's state), run nothing")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from --results-dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    config_path = Path(a.config).resolve()
    base = yaml.safe_load(config_path.read_text()) or {}
    s = Settings(config=config_path, data_dir=Path(a.data_dir).resolve(), runs_dir=Path(a.runs_dir).resolve(),
                 results_dir=Path(a.results_dir).resolve(), steps=a.steps or int(base["train"]["steps"]),
                 benchmarks=a.benchmarks, eval_limit=a.eval_limit or None, eval_max_new_tokens=a.eval_max_new_tokens,
                 eval_batch_size=a.eval_batch_size, eval_compile=a.eval_compile, eval_in_train=not a.eval_in_separate_process,
                 device=a.device, extra=list(a.set))
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    if a.lr_from_tuning and not a.tune:
        lr, ranking = tuned_lr(s.results_dir)
        say("lr from tuning: " + ", ".join(f"{tag} {score:.1f}" for tag, score in ranking) + f" -> optim.lr={lr:g}")
        s.extra = s.extra + [f"optim.lr={lr:.4e}"]
    report_dir = Path(a.report_dir).resolve()
    if a.report_only:
        return _report(s, report_dir, seeds, a.dry_run)
    all_names = list(strategy_overrides(config_domains(config_path), s.steps))
    names = [n.strip() for n in (a.strategies or ("mixed" if a.tune else ",".join(all_names))).split(",") if n.strip()]
    lrs = [float(x) for x in a.lr_sweep.split(",")] if a.tune else None
    config = resolved_config(s)
    if a.max_chat_prompt_tokens:
        s.extra = short_arena_hard(s, a.max_chat_prompt_tokens) + s.extra
    specs = build_matrix(s, names, seeds, lrs)
    rollouts, updates = check_equal_compute(config, specs)
    overrides = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in s.extra}
    dtype = overrides.get("model.dtype", base.get("model", {}).get("dtype", "float32"))
    say(f"{len(specs)} runs ({', '.join(names)} x seeds {seeds}{' x lr ' + a.lr_sweep if lrs else ''}); each "
        f"{updates} updates, {rollouts} completions; config {config}")
    jobs = []
    for spec in specs:
        state, cmds = plan_run(s, config, spec, dtype)
        say(f"{spec.name}: {state}")
        if a.dry_run:
            for phase, cmd in cmds:
                print(f"  {phase}: {shlex.join(cmd)}")
            continue
        if state == "collect":
            collect(spec, a.keep_checkpoints)
        if state == "fresh" and spec.run_dir.exists():
            shutil.rmtree(spec.run_dir)  # a partial run without a checkpoint: mgs train would refuse the folder
        if cmds:
            jobs.append(Job(spec.name, deque(cmds), lambda spec=spec: collect(spec, a.keep_checkpoints),
                            s.runs_dir / "logs", eval_marker=spec.run_marker))
    base_marker = s.results_dir / "base" / "eval" / "bench.json"
    if not (a.tune or a.no_base or base_marker.is_file()):
        cmd = base_cmd(s, str(overrides.get("model.name", base["model"]["name"])), dtype)
        say("base: fresh")
        if a.dry_run:
            print(f"  eval: {shlex.join(cmd)}")
        records = base_marker.with_name("bench.records.jsonl")  # per-prompt responses: not a small result file
        jobs.insert(0, Job("base", deque([("eval", cmd)]), lambda: records.unlink(missing_ok=True),
                           s.runs_dir / "logs"))
    if a.dry_run:
        if not a.tune:
            cmd = report_cmd(s, report_dir, seeds)
            print("report: " + (shlex.join(cmd) if cmd else f"mgs report over the runs collected in {s.results_dir}"))
        return 0
    status = schedule(jobs, a.parallel, a.deadline_s, child_env(a.parallel), stop_grace_s=a.stop_grace_s)
    left = {k: v for k, v in status.items() if v != "finished"}
    say(f"finished {len(status) - len(left)} of {len(status)} jobs" + (f"; not finished: {left}" if left else ""))
    if a.tune:
        rows = tuning_table(s, specs)
        for lr, score in rows:
            print(f"  {lr}: mean held-out score {score:.1f}")
        if rows:
            print(f"best: {rows[0][0]} -> put optim.lr in {config_path}")
        return 0 if not left else 3
    if base_marker.is_file():
        from mgs.eval.suite import format_table

        print("base model (before any training):\n" + format_table(json.loads(base_marker.read_text())))
    rc = _report(s, report_dir, seeds, False)
    return rc if not left else 3


def _report(s: Settings, report_dir: Path, seeds: list[int], dry_run: bool) -> int:
    cmd = report_cmd(s, report_dir, seeds)
    if cmd is None:
        say(f"no collected runs in {s.results_dir}: nothing to report")
        return 1
    if dry_run:
        print(shlex.join(cmd))
        return 0
    say("report: " + shlex.join(cmd[:4]) + " ...")
    return subprocess.run(cmd, cwd=REPO, env=child_env(1)).returncode


if __name__ == "__main__":
    sys.exit(main())
