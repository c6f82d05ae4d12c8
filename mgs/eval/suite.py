"""`mgs eval`'s engine: evaluate one model (or a run's latest checkpoint) on a list of benchmarks and write one
results file (`mgs.eval.results`) plus a printed table with the paper-style Total.

Each benchmark becomes its domain (`mgs.eval.benchmarks`) and goes through `evaluate_domain`, the code the trainer's
held-out eval uses. Math benchmarks get greedy accuracy; with `samples=k > 1` also avg@k with sampling, as a second
set `<name>@k` (shown, not in the Total). Chat benchmarks use the given reward model (headline: win rate against the
dataset's reference answers; mean RM score beside it) or, without one, the offline similarity proxy, whose headline
is marked as a proxy in the table and the JSON.

Benchmarks are loaded before anything is generated (`load_benchmarks`: a missing file fails first), and the backend's
decode cache is reserved for the longest prompt of the whole suite (`reserve_for`), so on CUDA one compiled decode
graph serves every benchmark. The trainer uses the same two functions for `eval.benchmarks`.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mgs.eval.benchmarks import Benchmark
from mgs.eval.results import TOTAL_FORMULA, SetInfo, write_eval
from mgs.eval.runner import EvalResult, evaluate_domain


def parse_reward_model(spec: str | None) -> tuple[str, dict[str, Any]] | None:
    """'KIND:VALUE[,key=value...]' -> (kind, params); VALUE fills the kind's first constructor argument (path of
    an hf-classifier, url of http, module:function of callable). A bare path means hf-classifier."""
    if not spec:
        return None
    from mgs.domains.chat.rewards import REWARD_MODELS
    import mgs.domains.chat  # noqa: F401  (registers every reward kind)

    kind, _, rest = spec.partition(":")
    if kind not in REWARD_MODELS:
        if Path(spec).exists():
            return "hf-classifier", {"path": spec}
        raise ValueError(f"--reward-model {spec!r}: start with a reward kind {REWARD_MODELS.names()} "
                         "(e.g. hf-classifier:/models/Skywork-Reward-V2) or give an existing model folder")
    value, *extras = rest.split(",") if rest else [""]
    params: dict[str, Any] = {}
    if value:
        first = next(iter(p for p in inspect.signature(REWARD_MODELS.get(kind).__init__).parameters if p != "self"))
        params[first] = value
    for item in extras:
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"--reward-model {spec!r}: extra settings are key=value, got {item!r}")
        params[key.strip()] = val.strip()
    return kind, params


@dataclass(frozen=True)
class SuiteSettings:
    data_dir: str | None = None
    limit: int | None = None
    samples: int = 1
    sample_temperature: float = 0.7
    max_new_tokens: int = 512
    template: str = "none"
    seed: int = 0
    batch_size: int | None = None  # prompts per generate call; None: 16 on CPU, 256 on CUDA
    compile: bool | None = None  # compile the decode step (None: on CUDA)
    reward_model: str | None = None


def _domain_for(bench: Benchmark, settings: SuiteSettings):
    from mgs.domains import build_domain

    params = bench.domain_params(settings.data_dir)
    proxy = False
    if bench.chat:
        rm = parse_reward_model(settings.reward_model)
        if rm is None:
            params.update(reward="similarity-proxy", skip_missing_references=True)
            proxy = True
        else:
            params.update(reward=rm[0], reward_params=rm[1])
    return build_domain(bench.domain_kind, name=bench.name, **params), proxy


def _chat_main_metric(result_keys: list[str], proxy: bool) -> str:
    if proxy:
        return "proxy_score_mean"
    return "win_rate_vs_reference" if "win_rate_vs_reference" in result_keys else "score_mean"


@dataclass
class LoadedBenchmark:
    """A benchmark ready to run: its domain (reward included) and the prompts it evaluates."""

    bench: Benchmark
    domain: Any
    proxy: bool
    samples: list


def load_benchmarks(benchmarks: list[Benchmark], settings: SuiteSettings) -> list[LoadedBenchmark]:
    """Build each benchmark's domain and load its prompts (`settings.limit` of them), before any generation: a
    missing file fails here, and callers can size the decode cache for the longest prompt of all of them."""
    loaded = []
    for bench in benchmarks:
        domain, proxy = _domain_for(bench, settings)
        loaded.append(LoadedBenchmark(bench, domain, proxy, domain.load(bench.split, limit=settings.limit,
                                                                        seed=settings.seed)))
    return loaded


def reserve_for(backend: Any, tokenizer: Any, loaded: list[LoadedBenchmark], settings: SuiteSettings) -> int:
    """Size the backend's static KV cache (when it has one) for the longest prompt of every loaded benchmark plus
    `max_new_tokens`, so the whole suite decodes in one cache shape (one compiled graph on CUDA; with the graph
    backend's reuse_rows a short last chunk fills the same batch). Returns that prompt length."""
    from mgs.rl.model import longest_prompt_tokens

    longest = max((longest_prompt_tokens(tokenizer, b.samples, settings.template) for b in loaded), default=0)
    reserve = getattr(backend, "reserve", None)
    if reserve is not None and longest:
        reserve(longest, settings.max_new_tokens)
    return longest


def run_benchmarks(
    backend: Any,
    tokenizer: Any,
    benchmarks: list[Benchmark] | list[LoadedBenchmark],
    settings: SuiteSettings,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, EvalResult], dict[str, SetInfo]]:
    """Evaluate every benchmark (given as `Benchmark`s, or already `load_benchmarks`-ed); returns (results, set
    infos) keyed by set name."""
    loaded = benchmarks
    if not all(isinstance(b, LoadedBenchmark) for b in benchmarks):
        loaded = load_benchmarks(list(benchmarks), settings)
    results: dict[str, EvalResult] = {}
    infos: dict[str, SetInfo] = {}
    for item in loaded:
        t0 = time.perf_counter()
        bench, domain, proxy, samples = item.bench, item.domain, item.proxy, item.samples
        common = dict(max_new_tokens=settings.max_new_tokens, template=settings.template, seed=settings.seed,
                      batch_size=settings.batch_size or 16)
        main = bench.main_metric if not bench.chat else None
        res = evaluate_domain(backend, tokenizer, domain, samples, main_metric=main, **common)
        if bench.chat:
            main = _chat_main_metric(list(res.metrics), proxy)
            res = EvalResult(res.metrics, res.records, main)
            res.metrics.update(_chat_stderr(domain, samples, res, main))
        note = "similarity to the reference answer (MiniLM), a proxy: no reward model given" if proxy else ""
        scale = 100.0
        infos[bench.name] = SetInfo(domain=bench.domain_kind, main_metric=main, scale=scale, proxy=proxy, note=note,
                                    settings={"split": bench.split, "num_samples": 1, "temperature": 0.0,
                                              "table_metrics": list(bench.table_metrics), **common})
        results[bench.name] = res
        log(f"{bench.name}: {main} = {res.metrics[main] * scale:.2f}% over {len(samples)} prompts "
            f"({time.perf_counter() - t0:.1f} s)")
        if bench.sampling and settings.samples > 1:
            k = settings.samples
            res_k = evaluate_domain(backend, tokenizer, domain, samples, num_samples=k,
                                    temperature=settings.sample_temperature, main_metric=bench.main_metric, **common)
            name = f"{bench.name}@{k}"
            results[name] = res_k
            infos[name] = SetInfo(domain=bench.domain_kind, main_metric=bench.main_metric, scale=scale,
                                  in_total=False, note=f"avg@{k}, temperature {settings.sample_temperature}",
                                  settings={"split": bench.split, "num_samples": k,
                                            "temperature": settings.sample_temperature,
                                            "table_metrics": list(bench.table_metrics), **common})
            log(f"{name}: avg@{k} {bench.main_metric} = {res_k.metrics[bench.main_metric] * scale:.2f}%")
    return results, infos


def _chat_stderr(domain: Any, samples: list, res: EvalResult, main: str) -> dict[str, float]:
    """Standard error over prompts of the chosen chat headline (win rate: of the per-prompt win indicator)."""
    from mgs.domains.base import RewardResult
    from mgs.eval.runner import stderr_of_mean

    if f"{main}_stderr" in res.metrics:
        return {}
    by_uid = {s.uid: s for s in samples}
    values = []
    for rec in res.records:
        r = RewardResult(rec["score"], rec["parts"], rec["info"])
        v = domain.metrics([by_uid[rec["uid"]]], [r]).get(main)
        if v is not None and math.isfinite(v):
            values.append(float(v))
    return {f"{main}_stderr": stderr_of_mean(values)}


def format_table(payload: dict[str, Any]) -> str:
    """The printed results table: one row per set (headline %, stderr, n, extra metrics), Total, footer."""
    rows = [("set", "metric", "score %", "+-", "n", "other metrics (%)")]
    proxies = []
    for name, s in payload["sets"].items():
        m = s["metrics"]
        extra = [f"{k}={100 * m[k]:.1f}" for k in s.get("settings", {}).get("table_metrics", [])
                 if k in m and k != s["main_metric"]]
        if s["domain"] == "chat" and not s["proxy"] and "score_mean" in m and s["main_metric"] != "score_mean":
            extra.append(f"rm_score_mean={m['score_mean']:.3f} (raw)")
        mark = "*" if s["proxy"] else ""
        if s["proxy"]:
            proxies.append(name)
        rows.append((name + mark + ("" if s.get("in_total", True) else " (not in Total)"), s["main_metric"],
                     f"{s['score']:.2f}", "" if not math.isfinite(s["stderr"]) else f"{s['stderr']:.2f}",
                     f"{int(m.get('num_prompts', 0))}", ", ".join(extra)))
    tot = payload["total"]
    rows.append(("Total", "mean of headlines", f"{tot['value']:.2f}", "", str(len(tot["sets"])), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    lines.append(f"{TOTAL_FORMULA}: {', '.join(tot['sets'])}.")
    if proxies:
        lines.append(f"* proxy: {', '.join(proxies)} scored by similarity to the reference answer (no reward model "
                     "given); not comparable to reward-model or judge scores.")
    return "\n".join(lines)


def evaluate_model(
    model_or_run: str,
    benchmarks: list[Benchmark],
    settings: SuiteSettings,
    *,
    out: str | Path | None = None,
    tag: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """Load the model (or RUN_DIR's latest checkpoint), run the benchmarks, write the results file.
    Returns (payload, path written)."""
    from mgs.diagnostics.rundir import RunDir, is_run_dir

    step = None
    if is_run_dir(model_or_run):
        run = RunDir(Path(model_or_run))
        ckpt = run.latest_checkpoint()
        policy = load_checkpoint_policy(run, ckpt, device=device, dtype=dtype)
        state = ckpt / "state.json"
        if state.is_file():
            import json

            step = json.loads(state.read_text()).get("step")
        if settings.template == "none" and run.cfg("rollout.template", "none") != "none":
            settings = SuiteSettings(**{**settings.__dict__, "template": run.cfg("rollout.template")})
        path = Path(out) if out else run.path / "eval" / f"{tag or 'bench_' + ckpt.name}.json"
        model_name = f"{run.path.name}/{ckpt.name}"
    else:
        from mgs.rl.model import load_policy

        policy = load_policy(model_or_run, dtype=dtype, device=_device(device))
        path = Path(out) if out else Path(f"eval_{Path(model_or_run).name or 'model'}.json")
        model_name = model_or_run
    policy.model.eval()
    from mgs.rl.rollout import ROLLOUT_BACKENDS

    on_cuda = policy.device.type == "cuda"
    if settings.batch_size is None:
        settings = SuiteSettings(**{**settings.__dict__, "batch_size": 256 if on_cuda else 16})
    backend = ROLLOUT_BACKENDS.get("auto")(policy.model, policy.tokenizer, compile=settings.compile)
    loaded = load_benchmarks(benchmarks, settings)
    reserve_for(backend, policy.tokenizer, loaded, settings)
    results, infos = run_benchmarks(backend, policy.tokenizer, loaded, settings, log=log)
    payload = write_eval(path, results, infos, tag=tag or path.stem, model=model_name, step=step)
    return payload, path


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_checkpoint_policy(run: Any, ckpt: Path, *, device: str = "auto", dtype: str = "float32"):
    """A checkpoint's policy: `model/` is a full `save_pretrained` model, or a peft adapter on the config's base
    model (merged for evaluation)."""
    from mgs.rl.model import load_policy

    model_dir = ckpt / "model"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{ckpt} has no model/ folder; is it an MGS checkpoint?")
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base_name = run.cfg("model.name")
        base = load_policy(base_name, dtype=dtype, device=_device(device))
        merged = PeftModel.from_pretrained(base.model, str(model_dir)).merge_and_unload()
        base.model = merged
        return base
    return load_policy(str(model_dir), dtype=dtype, device=_device(device))
