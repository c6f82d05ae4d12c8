"""IFEval domain: every registry type passes and fails on the response alone, prompt text never leaks into a check,
sentence counting works without nltk data and without network, IFEval's metric definitions, loaders, generator."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mgs.domains import build_domain
from mgs.domains.base import RewardResult, Sample
from mgs.domains.ifeval import BASE_TASKS, CHECKERS, PRESETS, generate_prompts
from mgs.domains.ifeval.generator import EXTRA_CONFLICTS

REPO = Path(__file__).resolve().parents[2]
SHARED = next((p for p in (REPO.parent / "shared", Path("/work/shared")) if p.is_dir()), REPO.parent / "shared")
IFEVAL_FILE = SHARED / "data/ifeval/input_data.jsonl"
IFBENCH_FILE = SHARED / "data/ifbench/IFBench_test.jsonl"

# instruction id -> (kwargs, a response that follows it, a response that doesn't)
CASES = {
    "keywords:existence": ({"keywords": ["river"]}, "The river flows.", "The lake is calm."),
    "keywords:frequency": ({"keyword": "cat", "frequency": 2, "relation": "at least"}, "A cat and a cat.", "A cat."),
    "keywords:forbidden_words": ({"forbidden_words": ["bad"]}, "All is good.", "This is bad."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Pizza zoo.",
                                  "Hello there."),
    "language:response_language": ({"language": "de"},
                                   "Heute gehe ich mit meinem Hund im Park spazieren, weil das Wetter schön ist.",
                                   "Today I am walking my dog in the park because the weather is nice."),
    "length_constraints:number_sentences": ({"num_sentences": 3, "relation": "less than"}, "One here. Two here.",
                                            "One here. Two here. Three here. Four here."),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First part.\n***\nSecond part.", "Only one."),
    "length_constraints:number_words": ({"num_words": 5, "relation": "less than"}, "Three short words.",
                                        "This response has far too many words in it."),
    "length_constraints:nth_paragraph_first_word": ({"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
                                                    "First part.\n\nThen the second.", "First part.\n\nAnd second."),
    "detectable_content:number_placeholders": ({"num_placeholders": 1}, "Dear [name], hi.", "Dear friend, hi."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Hello.\nP.S. See you.", "Hello."),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* apples\n* pears", "* apples"),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Sure thing."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 1}, "This is *important* text.",
                                                      "Plain text."),
    "detectable_format:multiple_sections": ({"section_spliter": "Section", "num_sections": 2},
                                            "Section 1\nfoo\nSection 2\nbar", "foo and bar"),
    "detectable_format:json_format": ({}, '{"a": 1}', "not json at all"),
    "detectable_format:title": ({}, "<<My Title>>\nSome text.", "My Title\nSome text."),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "Only one answer."),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Write a poem."}, "Write a poem. Roses are red.",
                                  "Roses are red."),
    "startend:end_checker": ({"end_phrase": "The end."}, "A story. The end.", "The end. A story."),
    "change_case:capital_word_frequency": ({"capital_frequency": 2, "capital_relation": "at least"},
                                           "THIS IS big news.", "This is Big news."),
    "change_case:english_capital": ({}, "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY.",
                                    "This is an English sentence about the weather today."),
    "change_case:english_lowercase": ({}, "this is an english sentence about the weather today.",
                                      "This is an English sentence about the weather today."),
    "punctuation:no_comma": ({}, "No commas here.", "Yes, a comma."),
    "startend:quotation": ({}, '"Quoted text."', "Quoted text."),
}


@pytest.fixture(scope="module")
def domain():
    return build_domain("ifeval")


def _sample(ids, kwargs, prompt="Do the task."):
    return Sample(uid="t", domain="ifeval", messages=({"role": "user", "content": prompt},),
                  target={"instruction_id_list": list(ids), "kwargs": list(kwargs)})


def test_table_covers_all_25_registry_types():
    assert set(CASES) == set(CHECKERS.get("ifeval")().classes) and len(CASES) == 25


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_each_type_passes_and_fails_on_the_response(domain, instruction_id):
    kwargs, good, bad = CASES[instruction_id]
    sample = _sample([instruction_id], [kwargs])
    ok, ko = domain.score([sample, sample], [good, bad])
    assert ok.score == 1.0 and ok.info["followed"] == {instruction_id: True} and ok.info["failed"] == []
    assert ko.score == 0.0 and ko.info["failed"] == [instruction_id] and "errors" not in ko.info


def test_prompt_text_does_not_leak_into_the_check(domain):
    sample = _sample(["keywords:existence"], [{"keywords": ["river"]}], prompt="Include the keyword river.")
    assert domain.score([sample], ["The lake is calm."])[0].score == 0.0
    # empty / blank responses follow nothing, even constraints an empty text trivially meets
    trivially_met = ["keywords:forbidden_words", "punctuation:no_comma", "length_constraints:number_words"]
    sample = _sample(trivially_met, [CASES[i][0] for i in trivially_met])
    for response in ("", "  \n "):
        result = domain.score([sample], [response])[0]
        assert result.score == 0.0 and sorted(result.info["failed"]) == sorted(trivially_met)


def test_reward_is_fraction_followed_with_loose_in_info(domain):
    ids = ["change_case:english_lowercase", "punctuation:no_comma", "startend:end_checker"]
    sample = _sample(ids, [{}, {}, {"end_phrase": "bye."}])
    # capitalised first line: strict lowercase fails, loose (first line removed) passes; comma fails both
    result = domain.score([sample], ["Sure, here it is:\nall lowercase, text here and bye."])[0]
    assert result.score == pytest.approx(1 / 3)
    assert result.info["followed"] == {ids[0]: False, ids[1]: False, ids[2]: True}
    assert result.info["followed_loose"] == {ids[0]: True, ids[1]: False, ids[2]: True}
    assert result.parts == {"strict": pytest.approx(1 / 3), "loose": pytest.approx(2 / 3)}


def test_strict_and_loose_match_lm_eval_reference(domain):
    from mgs.domains.ifeval.checkers import _import_without_package_init

    (utils,) = _import_without_package_init("lm_eval.tasks", ["ifeval.utils"])
    responses = ["Sure:\n<<title>>\n*all* lowercase text here. The end.", "**\"Quoted, TEXT\"**",
                 "Intro line\n* one\n* two\nOutro", "P.S. first\nHello", ""]
    for instruction_id, (kwargs, good, bad) in CASES.items():
        for response in responses + [good, bad]:
            inp = utils.InputExample(key=0, instruction_id_list=[instruction_id], prompt="", kwargs=[kwargs])
            expected = (utils.test_instruction_following_strict(inp, response).follow_all_instructions,
                        utils.test_instruction_following_loose(inp, response).follow_all_instructions)
            info = domain.score([_sample([instruction_id], [kwargs])], [response])[0].info
            assert (info["followed"][instruction_id], info["followed_loose"][instruction_id]) == expected


def test_sentence_checks_work_offline_without_nltk_data(tmp_path):
    """Fresh interpreter, NLTK_DATA empty, sockets refused: the import asks for no download over the network,
    prints nothing, and sentence counting uses the shipped Punkt model."""
    script = textwrap.dedent("""
        import socket
        attempts = []
        def refuse(self, *a, **k):
            attempts.append(a); raise OSError("no network in this test")
        socket.socket.connect = refuse
        from mgs.domains import build_domain
        from mgs.domains.ifeval.checkers import NLTK_DOWNLOADS_BLOCKED
        d = build_domain("ifeval")
        def score(kw, text, iid="length_constraints:number_sentences"):
            from mgs.domains.base import Sample
            s = Sample("t", "ifeval", (), {"instruction_id_list": [iid], "kwargs": [kw]})
            r = d.score([s], [text])[0]
            assert "errors" not in r.info, r.info
            return r.score
        text = "Dr. Smith went home. He was tired. Then he slept."
        assert score({"num_sentences": 3, "relation": "at least"}, text) == 1.0
        assert score({"num_sentences": 4, "relation": "at least"}, text) == 0.0
        assert score({"num_sentences": 3, "relation": "less than"}, text) == 0.0
        assert score({"capital_frequency": 2, "capital_relation": "at least"}, "OK THEN. fine.",
                     "change_case:capital_word_frequency") == 1.0
        assert attempts == [], attempts
        assert "punkt_tab" in NLTK_DOWNLOADS_BLOCKED
        print("OK")
    """)
    env = dict(os.environ, NLTK_DATA=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "OK\n" and out.stderr == ""


def test_checker_errors_are_recorded_and_all_errors_give_none(domain):
    broken = ("combination:repeat_prompt", {})  # its build_description raises without prompt_to_repeat
    sample = _sample([broken[0], "punctuation:no_comma"], [broken[1], {}])
    result = domain.score([sample], ["No commas."])[0]
    assert result.score == 0.5 and result.info["failed"] == [broken[0]]
    assert "ValueError" in result.info["errors"][broken[0]]
    only_broken = domain.score([_sample([broken[0]], [broken[1]])], ["x"])[0]
    assert only_broken.score is None and "no instruction" in only_broken.info["error"]


def test_metrics_follow_ifeval_definitions(domain):
    def res(strict, loose):
        return RewardResult(sum(strict.values()) / len(strict), info={"followed": strict, "followed_loose": loose})

    results = [res({"a": True, "b": False}, {"a": True, "b": True}), res({"c": True}, {"c": True}),
               RewardResult.unscorable("x")]
    m = domain.metrics([None] * 3, results)
    assert m["prompt_level_strict_acc"] == 0.5 and m["inst_level_strict_acc"] == pytest.approx(2 / 3)
    assert m["prompt_level_loose_acc"] == 1.0 and m["inst_level_loose_acc"] == 1.0
    assert m["reward_mean"] == 0.75 and m["none_frac"] == pytest.approx(1 / 3)
    assert m["num_samples"] == 3 and m["num_scored"] == 2 and m["num_instructions"] == 3


def test_rewards_never_raise_on_garbage(domain):
    ids = sorted(CASES)
    sample = _sample(ids, [CASES[i][0] for i in ids])
    rng = random.Random(0)
    garbage = ["", "\x00\x01\x02", "}{][*#" * 50, "日本語のテキスト。" * 20, "🙂" * 500, "\n" * 1000,
               "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(5000)), "A, b. " * 3000]
    for result in domain.score([sample] * len(garbage), garbage):
        assert result.score is not None and 0.0 <= result.score <= 1.0
    huge = domain.score([sample], ["A, b. " * 200_000])[0]  # 1.2 MB: refused up front, not checked for a minute
    assert huge.score is None and "max_response_chars" in huge.info["error"]
    assert domain.score([sample], [None])[0].score is None  # type: ignore[list-item]


def test_checks_are_reproducible_and_leave_global_random_alone(domain):
    # IFEval's letter_frequency swaps a non-letter ('#') for a random letter: we seed that draw per instruction
    sample = _sample(["keywords:letter_frequency"], [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}])
    text = "abcdefghijklm " * 4  # half the letters pass: an unseeded draw would flip the verdict across 20 tries
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    verdicts = {domain.score([sample], [text])[0].score for _ in range(20)}
    assert len(verdicts) == 1 and random.random() == expected_next


def test_jsonl_loader_limit_seed_and_errors(tmp_path, domain):
    path = tmp_path / "d.jsonl"
    rows = [{"key": i, "prompt": f"p{i}", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"x": None}]}
            for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    d = build_domain("ifeval", test_path=str(path))
    every = d.load("test")
    assert [s.uid for s in every] == [f"ifeval/{i}" for i in range(10)] and every[0].target["kwargs"] == [{}]
    assert [s.uid for s in d.load("test", limit=4, seed=1)] == [s.uid for s in d.load("test", limit=4, seed=1)]
    assert len(d.load("test", limit=4, seed=1)) == 4
    assert d.load("test", limit=4, seed=1) != d.load("test", limit=4, seed=2)
    with pytest.raises(ValueError, match="test_path"):  # generated prompts need the IFEval registry
        build_domain("ifbench").load("test")
    path.write_text(json.dumps({"prompt": "p", "instruction_id_list": ["x:y"], "kwargs": [{}]}))
    with pytest.raises(ValueError, match="ifbench"):
        d.load("test")


def test_generator_is_seeded_compatible_and_self_describing():
    instructions = CHECKERS.get("ifeval")()
    for preset in PRESETS:
        rows = generate_prompts(instructions, preset, 200, seed=3)
        assert rows == generate_prompts(instructions, preset, 200, seed=3)
        assert rows != generate_prompts(instructions, preset, 200, seed=4)
        for row in rows:
            ids = row["instruction_id_list"]
            assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids)
            for a in ids:
                for b in ids:
                    assert a == b or (b not in instructions.conflicts[a] and b not in EXTRA_CONFLICTS.get(a, ()))
            for iid, kw in zip(ids, row["kwargs"]):
                assert instructions.description(iid, kw) in row["prompt"]
        if preset == "full":
            assert {i for r in rows for i in r["instruction_id_list"]} == set(instructions.classes)


def test_small_preset_prompts_score_both_ways(domain):
    """A plain short answer follows some generated prompts and not others: the default has reward variance."""
    samples = domain.load("train", limit=64, seed=0)
    assert all(s.uid.startswith("ifeval/gen-small-train-0-") for s in samples)
    scores = [r.score for r in domain.score(samples, ["a short answer about the weather today"] * len(samples))]
    assert 0.1 < sum(s == 1.0 for s in scores) / len(scores) < 0.9 and 0.0 in scores


def test_generated_test_split_is_held_out(domain):
    """The generated test split shares no base task (hence no prompt) with train, for any seeds and sizes."""
    from mgs.domains.ifeval.generator import check_disjoint, split_of_task, tasks_of_split

    train_tasks, test_tasks = set(tasks_of_split("train")), set(tasks_of_split("test"))
    assert train_tasks.isdisjoint(test_tasks) and train_tasks | test_tasks == set(BASE_TASKS)
    assert 10 <= len(test_tasks) <= 24  # about a quarter of the 64 tasks: enough variety to evaluate on
    instructions = CHECKERS.get("ifeval")()
    train = generate_prompts(instructions, "small", 2000, seed=0) + generate_prompts(instructions, "small", 500, seed=7)
    test = generate_prompts(instructions, "small", 300, seed=0, split="test")
    check_disjoint(train, test)
    assert all(split_of_task(next(t for t in BASE_TASKS if r["prompt"].startswith(t))) == "test" for r in test)
    with pytest.raises(AssertionError, match="overlap"):  # the check itself catches a leak
        check_disjoint(train, test + train[:1])
    samples = domain.load("test", limit=24, seed=0)
    assert len(samples) == 24 and len({s.uid for s in samples}) == 24
    assert samples == domain.load("test", limit=24, seed=0) and samples[0].uid.startswith("ifeval/gen-small-test-0-")
    train_prompts = {s.messages[-1]["content"] for s in domain.load("train", seed=0)}
    assert not train_prompts & {s.messages[-1]["content"] for s in samples}


@pytest.mark.skipif(not IFEVAL_FILE.is_file() or not IFBENCH_FILE.is_file(), reason="shared eval files absent")
def test_base_tasks_are_not_eval_prompts():
    def norm(text):
        return " ".join(text.lower().split())

    eval_prompts = [norm(json.loads(line)["prompt"]) for f in (IFEVAL_FILE, IFBENCH_FILE)
                    for line in f.open() if line.strip()]
    for task in BASE_TASKS:
        assert not any(norm(task) in p for p in eval_prompts), task


@pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason="shared IFEval file absent")
def test_ifeval_prompt_as_response_reference_numbers():
    d = build_domain("ifeval", test_path=str(IFEVAL_FILE))
    samples = d.load("test")
    results = d.score(samples, [s.messages[-1]["content"] for s in samples])
    m = d.metrics(samples, results)
    assert len(samples) == 541 and m["num_instructions"] == 834 and m["none_frac"] == 0.0
    # pinned: prompt fed back as its own response (see docs/domains.md); 301/834 instructions, 134/541 prompts
    assert round(m["inst_level_strict_acc"] * 834) == 301 and round(m["prompt_level_strict_acc"] * 541) == 134
    assert round(m["inst_level_loose_acc"] * 834) == 343 and round(m["prompt_level_loose_acc"] * 541) == 161


@pytest.mark.skipif(not IFBENCH_FILE.is_file(), reason="shared IFBench file absent")
def test_ifbench_loads_and_scores_offline():
    d = build_domain("ifbench", test_path=str(IFBENCH_FILE))
    samples = d.load("test")
    assert len(samples) == 300 and len(CHECKERS.get("ifbench")().classes) == 58
    results = d.score(samples, [s.messages[-1]["content"] for s in samples])
    errors = {e for r in results for e in (r.info.get("errors") or {}).values()}
    assert errors <= {"LookupError: missing nltk data 'stopwords'",
                      "LookupError: missing nltk data 'averaged_perceptron_tagger_eng'"}
    assert 0.0 < d.metrics(samples, results)["inst_level_strict_acc"] < 0.5


def test_unreadable_language_is_scored_without_logging_the_response(caplog):
    """IFEval's language checker counts text langdetect can't read as followed (kept) and logs an ERROR with the
    whole response each time (silenced: thousands of lines per RL run)."""
    import logging

    from mgs.domains.ifeval.checkers import ifeval_instructions

    checker = ifeval_instructions().build("language:response_language", {"language": "en"})
    with caplog.at_level(logging.DEBUG):
        assert checker.check_following("*** ***") is True
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
