"""A malformed thinking template must score the chat reward's floor, not 0 (0 is generous on a [-1, 1] proxy)."""

from mgs.domains import build_domain
from mgs.domains.template import score_responses


def test_malformed_template_scores_the_proxy_floor():
    chat = build_domain("chat")
    sample = chat.load("train", limit=1)[0]
    (result,) = score_responses(chat, [sample], ["no tags at all, just an answer"], mode="think_response")
    assert chat.min_score == -1.0
    assert result.score == -1.0


def test_explicit_floor_for_unbounded_reward_models():
    chat = build_domain("chat", min_score=-7.5)
    sample = chat.load("train", limit=1)[0]
    (result,) = score_responses(chat, [sample], ["<think>unclosed"], mode="think_response")
    assert result.score == -7.5
