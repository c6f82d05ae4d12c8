"""The thinking template: splitting, malformed outputs, the penalty policy, the prompt instruction."""

from __future__ import annotations

import pytest

from mgs.domains.base import RewardResult, Sample
from mgs.domains.math import MathDomain
from mgs.domains.template import (
    TEMPLATES,
    ThinkTemplate,
    apply_template,
    score_responses,
    split_response,
    template_error,
    template_instruction,
)

# (text, mode, expected (thinking, response, ok))
SPLITS = [
    ("anything <think>x</think>", "none", ("", "anything <think>x</think>", True)),
    ("<think>a+b</think><response>7</response>", "think_response", ("a+b", "7", True)),
    ("  \n<think> a </think>\n\n<response>\n7\n</response>\n", "think_response", ("a", "7", True)),
    ("<think></think><response></response>", "think_response", ("", "", True)),  # well-formed, empty
    ("<response>7</response>", "think_response", ("", "", False)),  # no think block
    ("<think>a</think>7", "think_response", ("a", "", False)),  # no response block
    ("<think>a</think><response>7", "think_response", ("a", "", False)),  # truncated: unclosed response
    ("<think>a", "think_response", ("", "", False)),  # truncated: unclosed think
    ("hi <think>a</think><response>7</response>", "think_response", ("", "", False)),  # text before
    ("<think>a</think><response>7</response> P.S. 8", "think_response", ("a", "", False)),  # text after
    ("<think>a</think>x<response>7</response>", "think_response", ("a", "", False)),  # text between
    ("<think>a</think><think>b</think><response>7</response>", "think_response", ("", "", False)),  # repeated
    # a response tag inside the thinking: two response blocks, malformed (thinking still reported for logs)
    ("<think>a<response>7</response></think><response>8</response>", "think_response",
     ("a<response>7</response>", "", False)),
    ("<response>7</response><think>a</think>", "think_response", ("", "", False)),  # wrong order
    ("<think>a</think> The answer is 7.", "think", ("a", "The answer is 7.", True)),
    ("The answer is 7.", "think", ("", "", False)),
]


@pytest.mark.parametrize("text,mode,expected", SPLITS)
def test_split_response(text, mode, expected):
    assert split_response(text, mode) == expected
    assert (template_error(text, mode) is None) == expected[2]


def test_custom_tags():
    t = ThinkTemplate("[T]", "[/T]", "[R]", "[/R]", instruction="Use [T] then [R].")
    assert split_response("[T]x[/T][R]y[/R]", t) == ("x", "y", True)
    assert split_response("<think>x</think><response>y</response>", t) == ("", "", False)
    with pytest.raises(ValueError, match="both"):
        ThinkTemplate(response_open="<r>", response_close=None)
    with pytest.raises(KeyError, match="choose from"):
        split_response("x", "thinking")
    assert set(TEMPLATES) == {"none", "think", "think_response"}


def test_apply_template_adds_instruction_to_system_message():
    user = ({"role": "user", "content": "2+2?"},)
    assert apply_template(user, "none") == user
    out = apply_template(user, "think_response")
    assert out[0] == {"role": "system", "content": template_instruction("think_response")}
    assert out[1:] == user and "<think>" in out[0]["content"] and "<response>" in out[0]["content"]
    with_sys = ({"role": "system", "content": "Be brief."},) + user
    out = apply_template(with_sys, "think_response")
    assert out[0]["content"] == "Be brief.\n\n" + template_instruction("think_response")
    assert with_sys[0]["content"] == "Be brief."  # the input is not mutated


class _ConstantDomain:
    """A domain whose reward is the response length: shows exactly what the domain was handed."""

    name = "len"
    min_score = -1.0

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score(self, samples, responses):
        self.seen += list(responses)
        return [RewardResult(float(len(r)), {"len": float(len(r))}, {}) for r in responses]


def test_score_responses_strips_thinking_and_penalises_malformed():
    d = _ConstantDomain()
    samples = [Sample(str(i), "len", ()) for i in range(3)]
    texts = ["<think>long thoughts</think><response>abc</response>", "no template at all, long text", "<think>x"]
    results = score_responses(d, samples, texts, "think_response")
    assert d.seen == ["abc"]  # only the response part of the well-formed output reaches the reward
    assert [r.score for r in results] == [3.0, -1.0, -1.0]  # malformed -> the domain's min_score
    assert results[0].info == {"format_ok": True} and results[0].parts == {"len": 3.0}
    assert results[1].info["format_ok"] is False and "expected exactly one" in results[1].info["template_error"]
    assert [r.score for r in score_responses(d, samples, texts, "think_response", malformed_score=-5.0)][1:] == [
        -5.0, -5.0]
    assert [r.score for r in score_responses(d, samples, texts, "none")] == [float(len(t)) for t in texts]


def test_skipping_the_template_never_pays_on_math():
    math = MathDomain()
    sample = Sample("u", "math", (), "7")
    good = "<think>3+4</think><response>\\boxed{7}</response>"
    skipped = "\\boxed{7}"
    r_good, r_skip = score_responses(math, [sample, sample], [good, skipped], "think_response")
    assert (r_good.score, r_skip.score) == (1.0, 0.0)
    assert r_good.info["extracted"] == "7"
    # the answer must be in the response: a correct answer only in the thinking part scores 0
    (r,) = score_responses(math, [sample], ["<think>\\boxed{7}</think><response>no idea</response>"], "think_response")
    assert r.score == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one output per sample"):
        score_responses(_ConstantDomain(), [Sample("u", "len", ())], [], "none")
