"""Math problem sources -> uniform records `{"uid", "question", "answer", "meta"}` for the math domain.

Sources (registry `SOURCES`, chosen by the domain's `source` param):
- `procedural`: the offline arithmetic generator (`arith.py`), the embedded default;
- `jsonl`: a local file per split, GSM8K format (`question`, `answer` ending in `#### n`) or MATH format
  (`problem`, plus `answer` or a `solution` with a `\\boxed{}`), detected per record;
- `hf`: a Hugging Face dataset id (needs `pip install datasets` and internet), same record formats.
Every record gets a stable `uid` from its content (or MATH's `unique_id`), so it is the same across runs and machines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from mgs.domains.math import arith
from mgs.domains.math.answer import last_boxed
from mgs.registry import Registry

Record = dict[str, Any]
SOURCES: Registry[Callable[..., list[Record]]] = Registry("math data source")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def to_record(raw: dict[str, Any], prefix: str) -> Record:
    """One raw GSM8K- or MATH-format record -> a uniform record. Raises ValueError naming the missing fields."""
    if "question" in raw and "answer" in raw and "####" in str(raw["answer"]):
        question = str(raw["question"])
        solution = str(raw["answer"])
        answer = solution.rsplit("####", 1)[1].strip()
        meta = {"format": "gsm8k"}
    elif "problem" in raw and ("answer" in raw or "solution" in raw):
        question = str(raw["problem"])
        answer = raw.get("answer")
        if answer is None or str(answer).strip() == "":
            answer = last_boxed(str(raw.get("solution", "")))
        if not answer:
            raise ValueError("MATH-format record has no `answer` and no \\boxed{} in its `solution`")
        answer = str(answer).strip()
        meta = {"format": "math", **{k: raw[k] for k in ("level", "subject", "type", "unique_id") if k in raw}}
        if isinstance(meta.get("level"), str) and meta["level"].startswith("Level "):
            meta["level"] = int(meta["level"].split()[1]) if meta["level"].split()[1].isdigit() else meta["level"]
    else:
        raise ValueError(
            f"unrecognised math record with keys {sorted(raw)}: expected GSM8K format (`question`, `answer` with "
            "`#### n`) or MATH format (`problem` and `answer` or `solution` with \\boxed{})"
        )
    uid = f"{prefix}:{raw['unique_id']}" if "unique_id" in raw else f"{prefix}:{_digest(question)}"
    return {"uid": uid, "question": question, "answer": answer, "meta": meta}


def _dedupe_uids(records: list[Record]) -> list[Record]:
    counts: dict[str, int] = {}
    for r in records:
        n = counts.get(r["uid"], 0)
        counts[r["uid"]] = n + 1
        if n:
            r["uid"] = f"{r['uid']}#{n + 1}"
    return records


def _convert(rows: Iterable[dict[str, Any]], prefix: str, where: str) -> list[Record]:
    out = []
    for i, raw in enumerate(rows):
        try:
            out.append(to_record(raw, prefix))
        except ValueError as e:
            raise ValueError(f"{where}, record {i}: {e}") from None
    return _dedupe_uids(out)


@SOURCES.register("procedural")
def procedural(split: str, *, n: int, seed: int, difficulty: arith.Difficulty) -> list[Record]:
    """`n` generated problems of `split` (train/test disjoint by construction)."""
    return [
        {
            "uid": f"arith:{_digest(p.question)}",
            "question": p.question,
            "answer": str(p.answer),
            "meta": {"format": "arith", "steps": difficulty.steps},
        }
        for p in arith.generate(split, n, seed, difficulty)
    ]


@SOURCES.register("jsonl")
def jsonl(split: str, *, path: str | Path) -> list[Record]:
    """Records of a local JSONL file (one JSON object a line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"math data file {path} does not exist; pass the JSONL path for split {split!r}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno} is not valid JSON ({e}); expected one object a line") from None
    return _convert(rows, prefix=path.parent.name or "jsonl", where=str(path))


@SOURCES.register("hf")
def hf(split: str, *, dataset: str, hf_split: str, config: str | None = None) -> list[Record]:
    """Records of a Hugging Face dataset (e.g. `openai/gsm8k` config `main`; `HuggingFaceH4/MATH-500`)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "math source 'hf' needs the `datasets` library: `pip install datasets` (and internet access), "
            "or download the data and use source 'jsonl' with a path"
        ) from None
    rows = datasets.load_dataset(dataset, config, split=hf_split)
    return _convert(rows, prefix=dataset.rsplit("/", 1)[-1], where=f"dataset {dataset} split {hf_split}")
