"""The offline chat reward (MiniLM similarity proxy): it must order answers as a reader would, never raise on
model output, work with HF_HUB_OFFLINE=1, and chunk long texts. MiniLM is loaded once per session (module fixture
+ the per-process cache in `load_embedder`).

Run this file as a script to print the scores table: `python tests/domains/test_chat_similarity.py`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from mgs.domains.base import RewardResult
from mgs.domains.chat import ChatDomain, build_reward_model
from mgs.domains.chat.similarity import copy_rate, repetition

FILLER = ("That is a really interesting question, and there are many different ways to think about it. "
          "It really depends on a lot of factors, and everyone has their own opinion. In the end, it is "
          "important to keep an open mind and to consider all of the possibilities carefully.")
REFUSAL = "I'm sorry, but I can't help with that request."

# Prompts from our built-in set plus Arena-Hard-like ones, each with a reference, a good answer in other words,
# and a close paraphrase of the reference. The candidates below are built from them.
TABLE = [
    dict(prompt="Why is the sky blue?",
         reference="Sunlight is scattered by the molecules of the air, and blue light is scattered much more than red "
                   "light because of its shorter wavelength, so blue light reaches our eyes from all over the sky.",
         good="The sky looks blue because of Rayleigh scattering. Air molecules scatter short wavelengths of "
              "sunlight, like blue, far more strongly than long wavelengths like red, so scattered blue light comes "
              "at us from every direction.",
         paraphrase="Molecules in the air scatter sunlight, and they scatter blue light far more than red light since "
                    "its wavelength is shorter; that is why blue light reaches us from the whole sky."),
    dict(prompt="How can I sleep better at night?",
         reference="Go to bed and wake up at the same time every day, avoid screens and caffeine in the evening, and "
                   "keep your bedroom dark, quiet and cool.",
         good="Keep a regular schedule, even on weekends. Skip coffee after lunch, put your phone away an hour before "
              "bed, and make your room dark and cool. A short wind-down routine like reading also helps.",
         paraphrase="Keep the same bedtime and wake-up time every day, stay away from caffeine and screens at night, "
                    "and make sure your bedroom is cool, quiet and dark."),
    dict(prompt="What is the capital of France?",
         reference="The capital of France is Paris.",
         good="Paris is the capital of France.",
         paraphrase="France's capital city is Paris."),
    dict(prompt="Give me three tips to save money.",
         reference="Make a monthly budget and track your spending, cook at home instead of eating out, and set up an "
                   "automatic transfer to a savings account each payday.",
         good="1. Track every expense for a month so you see where the money goes. 2. Cook your meals at home rather "
              "than buying takeaway. 3. Move part of each paycheck into savings automatically.",
         paraphrase="Set a budget each month and keep track of what you spend, eat home-cooked meals rather than "
                    "going out, and automatically move money into savings every payday."),
    dict(prompt="Explain the difference between a process and a thread in an operating system.",
         reference="A process is an independent program in execution with its own memory space, while a thread is a "
                   "unit of execution inside a process that shares the process's memory and resources with the other "
                   "threads of that process. Threads are cheaper to create and switch between, but a bug in one "
                   "thread can corrupt the shared state of the whole process.",
         good="A process is a running program that the operating system isolates: it has its own address space, file "
              "handles and resources. Threads live inside a process; several threads of one process share its "
              "memory, so they can communicate cheaply but must synchronise access with locks. Creating and "
              "switching threads costs less than doing so for processes.",
         paraphrase="A process is a program being executed that owns a separate memory space, whereas a thread is an "
                    "execution unit within a process that shares that memory and those resources with sibling "
                    "threads. Threads are lighter to create and to switch, yet one faulty thread can corrupt state "
                    "shared by the whole process."),
    dict(prompt="Write a Python function that checks whether a string is a palindrome, and explain how it works.",
         reference="def is_palindrome(s):\n    cleaned = ''.join(c.lower() for c in s if c.isalnum())\n    return "
                   "cleaned == cleaned[::-1]\n\nThe function keeps only letters and digits, lowercases them, and "
                   "compares the cleaned string with its reverse; they are equal exactly when the string reads the "
                   "same both ways.",
         good="Here is a simple version:\n\ndef is_palindrome(text):\n    chars = [c.lower() for c in text if "
              "c.isalnum()]\n    return chars == chars[::-1]\n\nIt drops spaces and punctuation, ignores case, and "
              "then checks that the list of characters equals its own reverse, which is the definition of a "
              "palindrome.",
         paraphrase="def is_palindrome(s):\n    t = ''.join(ch.lower() for ch in s if ch.isalnum())\n    return t == "
                    "t[::-1]\n\nIt keeps just the alphanumeric characters in lower case and checks whether that "
                    "string is the same as its reversal, which is true only when the text reads identically "
                    "forwards and backwards."),
]
GOOD = ("good", "paraphrase")
BAD = ("refusal", "filler", "echo", "echo+filler", "repeat", "empty")


def candidates(row: dict[str, str]) -> dict[str, str]:
    first_sentence = row["good"].split(". ")[0].rstrip(".") + ". "
    return {"good": row["good"], "paraphrase": row["paraphrase"], "refusal": REFUSAL, "filler": FILLER,
            "echo": row["prompt"], "echo+filler": row["prompt"] + " " + FILLER, "repeat": first_sentence * 15,
            "empty": ""}


def score_table(reward) -> list[dict[str, RewardResult]]:
    """Every candidate of every TABLE row, scored in one batch."""
    prompts, responses, references, keys = [], [], [], []
    for i, row in enumerate(TABLE):
        for kind, text in candidates(row).items():
            prompts.append([{"role": "user", "content": row["prompt"]}])
            responses.append(text)
            references.append(row["reference"])
            keys.append((i, kind))
    results = reward.score(prompts, responses, references)
    table: list[dict[str, RewardResult]] = [{} for _ in TABLE]
    for (i, kind), result in zip(keys, results):
        table[i][kind] = result
    return table


@pytest.fixture(scope="module")
def proxy():
    return build_reward_model("similarity-proxy", device="cpu")


@pytest.fixture(scope="module")
def table(proxy):
    return score_table(proxy)


def test_orders_answers_as_a_reader_would(table):
    for row, scored in zip(TABLE, table):
        scores = {kind: r.score for kind, r in scored.items()}
        worst_good = min(scores[k] for k in GOOD)
        best_bad = max(scores[k] for k in BAD)
        assert worst_good > best_bad + 0.2, (row["prompt"], scores)
        assert scores["empty"] == -1.0 == min(scores.values()), scores
        assert all(-1.0 <= s <= 1.0 for s in scores.values())


def test_plain_similarity_would_reward_the_echo_but_the_proxy_does_not(table):
    # the gameable signal is really there: the echo's plain cosine to the reference is high...
    echo_plain = [scored["echo"].info["sim_reference"] for scored in table]
    assert min(echo_plain) > 0.55, echo_plain
    for scored in table:
        # ...and the proxy gives the echo no relevance (nothing beyond the prompt) and a copy penalty
        assert abs(scored["echo"].parts["relevance"]) < 1e-6
        assert scored["echo"].parts["copy_penalty"] <= -0.5
        assert scored["echo"].score < scored["good"].score - 0.5


def test_parts_sum_to_the_score_and_info_is_json(table):
    for scored in table:
        for kind, r in scored.items():
            assert r.info["proxy"] is True and r.info["scorer"] == "similarity-proxy"
            assert set(r.parts) == {"relevance", "copy_penalty", "repetition_penalty"}
            if kind != "empty":
                assert r.score == pytest.approx(max(-1.0, min(1.0, sum(r.parts.values()))), abs=1e-9)
            json.dumps(r.info)
    assert table[0]["repeat"].parts["repetition_penalty"] < -0.8


def test_copy_and_repetition_statistics():
    assert copy_rate("what is the capital of france", "What is the capital of France?", "Paris.") == 1.0
    # 4-grams that the reference also has are not copying
    assert copy_rate("the capital of france is paris", "the capital of France?", "the capital of france is") == 0.0
    assert copy_rate("", "anything here at all", "x") == 0.0
    assert repetition("one two three four five six seven") == 0.0
    # "a b c " * 10: 28 3-grams, 3 distinct -> duplicated 25/28, rescaled above the 0.1 allowance
    assert repetition("a b c " * 10) == pytest.approx((25 / 28 - 0.1) / 0.9)


def test_long_answers_are_chunked_and_padding_lowers_relevance(proxy):
    row = TABLE[4]
    prompt = [{"role": "user", "content": row["prompt"]}]
    filler_words = " ".join(f"Moreover, item {i} of my list of unrelated thoughts about gardening." for i in range(80))
    answers = [row["good"], row["good"] + " " + filler_words]
    short, padded = proxy.score([prompt, prompt], answers, [row["reference"]] * 2)
    assert short.info["chunks"] == 1
    assert padded.info["chunks"] >= 4  # > 1000 word pieces: well past MiniLM's 256
    assert padded.parts["relevance"] < short.parts["relevance"] - 0.2
    assert row["reference"] in proxy._cache and "\n".join([row["prompt"]]) in proxy._cache  # reused next time
    again = proxy.score([prompt, prompt], answers, [row["reference"]] * 2)
    assert [r.score for r in again] == pytest.approx([short.score, padded.score], abs=1e-6)
    # more chunks than max_chunks: spread evenly, still scored
    few = build_reward_model("similarity-proxy", device="cpu", max_chunks=2)
    (capped,) = few.score([prompt], [answers[1]], [row["reference"]])
    assert capped.info["chunks"] == 2 and capped.info["chunks_total"] == padded.info["chunks_total"]


def test_reference_equal_to_the_prompt_falls_back_to_plain_similarity_and_says_so(proxy):
    prompt = [{"role": "user", "content": "Describe the water cycle."}]
    near, far = proxy.score([prompt, prompt], ["Describe the water cycle please.", "Bananas are yellow."],
                            ["Describe the water cycle."] * 2)
    assert "plain cosine" in near.info["note"]
    assert near.parts["relevance"] == pytest.approx(near.info["sim_reference"]) and near.score > far.score


FUZZ = ["", " ", "\n\t\r", "\x00\x01\x02 nul and controls", "lone surrogate \ud800 here", "emoji 🤖🔥" * 50,
        "中文回答：天空是蓝色的因为瑞利散射。", "مرحبا بالعالم", "[CLS] [SEP] [PAD] [UNK] [MASK]", "<|im_end|><|endoftext|>",
        "x" * 100_000, "word " * 200_000, "🙂" * 300_000]


def test_fuzz_never_raises_and_stays_in_range(proxy):
    prompt = [{"role": "user", "content": "Why is the sky blue?"}]
    responses = FUZZ + [None, 123]  # non-strings too: a caller bug, reported per sample
    results = proxy.score([prompt] * len(responses), responses, [TABLE[0]["reference"]] * len(responses))
    assert len(results) == len(responses)
    for text, r in zip(responses, results):
        assert isinstance(r, RewardResult)
        json.dumps(r.info)
        if not isinstance(text, str):
            assert r.score is None and "not str" in r.info["error"]
        else:
            assert r.score is not None and math.isfinite(r.score) and -1.0 <= r.score <= 1.0, (text[:20], r)
    assert results[0].score == results[1].score == results[2].score == -1.0
    assert results[FUZZ.index("word " * 200_000)].info["cut_chars"] == 1_000_000 - 200_000


def test_reference_less_samples_are_unscorable_and_loading_them_fails_clearly(proxy, tmp_path):
    (result,) = proxy.score([[{"role": "user", "content": "hi"}]], ["hello"], [None])
    assert result.score is None and "needs a reference" in result.info["error"]
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"prompt": "yo", "reference": "hey"}) + "\n")
    domain = ChatDomain(source="jsonl", path=str(data), reward=proxy)
    with pytest.raises(ValueError, match="without a reference.*hf-classifier"):
        domain.load("all")
    kept = ChatDomain(source="jsonl", path=str(data), reward=proxy, skip_missing_references=True).load("all")
    assert [s.target for s in kept] == ["hey"]


def test_builtin_domain_scores_and_labels_metrics_as_proxy(proxy):
    domain = ChatDomain(reward=proxy)
    samples = domain.load("test")
    samples = samples[:5]
    responses = [s.target for s in samples[:3]] + ["", samples[4].messages[-1]["content"]]  # refs, empty, echo
    results = domain.score(samples, responses)
    assert all(r.score > 0.95 for r in results[:3])  # the reference itself
    assert results[3].score == -1.0 and results[4].score < 0.0
    metrics = domain.metrics(samples, results)
    scores = [r.score for r in results]
    mean = sum(scores) / 5
    assert metrics["proxy_score_mean"] == pytest.approx(mean)
    assert metrics["proxy_score_stderr"] == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in scores) / 4 / 5))
    assert metrics["none_frac"] == 0.0 and "score_mean" not in metrics and "win_rate_vs_reference" not in metrics


def test_runs_offline_with_hf_hub_offline(proxy):
    """A fresh process with the hub switched off (and an unreachable endpoint) loads the model and gets the same
    score as this process."""
    row = TABLE[0]
    code = ("import json; from mgs.domains.chat import build_reward_model; "
            "r = build_reward_model('similarity-proxy', device='cpu').score("
            f"[[{{'role': 'user', 'content': {row['prompt']!r}}}]], [{row['good']!r}], [{row['reference']!r}])[0]; "
            "print(json.dumps(r.score))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (expected,) = proxy.score([[{"role": "user", "content": row["prompt"]}]], [row["good"]], [row["reference"]])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected.score, abs=1e-5)


if __name__ == "__main__":  # print the scores table for the docs / report
    scored_table = score_table(build_reward_model("similarity-proxy", device="cpu"))
    kinds = list(candidates(TABLE[0]))
    print("| prompt | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for row, scored in zip(TABLE, scored_table):
        print(f"| {row['prompt'][:40]} | " + " | ".join(f"{scored[k].score:+.2f}" for k in kinds) + " |")
