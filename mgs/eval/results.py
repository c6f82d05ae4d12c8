"""The evaluation results file (`RUN/eval/<tag>.json`, or `mgs eval --out`): one format for every writer and reader.

The trainer's before/after held-out eval and `mgs eval` both write through `write_eval`, and diagnostics/reports
read through `read_eval`, so a number in a report always traces back to the same fields. Layout:

    {"tag", "model", "step", ["stage" (training stage it follows)], "created",
     "sets": {name: {"domain", "main_metric", "score" (headline, percent), "stderr" (percent), "proxy" (bool),
                     "note", "metrics" (everything evaluate_domain reported), "settings"}},
     "total": {"value", "formula", "sets"}, "records_file"}

Per-response records go to `<tag>.records.jsonl` beside the JSON (they can be large). "Total" follows the paper: the
unweighted mean of the headline scores of the sets, each in percent; the formula is stored with the value.

Per-prompt scores go to `<tag>.scores.json` (small: one float per prompt, no text), for paired comparisons of runs
that answered the same prompts (`mgs report`'s "Paired differences"):

    {set: {"main_metric", "scale", "scores": {uid: float}}}   or   {set: {"main_metric", "note"}}

Each prompt's score is the per-prompt quantity whose mean over prompts is the set's headline metric (times `scale`
= the headline in percent); several responses of a prompt are averaged. A set whose headline does not decompose
that way (no per-response rule for its metric, or unscorable responses weighting prompts unequally) has a `note`
saying why instead of `scores`; this is checked against the headline on every write, never assumed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mgs.eval.runner import FALLBACK_METRIC, EvalResult, stderr_key
from mgs.registry import Registry

TOTAL_FORMULA = ("Total = mean over the listed sets of their headline score (each in percent, unweighted; proxy "
                 "scores and extra avg@k sets left out)")


@dataclass(frozen=True)
class SetInfo:
    """How one evaluated set is presented: which metric is its headline, scaled by `scale` into percent
    (100 for metrics in [0, 1]; 1 for metrics already in percent), and whether it is only a proxy."""

    domain: str
    main_metric: str | None = None
    scale: float = 100.0
    proxy: bool = False
    note: str = ""
    in_total: bool = True
    settings: dict[str, Any] = field(default_factory=dict)


def headline(result: EvalResult, info: SetInfo) -> tuple[float, float]:
    """(score, stderr) of a result in percent: its main metric (falling back to `prompt_reward_mean`) times `info.scale`."""
    key = info.main_metric or result.main_metric or FALLBACK_METRIC
    if key not in result.metrics:
        raise KeyError(f"headline metric {key!r} missing from the {info.domain!r} results; have {sorted(result.metrics)}")
    err = result.metrics.get(stderr_key(key), float("nan"))  # NaN only for a metric nobody computed a stderr of
    return float(result.metrics[key]) * info.scale, float(err) * info.scale


def total(sets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The paper-style Total over the sets marked `in_total` that are not proxies (NaN when none is left)."""
    names = [n for n, s in sets.items()
             if s.get("in_total", True) and not s.get("proxy", False) and math.isfinite(float(s["score"]))]
    value = sum(float(sets[n]["score"]) for n in names) / len(names) if names else float("nan")
    return {"value": value, "formula": TOTAL_FORMULA, "sets": names}


def build_payload(
    results: Mapping[str, EvalResult],
    infos: Mapping[str, SetInfo],
    *,
    tag: str,
    model: str,
    step: int | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """The JSON object of one evaluation (without records); `stage` names the training stage it follows, if any."""
    missing = sorted(set(results) - set(infos))
    if missing:
        raise KeyError(f"no SetInfo for {missing}: say how each evaluated set is presented")
    sets: dict[str, Any] = {}
    for name, res in results.items():
        info = infos[name]
        score, err = headline(res, info)
        sets[name] = {
            "domain": info.domain,
            "main_metric": info.main_metric or res.main_metric or FALLBACK_METRIC,
            "score": score,
            "stderr": err,
            "proxy": info.proxy,
            "note": info.note,
            "in_total": info.in_total,
            "metrics": res.metrics,
            "settings": info.settings,
        }
    return {
        "tag": tag,
        "model": model,
        "step": step,
        **({"stage": stage} if stage is not None else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sets": sets,
        "total": total(sets),
    }


def write_eval(
    path: str | Path,
    results: Mapping[str, EvalResult],
    infos: Mapping[str, SetInfo],
    *,
    tag: str,
    model: str,
    step: int | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """Write `path` (e.g. RUN/eval/after.json) and its records beside it; return the payload."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = build_payload(results, infos, tag=tag, model=model, step=step, stage=stage)
    records_path = path.with_name(f"{path.stem}.records.jsonl")
    with records_path.open("w") as f:
        for name, res in results.items():
            for rec in res.records:
                f.write(json.dumps({"set": name, **rec}, default=str) + "\n")
    payload["records_file"] = records_path.name
    scores_path = path.with_name(f"{path.stem}.scores.json")  # before the JSON: the JSON's presence implies it
    records = [{"set": name, **rec} for name, res in results.items() for rec in res.records]
    scores = prompt_scores(payload, records, scales={name: infos[name].scale for name in results})
    scores_path.write_text(json.dumps(scores, indent=1))
    payload["scores_file"] = scores_path.name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return payload


def normalize(payload: dict[str, Any], tag: str) -> dict[str, Any] | None:
    """Bring a results file into the layout above. Accepts `write_eval`'s own, and `{set: EvalResult.to_dict()}`
    (headline = main metric x 100). Returns None for files that hold no results (e.g. a note that eval was copied)."""
    if "sets" in payload:
        return payload
    sets: dict[str, Any] = {}
    for name, res in payload.items():
        if not (isinstance(res, dict) and isinstance(res.get("metrics"), dict)):
            continue
        metrics = res["metrics"]
        main = res.get("main_metric") or FALLBACK_METRIC
        err = metrics.get(stderr_key(main))
        sets[name] = {"domain": name, "main_metric": main, "score": 100.0 * float(metrics.get(main, math.nan)),
                      "stderr": 100.0 * float(err) if err is not None else math.nan,
                      "proxy": main.startswith("proxy_"), "note": "", "in_total": True, "metrics": metrics,
                      "settings": {}}
    if not sets:
        return None
    return {"tag": payload.get("tag", tag), "model": payload.get("model"), "step": payload.get("step"),
            "created": payload.get("created", ""), "sets": sets, "total": total(sets)}


def read_eval(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation file {path} not found")
    payload = normalize(json.loads(path.read_text()), path.stem)
    if payload is None:
        raise ValueError(f"{path} holds no evaluation results; write them with mgs.eval.results.write_eval")
    return payload


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The per-response records of the evaluation file `path`."""
    path = Path(path)
    rec_path = path.with_name(read_eval(path).get("records_file") or f"{path.stem}.records.jsonl")
    return [json.loads(line) for line in rec_path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ per-prompt scores
PROMPT_VALUES: Registry[Any] = Registry("per-response value of a headline metric")
"""Headline metric name -> f(record) -> float | None: one response's contribution to the metric, such that the
metric is the mean of these values over the set's responses that give one (None: the response is not counted,
as the domain's `metrics()` leaves unscorable responses out). Add a rule here when a domain adds a headline."""


def _score(rec: Mapping[str, Any]) -> float | None:
    return None if rec.get("score") is None else float(rec["score"])


for _name in ("accuracy", "score_mean", "proxy_score_mean", FALLBACK_METRIC):
    PROMPT_VALUES.register(_name)(_score)  # math accuracy, chat RM / proxy score, toy, the evaluator's fallback


def _all_followed(field_name: str):
    def value(rec: Mapping[str, Any]) -> float | None:
        if rec.get("score") is None:  # IFEval counts scored responses only
            return None
        return float(all((rec.get("info") or {}).get(field_name, {}).values()))
    return value


PROMPT_VALUES.register("prompt_level_strict_acc")(_all_followed("followed"))
PROMPT_VALUES.register("prompt_level_loose_acc")(_all_followed("followed_loose"))

SCORES_TOLERANCE = 1e-9
"""How far the mean of the per-prompt scores may be from the headline metric (in the metric's own units)."""


def prompt_scores(payload: Mapping[str, Any], records: list[Mapping[str, Any]],
                  scales: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The scores-file object (layout in the module docstring) of an evaluation `payload` and its `records`
    (each with a "set" key, as in `<tag>.records.jsonl`). `scales[set]` turns the metric into percent (default 100)."""
    by_set: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        by_set.setdefault(rec["set"], []).append(rec)
    out: dict[str, Any] = {}
    for name, s in payload["sets"].items():
        main = s["main_metric"]
        entry: dict[str, Any] = {"main_metric": main}
        out[name] = entry
        if main not in PROMPT_VALUES:
            entry["note"] = (f"no per-response rule for {main!r} in mgs.eval.results.PROMPT_VALUES (e.g. a win rate "
                             "needs the reference answer's reward, which the records do not hold)")
            continue
        value = PROMPT_VALUES.get(main)
        per_uid: dict[str, list[float]] = {}
        for rec in by_set.get(name, []):
            v = value(rec)
            if v is not None:
                per_uid.setdefault(str(rec["uid"]), []).append(v)
        if not per_uid:
            entry["note"] = "no scorable per-response records for this set"
            continue
        scores = {uid: sum(vs) / len(vs) for uid, vs in per_uid.items()}
        mean = sum(scores.values()) / len(scores)
        target = float(s.get("metrics", {}).get(main, math.nan))
        if not abs(mean - target) <= SCORES_TOLERANCE:
            entry["note"] = (f"the mean of the per-prompt scores ({mean:.6g}) is not the headline {main} "
                             f"({target:.6g}): prompts count unequally (e.g. some responses unscorable under avg@k), "
                             "so a paired comparison over prompts would test another quantity")
            continue
        entry["scale"] = float((scales or {}).get(name, 100.0))
        entry["scores"] = scores
    return out


def read_scores(path: str | Path) -> dict[str, Any] | None:
    """The per-prompt scores written beside the evaluation file `path` (e.g. RUN/eval/bench.json), or None when
    that evaluation has none (written before scores files existed: evaluate again to get them)."""
    path = Path(path)
    name = None
    if path.is_file():
        name = json.loads(path.read_text()).get("scores_file")
    scores_path = path.with_name(name or f"{path.stem}.scores.json")
    return json.loads(scores_path.read_text()) if scores_path.is_file() else None
