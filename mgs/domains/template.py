"""The optional thinking template (as in the paper): the model writes `<think>...</think>` then
`<response>...</response>`, and rewards / reward models see only the response part.

- `split_response(text, mode)` -> `(thinking, response, ok)`. Mode "none" (the default): the whole text is the
  response. Mode "think_response" (the paper's): the text must be exactly one think block then one response block
  (whitespace around them allowed, nothing else, no tag repeated or nested). Mode "think" (R1 style): one think
  block, the response is everything after `</think>`. Tags are configurable: pass a `ThinkTemplate`.
- A malformed text (missing, unclosed, repeated or out-of-order tags; text outside the blocks; a response cut off
  by the token limit before `</response>`) is not scored by the domain at all: `score_responses` gives it a fixed
  penalty, `malformed_score` (default: the domain's `min_score` attribute, else 0.0, i.e. the bottom of the
  math/IF reward range), with `info["template_error"]` saying why. So skipping the template never pays: even a
  perfect answer outside the tags scores the minimum. Under a template every result gets `info["format_ok"]`.
- `apply_template(messages, mode)` adds the instruction that asks for the template to the system message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from mgs.registry import Registry

if TYPE_CHECKING:
    from mgs.domains.base import Domain, Message, RewardResult, Sample


@dataclass(frozen=True)
class ThinkTemplate:
    """Tags of a thinking template. `response_open` None: the response is everything after `think_close`."""

    think_open: str = "<think>"
    think_close: str = "</think>"
    response_open: str | None = "<response>"
    response_close: str | None = "</response>"
    instruction: str = (
        "First think step by step inside <think></think> tags. "
        "Then write your final reply to the user inside <response></response> tags."
    )

    def __post_init__(self) -> None:
        if (self.response_open is None) != (self.response_close is None):
            raise ValueError("set both response_open and response_close, or neither (response = text after think)")
        if not self.think_open or not self.think_close:
            raise ValueError("think_open and think_close must be non-empty tags")

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(t for t in (self.think_open, self.think_close, self.response_open, self.response_close) if t)


TEMPLATES: Registry[ThinkTemplate | None] = Registry("thinking template")
TEMPLATES.register("none")(None)
TEMPLATES.register("think_response")(ThinkTemplate())
TEMPLATES.register("think")(
    ThinkTemplate(
        response_open=None,
        response_close=None,
        instruction="First think step by step inside <think></think> tags, then write your final reply after them.",
    )
)


def resolve(mode: str | ThinkTemplate | None) -> ThinkTemplate | None:
    """A mode name (see `TEMPLATES`), a ThinkTemplate, or None (= "none")."""
    if mode is None or isinstance(mode, ThinkTemplate):
        return mode
    return TEMPLATES.get(mode)


def _split(text: str, t: ThinkTemplate) -> tuple[str, str, str | None]:
    """(thinking, response, error or None)."""
    body = text.strip()
    counts = {tag: body.count(tag) for tag in t.tags}
    if counts[t.think_open] != 1 or counts[t.think_close] != 1:
        return "", "", f"expected exactly one {t.think_open} and one {t.think_close}, got {counts}"
    if not body.startswith(t.think_open):
        return "", "", f"text before {t.think_open}"
    think_end = body.index(t.think_close)
    thinking = body[len(t.think_open) : think_end].strip()
    rest = body[think_end + len(t.think_close) :].strip()
    if t.response_open is None:
        return thinking, rest, None
    assert t.response_close is not None
    if counts[t.response_open] != 1 or counts[t.response_close] != 1:
        return thinking, "", f"expected exactly one {t.response_open} and one {t.response_close}, got {counts}"
    if not rest.startswith(t.response_open):
        return thinking, "", f"{t.response_open} must follow {t.think_close} (only whitespace between)"
    if not rest.endswith(t.response_close):
        return thinking, "", f"text after {t.response_close}, or {t.response_close} missing"
    return thinking, rest[len(t.response_open) : -len(t.response_close)].strip(), None


def split_response(text: str, mode: str | ThinkTemplate | None = "none") -> tuple[str, str, bool]:
    """(thinking, response, ok). Mode "none": ("", text, True). Malformed: response "" and ok False."""
    t = resolve(mode)
    if t is None:
        return "", text, True
    thinking, response, error = _split(text, t)
    return thinking, response, error is None


def template_error(text: str, mode: str | ThinkTemplate | None) -> str | None:
    """Why `text` does not follow the template (None when it does, and always for mode "none")."""
    t = resolve(mode)
    return None if t is None else _split(text, t)[2]


def template_instruction(mode: str | ThinkTemplate | None) -> str:
    """The sentence that asks for the template ("" for mode "none")."""
    t = resolve(mode)
    return "" if t is None else t.instruction


def apply_template(messages: Sequence["Message"], mode: str | ThinkTemplate | None) -> tuple["Message", ...]:
    """`messages` with the template instruction appended to the system message (one is added if absent)."""
    instruction = template_instruction(mode)
    msgs = [dict(m) for m in messages]
    if not instruction:
        return tuple(msgs)
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = f"{msgs[0]['content'].rstrip()}\n\n{instruction}" if msgs[0]["content"] else instruction
    else:
        msgs.insert(0, {"role": "system", "content": instruction})
    return tuple(msgs)


def score_responses(
    domain: "Domain",
    samples: Sequence["Sample"],
    texts: Sequence[str],
    mode: str | ThinkTemplate | None = "none",
    malformed_score: float | None = None,
) -> list["RewardResult"]:
    """Score full model outputs under a template: the domain sees only well-formed responses (one batched
    `domain.score` call); malformed outputs get `malformed_score` (default `domain.min_score`, else 0.0)."""
    from mgs.domains.base import RewardResult

    if len(samples) != len(texts):
        raise ValueError(f"{len(samples)} samples but {len(texts)} texts: pass one output per sample")
    t = resolve(mode)
    if t is None:
        return list(domain.score(samples, texts))
    penalty = float(getattr(domain, "min_score", 0.0) if malformed_score is None else malformed_score)
    splits = [_split(text, t) for text in texts]
    good = [i for i, (_, _, err) in enumerate(splits) if err is None]
    scored = domain.score([samples[i] for i in good], [splits[i][1] for i in good]) if good else []
    results: list[RewardResult] = [
        RewardResult(score=penalty, info={"format_ok": False, "template_error": err})
        for (_, _, err) in splits
    ]
    for i, r in zip(good, scored):
        results[i] = replace(r, info={**r.info, "format_ok": True})
    return results
