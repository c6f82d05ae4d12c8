"""Chat prompt sources: each file format on small files written here (same shapes as the public sets), the
disjoint train/test split, deterministic loading, clear errors; and the real sets under /work/shared/data when
present. Uses a callable reward (no model) so nothing heavy loads."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mgs.domains import build_domain
from mgs.domains.chat import CHAT_SOURCES, ChatDomain
from mgs.domains.chat.builtin_prompts import BUILTIN_CHAT, builtin_split

SHARED = Path("/work/shared/data")
NO_MODEL = {"reward": "callable", "reward_params": {"function": "builtins:len"}}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_builtin_prompts_are_disjoint_short_and_complete():
    train, test = builtin_split("train"), builtin_split("test")
    assert len(BUILTIN_CHAT) == 48 and (len(train), len(test)) == (36, 12)
    assert not {u for u, _, _ in train} & {u for u, _, _ in test}
    assert not {q for _, q, _ in train} & {q for _, q, _ in test}
    assert len({u for u, _, _ in BUILTIN_CHAT}) == 48
    for _, question, reference in BUILTIN_CHAT:
        assert question.strip() and 1 <= reference.count(".") + reference.count("!") + reference.count("?") <= 4
        assert len(reference.split()) <= 45
    domain = build_domain("chat")  # the embedded default: builtin prompts + similarity proxy (not loaded yet)
    samples = domain.load("train", limit=5, seed=1)
    assert len(samples) == 5 and all(s.domain == "chat" and s.target for s in samples)
    assert [s.uid for s in samples] == [s.uid for s in domain.load("train", limit=5, seed=1)]
    assert [s.uid for s in samples] != [s.uid for s in domain.load("train", limit=5, seed=2)]


def test_arena_hard_joins_references_by_uid(tmp_path):
    write_jsonl(tmp_path / "question.jsonl", [
        {"uid": "q1", "category": "hard_prompt", "subcategory": "coding", "prompt": "Write a loop."},
        {"uid": "q2", "category": "creative_writing", "subcategory": "poem", "prompt": "Write a poem."}])
    write_jsonl(tmp_path / "o3-mini-2025-01-31.jsonl", [
        {"uid": "q2", "messages": [{"role": "user", "content": "Write a poem."},
                                   {"role": "assistant", "content": {"answer": "Roses are red."}}]},
        {"uid": "q1", "messages": [{"role": "user", "content": "Write a loop."},
                                   {"role": "assistant", "content": {"answer": "for i in range(3): pass"}}]}])
    records = {r.uid: r for r in CHAT_SOURCES.get("arena_hard")(path=str(tmp_path))["all"]}
    assert records["arena_hard-q1"].reference == "for i in range(3): pass"
    assert records["arena_hard-q2"].reference == "Roses are red."
    assert records["arena_hard-q2"].messages == ({"role": "user", "content": "Write a poem."},)
    assert records["arena_hard-q2"].meta["category"] == "creative_writing"
    no_refs = CHAT_SOURCES.get("arena_hard")(path=str(tmp_path / "question.jsonl"), references=None)["all"]
    assert all(r.reference is None for r in no_refs)
    with pytest.raises(FileNotFoundError, match="references"):
        CHAT_SOURCES.get("arena_hard")(path=str(tmp_path), references="missing.jsonl")


def test_alpaca_eval_mt_bench_wildchat_and_jsonl(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi!", "dataset": "helpful_base"}]))
    (rec,) = CHAT_SOURCES.get("alpaca_eval")(path=str(alpaca))["all"]
    assert (rec.uid, rec.messages[0]["content"], rec.reference) == ("alpaca_eval-0", "Say hi.", "Hi!")

    mt = tmp_path / "mt"
    mt.mkdir()
    write_jsonl(mt / "question.jsonl", [{"question_id": 81, "category": "writing", "turns": ["Blog.", "Again."]},
                                        {"question_id": 101, "category": "reasoning", "turns": ["Race?", "Last?"]}])
    write_jsonl(mt / "reference_gpt-4.jsonl", [{"question_id": 101, "choices": [{"turns": ["Second.", "x"]}]}])
    recs = {r.uid: r for r in CHAT_SOURCES.get("mt_bench")(path=str(mt))["all"]}
    assert recs["mt_bench-101"].reference == "Second." and recs["mt_bench-81"].reference is None
    assert recs["mt_bench-81"].messages[0]["content"] == "Blog."  # first turn only

    wild = tmp_path / "wild"
    wild.mkdir()
    for name, n in (("train", 3), ("val", 2)):
        pd.DataFrame({"prompt": [[{"role": "user", "content": f"{name} {i}"}] for i in range(n)],
                      "ability": "chat"}).to_parquet(wild / f"{name}.parquet")
    domain = ChatDomain(source="wildchat", path=str(wild), **NO_MODEL)
    assert sorted(s.messages[0]["content"] for s in domain.load("test")) == ["val 0", "val 1"]
    assert len(domain.load("train")) == 3 and len(domain.load("all")) == 5
    assert all(s.target is None for s in domain.load("all"))

    data = write_jsonl(tmp_path / "mine.jsonl", [
        {"uid": "u1", "prompt": "Hello?", "reference": "Hello!"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}])
    recs = CHAT_SOURCES.get("jsonl")(path=str(data))["all"]
    assert [r.uid for r in recs] == ["u1", "mine-2"] and recs[1].reference is None
    assert recs[1].messages[0] == {"role": "system", "content": "Be brief."}


def test_hash_split_is_disjoint_stable_and_covers_everything(tmp_path):
    data = write_jsonl(tmp_path / "many.jsonl", [{"uid": f"p{i}", "prompt": f"q{i}"} for i in range(200)])
    domain = ChatDomain(source="jsonl", path=str(data), test_fraction=0.25, **NO_MODEL)
    train = {s.uid for s in domain.load("train")}
    test = {s.uid for s in domain.load("test")}
    assert not train & test and len(train | test) == 200
    assert 30 <= len(test) <= 70  # ~25%
    assert test == {s.uid for s in ChatDomain(source="jsonl", path=str(data), test_fraction=0.25,
                                              **NO_MODEL).load("test", seed=7)}


@pytest.mark.parametrize("row, message", [
    ({"prompt": 3}, "string or a list"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "end with a user"),
    ({"messages": [{"role": "bot", "content": "q"}]}, "role in"),
    ({"text": "q"}, "'messages' or 'prompt'"),
    ({"prompt": "q", "reference": 5}, "'reference' must be a string"),
])
def test_bad_records_fail_with_the_line_and_what_to_do(tmp_path, row, message):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, row])
    with pytest.raises(ValueError, match=message) as err:
        CHAT_SOURCES.get("jsonl")(path=str(data))
    assert "bad.jsonl:2" in str(err.value)


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(KeyError, match="choose from"):
        ChatDomain(source="sharegpt")
    with pytest.raises(ValueError, match="set path"):
        ChatDomain(source="alpaca_eval", **NO_MODEL).load("test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ChatDomain(source="jsonl", path=str(tmp_path / "nope.jsonl"), **NO_MODEL).load("test")
    with pytest.raises(ValueError, match="unknown split"):
        ChatDomain(**NO_MODEL).load("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        ChatDomain(test_fraction=1.0)


@pytest.mark.skipif(not SHARED.exists(), reason="the shared public data sets are not on this machine")
def test_real_public_sets_load():
    arena = ChatDomain(source="arena_hard", path=str(SHARED / "arena_hard"), **NO_MODEL).load("all")
    assert len(arena) == 750 and all(s.target for s in arena)
    alpaca = ChatDomain(source="alpaca_eval", path=str(SHARED / "alpaca_eval"), **NO_MODEL).load("all")
    assert len(alpaca) == 805 and all(s.target for s in alpaca)
    mt = ChatDomain(source="mt_bench", path=str(SHARED / "mt_bench"), **NO_MODEL).load("all")
    assert len(mt) == 80 and sum(s.target is not None for s in mt) == 30
    wild = ChatDomain(source="wildchat", path=str(SHARED / "wildchat_if"), **NO_MODEL)
    assert len(wild.load("test")) == 250 and len(wild.load("train", limit=10)) == 10
    with pytest.raises(ValueError, match="without a reference"):
        ChatDomain(source="wildchat", path=str(SHARED / "wildchat_if")).load("test")
