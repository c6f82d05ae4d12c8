"""Chat prompt sources: each turns a user-given path into chat records (prompt messages + optional reference).

Sources live in the `CHAT_SOURCES` registry; each returns `{split: [ChatRecord, ...]}`: the splits its files
define ("train"/"test"), or just "all" when the data has a single file (the domain then splits it disjointly by a
hash of the uid). Data is read from where the user keeps it and never copied into the repository.

| source       | path                                             | reference answer                               |
|--------------|--------------------------------------------------|------------------------------------------------|
| builtin      | (none: `builtin_prompts.py`)                     | our own 1-3 sentence answers                   |
| wildchat     | dir with train.parquet + val.parquet, or a file  | none (needs a reward model)                    |
| arena_hard   | dir with question.jsonl, or that file            | o3-mini answers (`references` file, by `uid`)  |
| alpaca_eval  | alpaca_eval_gpt4_baseline.json, or its dir       | GPT-4 `output`                                 |
| mt_bench     | dir with question.jsonl, or that file            | first turn of reference_gpt-4.jsonl (30 of 80) |
| jsonl        | a .jsonl file: messages or prompt [+ reference]  | `reference` field when present                 |
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mgs.domains.base import Message
from mgs.domains.chat.builtin_prompts import builtin_split
from mgs.registry import Registry

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatRecord:
    """One chat prompt: `messages` end with a user turn; `reference` is a good answer to it, when known."""

    uid: str
    messages: tuple[Message, ...]
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


ChatSource = Callable[..., dict[str, list[ChatRecord]]]
CHAT_SOURCES: Registry[ChatSource] = Registry("chat data source")


def to_messages(value: Any, where: str) -> tuple[Message, ...]:
    """Chat messages from a prompt field: a string (one user turn) or a list of {"role", "content"} dicts."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{where}: a prompt must be a string or a list of {{'role', 'content'}} messages, "
                         f"got {type(value).__name__}") from None
    messages = []
    for item in items:
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise ValueError(f"{where}: each message needs a role in {list(ROLES)} and a string content, "
                             f"got {str(item)[:120]}")
        messages.append({"role": item["role"], "content": item["content"]})
    if not messages or messages[-1]["role"] != "user":
        raise ValueError(f"{where}: a prompt must end with a user message (put answers in 'reference')")
    return tuple(messages)


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None


def _existing(path: str | Path | None, source: str, default_name: str | None = None) -> Path:
    """The path the user gave (or `default_name` inside it when it is a directory), which must exist."""
    if path is None:
        raise ValueError(f"chat source {source!r} reads its data from a path: set path: /where/the/data/is")
    p = Path(path).expanduser()
    if p.is_dir() and default_name is not None:
        p = p / default_name
    if not p.exists():
        raise FileNotFoundError(f"chat source {source!r}: {p} does not exist; pass the path of your copy of the data")
    return p


def _answer_text(content: Any) -> str | None:
    """An answer's text: a string, or a dict holding it under "answer"/"content" (Arena-Hard's answer files)."""
    if isinstance(content, dict):
        content = content.get("answer", content.get("content"))
    return content if isinstance(content, str) and content.strip() else None


@CHAT_SOURCES.register("builtin")
def builtin_source(path: str | None = None) -> dict[str, list[ChatRecord]]:
    """Our embedded everyday questions with short reference answers (fixed disjoint train/test split)."""
    return {split: [ChatRecord(f"builtin-{uid}", ({"role": "user", "content": q},), ref, {"source": "builtin"})
                    for uid, q, ref in builtin_split(split)] for split in ("train", "test")}


@CHAT_SOURCES.register("wildchat")
def wildchat_source(path: str) -> dict[str, list[ChatRecord]]:
    """The paper's WildChat prompts (parquet, column `prompt` = messages). A directory gives train.parquet as
    "train" and val.parquet (or test.parquet) as "test"; a single file gives "all". No references."""
    import pandas as pd

    p = _existing(path, "wildchat")
    if p.is_dir():
        files = {"train": p / "train.parquet", "test": p / "val.parquet"}
        if not files["test"].exists():
            files["test"] = p / "test.parquet"
        missing = [str(f) for f in files.values() if not f.exists()]
        if missing:
            raise FileNotFoundError(f"chat source 'wildchat': missing {missing}; pass a directory with "
                                    "train.parquet and val.parquet, or one parquet file")
    else:
        files = {"all": p}
    out = {}
    for split, file in files.items():
        frame = pd.read_parquet(file, columns=["prompt"])
        out[split] = [ChatRecord(f"wildchat-{file.stem}-{i}", to_messages(prompt, f"{file} row {i}"), None,
                                 {"source": "wildchat"}) for i, prompt in enumerate(frame["prompt"])]
    return out


@CHAT_SOURCES.register("arena_hard")
def arena_hard_source(path: str, references: str | None = "o3-mini-2025-01-31.jsonl") -> dict[str, list[ChatRecord]]:
    """Arena-Hard questions (`uid`, `prompt`, `category`); references from an answer file (same directory unless
    an absolute path) joined by `uid`, the last assistant message's text. `references=None`: no references."""
    questions = _existing(path, "arena_hard", "question.jsonl")
    answers: dict[str, str] = {}
    if references:
        ref_path = Path(references) if Path(references).is_absolute() else questions.parent / references
        if not ref_path.exists():
            raise FileNotFoundError(f"chat source 'arena_hard': reference answers {ref_path} not found; pass "
                                    "references: <answer file> or references: null")
        for number, row in _read_jsonl(ref_path):
            turns = [m for m in row.get("messages", []) if isinstance(m, dict) and m.get("role") == "assistant"]
            text = _answer_text(turns[-1].get("content")) if turns else None
            if text is not None:
                answers[str(row["uid"])] = text
    records = [ChatRecord(f"arena_hard-{row['uid']}", to_messages(row["prompt"], f"{questions}:{number}"),
                          answers.get(str(row["uid"])), {"source": "arena_hard", "category": row.get("category"),
                                                         "subcategory": row.get("subcategory")})
               for number, row in _read_jsonl(questions)]
    return {"all": records}


@CHAT_SOURCES.register("alpaca_eval")
def alpaca_eval_source(path: str) -> dict[str, list[ChatRecord]]:
    """AlpacaEval: a JSON list of {"instruction", "output" (GPT-4 reference), "dataset"}."""
    file = _existing(path, "alpaca_eval", "alpaca_eval_gpt4_baseline.json")
    rows = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"{file}: expected a JSON list of {{'instruction', 'output'}} objects")
    return {"all": [ChatRecord(f"alpaca_eval-{i}", to_messages(row["instruction"], f"{file} item {i}"),
                               _answer_text(row.get("output")), {"source": "alpaca_eval", "dataset": row.get("dataset")})
                    for i, row in enumerate(rows)]}


@CHAT_SOURCES.register("mt_bench")
def mt_bench_source(path: str, references: str | None = "reference_gpt-4.jsonl") -> dict[str, list[ChatRecord]]:
    """MT-Bench first turns (`question_id`, `turns[0]`, `category`); GPT-4 reference first turns where present."""
    questions = _existing(path, "mt_bench", "question.jsonl")
    answers: dict[int, str] = {}
    ref_path = None if not references else (
        Path(references) if Path(references).is_absolute() else questions.parent / references)
    if ref_path is not None and ref_path.exists():
        for _, row in _read_jsonl(ref_path):
            turns = (row.get("choices") or [{}])[0].get("turns") or []
            if turns and _answer_text(turns[0]):
                answers[int(row["question_id"])] = turns[0]
    return {"all": [ChatRecord(f"mt_bench-{row['question_id']}", to_messages(row["turns"][0], f"{questions}:{n}"),
                               answers.get(int(row["question_id"])), {"source": "mt_bench",
                                                                     "category": row.get("category")})
                    for n, row in _read_jsonl(questions)]}


@CHAT_SOURCES.register("jsonl")
def jsonl_source(path: str) -> dict[str, list[ChatRecord]]:
    """Generic JSONL: one object a line with `messages` (chat messages) or `prompt` (string or messages), an
    optional `reference` answer and an optional `uid` (default: the line number)."""
    file = _existing(path, "jsonl")
    records = []
    for number, row in _read_jsonl(file):
        if not isinstance(row, dict) or ("messages" not in row and "prompt" not in row):
            raise ValueError(f"{file}:{number}: expected an object with 'messages' or 'prompt'")
        reference = row.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise ValueError(f"{file}:{number}: 'reference' must be a string")
        uid = str(row.get("uid", row.get("id", f"{file.stem}-{number}")))
        records.append(ChatRecord(uid, to_messages(row.get("messages", row.get("prompt")), f"{file}:{number}"),
                                  reference if reference and reference.strip() else None, {"source": "jsonl"}))
    return {"all": records}
