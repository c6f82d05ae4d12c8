"""The benchmark registry: benchmark name -> the domain (kind + loader params) that holds its prompts and reward,
the split to read, its headline metric and the metrics its table shows.

A benchmark is a domain pointed at an evaluation file, so it is scored by exactly the code that trains (math:
math-verify on the final answer; IFEval/IFBench: the maintained checkers on the response only; chat: the reward
model, or the offline similarity proxy, labelled as a proxy). Files are found under a data folder laid out like
/work/shared/data (`gsm8k/test.jsonl`, `math500/test.jsonl`, `ifeval/input_data.jsonl`, `ifbench/IFBench_test.jsonl`,
`alpaca_eval/alpaca_eval_gpt4_baseline.json`, `mt_bench/question.jsonl`, `arena_hard/question.jsonl`); without one,
benchmarks that have a Hugging Face id load it from the hub (needs `datasets` and internet). Adding a benchmark is
one `register_benchmark(...)` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgs.registry import Registry

DEFAULT_BENCHMARKS = ("gsm8k", "math500", "ifeval", "ifbench", "alpaca_eval", "mt_bench")
IFEVAL_METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


@dataclass(frozen=True)
class Benchmark:
    """`file`: path under the data folder (the domain param named `file_param` gets it, `paths.test` style keys
    nest); `params`: fixed domain params; `hf_params`: domain params that load it from the hub instead (None = no
    hub source); `main_metric` / `table_metrics`: what the results table shows; `sampling`: avg@k makes sense
    (verifiable single answers); `chat`: scored by a reward model (`--reward-model`) or the similarity proxy."""

    name: str
    domain_kind: str
    file: str
    file_param: str
    split: str = "test"
    params: dict[str, Any] = field(default_factory=dict)
    hf_params: dict[str, Any] | None = None
    main_metric: str = "accuracy"
    table_metrics: tuple[str, ...] = ()
    sampling: bool = False
    chat: bool = False
    description: str = ""

    def domain_params(self, data_dir: str | Path | None) -> dict[str, Any]:
        """Domain constructor params reading this benchmark from `data_dir` (or the hub when `data_dir` is None)."""
        params = dict(self.params)
        if data_dir is None:
            if self.hf_params is None:
                raise ValueError(
                    f"benchmark {self.name!r} has no Hugging Face source here; pass --data-dir DIR with {self.file} "
                    "inside (a folder laid out like /work/shared/data)")
            params.update(self.hf_params)
            return params
        path = Path(data_dir) / self.file
        if not path.is_file():
            raise FileNotFoundError(f"benchmark {self.name!r}: {path} not found; --data-dir must hold {self.file}")
        _set_dotted(params, self.file_param, str(path))
        return params


def _set_dotted(params: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = params
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(b: Benchmark) -> Benchmark:
    return BENCHMARKS.register(b.name)(b)


register_benchmark(Benchmark(
    "gsm8k", "math", "gsm8k/test.jsonl", "paths.test", params={"source": "jsonl"},
    hf_params={"source": "hf", "dataset": "openai/gsm8k", "config": "main"},
    table_metrics=("accuracy",), sampling=True, description="GSM8K test (1,319 grade-school problems)"))
register_benchmark(Benchmark(
    "math500", "math", "math500/test.jsonl", "paths.test", params={"source": "jsonl"},
    hf_params={"source": "hf", "dataset": "HuggingFaceH4/MATH-500"},
    table_metrics=("accuracy",), sampling=True, description="MATH-500 (competition math, levels 1-5)"))
register_benchmark(Benchmark(
    "ifeval", "ifeval", "ifeval/input_data.jsonl", "test_path", main_metric="prompt_level_strict_acc",
    table_metrics=IFEVAL_METRICS, description="IFEval (541 prompts, 25 verifiable instruction types)"))
register_benchmark(Benchmark(
    "ifbench", "ifbench", "ifbench/IFBench_test.jsonl", "test_path", main_metric="prompt_level_strict_acc",
    table_metrics=IFEVAL_METRICS, description="IFBench (299 prompts, 58 out-of-distribution constraints)"))
register_benchmark(Benchmark(
    "alpaca_eval", "chat", "alpaca_eval/alpaca_eval_gpt4_baseline.json", "path", split="all",
    params={"source": "alpaca_eval"}, chat=True,
    description="AlpacaEval prompts (805) against the GPT-4 reference outputs"))
register_benchmark(Benchmark(
    "mt_bench", "chat", "mt_bench/question.jsonl", "path", split="all", params={"source": "mt_bench"}, chat=True,
    description="MT-Bench first turns (80); GPT-4 references for 30 of them"))
register_benchmark(Benchmark(
    "arena_hard", "chat", "arena_hard/question.jsonl", "path", split="all", params={"source": "arena_hard"},
    chat=True, description="Arena-Hard v2 (750 prompts) against o3-mini answers"))


def parse_benchmarks(text: str | None) -> list[Benchmark]:
    """'gsm8k,ifeval' -> the Benchmarks (the defaults when empty), unknown names fail with the list."""
    names = [n.strip() for n in (text or ",".join(DEFAULT_BENCHMARKS)).split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark listed twice in {text!r}")
    return [BENCHMARKS.get(n) for n in names]
