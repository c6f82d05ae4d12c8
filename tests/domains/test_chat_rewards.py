"""Chat reward models other than the similarity proxy: a tiny real Llama sequence-classification reward model
(scores must equal the model's own logit), Python callables, and an HTTP endpoint served by a local http.server."""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from mgs.domains.chat import REWARD_MODELS, ChatDomain, build_reward_model

WORDS = ("user assistant system : hello hi how are you fine thanks what is the capital of france paris "
         "why sky blue light scattering a an good answer bad i do not know yes no tell me more please").split()
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {{ eos_token }} "
                 "{% endfor %}")


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory):
    """A tiny random LlamaForSequenceClassification (num_labels=1) + a WordLevel tokenizer with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, max_position_embeddings=256,
                         pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    model = LlamaForSequenceClassification(config)
    path = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@functools.lru_cache(maxsize=2)
def load_direct(path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.float32).eval()


def direct_logit(path, conversation) -> float:
    """The model's own score of one conversation, unbatched: logits[0] at its last token."""
    tokenizer, model = load_direct(path)
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.eos_token_id) == len(conversation)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


PROMPTS = [[{"role": "user", "content": "what is the capital of france"}],
           [{"role": "system", "content": "good answer please"}, {"role": "user", "content": "why sky blue"}],
           [{"role": "user", "content": "hello how are you"}]]
RESPONSES = ["paris", "light scattering : blue light is scattering a lot more", "fine thanks how are you",
             "i do not know", ""]


def test_hf_classifier_score_equals_the_models_own_logit(tiny_rm_dir):
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    reward = build_reward_model("hf-classifier", path=str(tiny_rm_dir), device="cpu", batch_size=3)
    results = reward.score(prompts, RESPONSES, [None] * 5)
    expected = [direct_logit(tiny_rm_dir, p + [{"role": "assistant", "content": r}])
                for p, r in zip(prompts, RESPONSES)]
    got = [r.score for r in results]
    assert got == pytest.approx(expected, abs=1e-5)  # batched + right-padded == unbatched
    assert max(expected) - min(expected) > 1e-4  # the scores do depend on the input
    assert not reward.proxy and all(r.info["truncated"] is False for r in results)


def test_hf_classifier_truncates_overlong_responses_and_survives_garbage(tiny_rm_dir):
    reward = build_reward_model("hf-classifier", path=str(tiny_rm_dir), device="cpu", batch_size=4, max_length=32)
    garbage = ["paris " * 200_000, "🤖 \ud800 \x00 中文", "<pad> <pad> </s> <s>", ""]
    results = reward.score([PROMPTS[0]] * 4, garbage, [None] * 4)
    assert results[0].info["truncated"] is True and results[0].info["num_tokens"] <= 32
    for r in results:
        assert r.score is not None and math.isfinite(r.score), r


def test_domain_win_rate_against_references_uses_the_reward_model(tiny_rm_dir, tmp_path):
    data = tmp_path / "chat.jsonl"
    rows = [{"uid": "a", "messages": PROMPTS[0], "reference": "paris"},
            {"uid": "b", "messages": PROMPTS[1], "reference": "light scattering"},
            {"uid": "c", "messages": PROMPTS[2]}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    domain = ChatDomain(source="jsonl", path=str(data), reward="hf-classifier",
                        reward_params={"path": str(tiny_rm_dir), "device": "cpu"})
    samples = sorted(domain.load("all"), key=lambda s: s.uid)
    responses = ["i do not know", "blue", "fine thanks"]
    results = domain.score(samples, responses)
    metrics = domain.metrics(samples, results)
    wins = [direct_logit(tiny_rm_dir, list(s.messages) + [{"role": "assistant", "content": resp}]) >
            direct_logit(tiny_rm_dir, list(s.messages) + [{"role": "assistant", "content": s.target}])
            for s, resp in zip(samples[:2], responses[:2])]
    assert metrics["win_rate_vs_reference"] == sum(wins) / 2 and metrics["win_rate_num_pairs"] == 2.0
    assert metrics["score_mean"] == pytest.approx(sum(r.score for r in results) / 3)
    assert "proxy_score_mean" not in metrics and metrics["none_frac"] == 0.0


# -- callable ---------------------------------------------------------------------------------------------------
def word_count_reward(prompts, responses):
    return [float(len(r.split())) if r else None for r in responses]


def overlap_reward(prompts, responses, references):
    return [float(len(set(r.split()) & set((ref or "").split()))) for r, ref in zip(responses, references)]


def test_callable_by_module_path_with_none_and_references():
    reward = build_reward_model("callable", function=f"{__name__}:word_count_reward")
    results = reward.score([PROMPTS[0]] * 3, ["a b c", "", "x"], [None] * 3)
    assert [r.score for r in results] == [3.0, None, 1.0]
    assert "None" in results[1].info["error"]
    with_refs = build_reward_model("callable", function=overlap_reward)
    assert [r.score for r in with_refs.score([PROMPTS[0]] * 2, ["a b", "c"], ["b a z", None])] == [2.0, 0.0]


def test_callable_failures_become_unscorable_and_bad_specs_fail_early():
    def broken(prompts, responses):
        raise RuntimeError("boom")

    def wrong_length(prompts, responses):
        return [1.0]

    def not_numbers(prompts, responses):
        return ["high", float("nan")]

    for fn, message in [(broken, "boom"), (wrong_length, "1 scores for 2"), (not_numbers, "non-number")]:
        results = build_reward_model("callable", function=fn).score([PROMPTS[0]] * 2, ["a", "b"], [None, None])
        assert results[0].score is None and message in results[0].info["error"]
    assert "non-finite" in build_reward_model("callable", function=not_numbers).score(
        [PROMPTS[0]] * 2, ["a", "b"], [None] * 2)[1].info["error"]
    with pytest.raises(ValueError, match="module:function"):
        build_reward_model("callable", function="no_colon_here")
    with pytest.raises(ValueError, match="cannot import"):
        build_reward_model("callable", function="surely_not_a_module_xyz:f")
    with pytest.raises(KeyError, match="choose from"):
        build_reward_model("skywork")
    assert set(REWARD_MODELS.names()) == {"callable", "hf-classifier", "http", "similarity-proxy"}


# -- http -------------------------------------------------------------------------------------------------------
class ScoringServer:
    """A local scoring endpoint: scores = number of words; can fail the first `fail_first` requests with
    `fail_code`, or sleep `delay_s` before answering."""

    def __init__(self, fail_first: int = 0, fail_code: int = 503, delay_s: float = 0.0, reply=None):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(payload)
                time.sleep(delay_s)
                if len(outer.requests) <= fail_first:
                    self.send_response(fail_code)
                    self.end_headers()
                    return
                body = reply if reply is not None else {"scores": [len(r.split()) for r in payload["responses"]]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_http_scores_in_batches_and_retries_server_errors():
    with ScoringServer(fail_first=2) as server:
        reward = build_reward_model("http", url=server.url, retries=3, backoff_s=0.01, batch_size=2)
        results = reward.score([PROMPTS[0]] * 3, ["a b", "c", "d e f"], [None] * 3)
    assert [r.score for r in results] == [2.0, 1.0, 3.0]
    assert len(server.requests) == 4  # 2 failures + 2 batches
    assert server.requests[-1] == {"prompts": [PROMPTS[0]], "responses": ["d e f"]}


def test_http_gives_up_with_a_clear_error():
    with ScoringServer(fail_first=100, fail_code=400) as server:  # a client error is not retried
        results = build_reward_model("http", url=server.url, retries=3, backoff_s=0.01).score(
            [PROMPTS[0]], ["a"], [None])
    assert results[0].score is None and "400" in results[0].info["error"] and len(server.requests) == 1
    with ScoringServer(delay_s=0.5) as server:  # timeouts are retried, then reported
        results = build_reward_model("http", url=server.url, timeout_s=0.1, retries=1, backoff_s=0.01).score(
            [PROMPTS[0]] * 2, ["a", "b"], [None] * 2)
    assert [r.score for r in results] == [None, None] and "2 attempt" in results[0].info["error"]
    with ScoringServer(reply={"scores": [1.0]}) as server:  # wrong length
        results = build_reward_model("http", url=server.url).score([PROMPTS[0]] * 2, ["a", "b"], [None] * 2)
    assert results[1].score is None and "expected" in results[1].info["error"]
    with pytest.raises(ValueError, match="http://"):
        build_reward_model("http", url="localhost:8000")
