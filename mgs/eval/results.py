"""The evaluation results file (`RUN/eval/<tag>.json`, or `mgs eval --out`): one format for every writer and reader.

The trainer's before/after held-out eval and `mgs eval` both write through `write_eval`, and diagnostics/reports
read through `read_eval`, so a number in a report always traces back to the same fields. Layout:

    {"tag", "model", "step", ["stage" (training stage it follows)], "created",
     "sets": {name: {"domain", "main_metric", "score" (headline, percent), "stderr" (percent), "proxy" (bool),
                     "note", "metrics" (everything evaluate_domain reported), "settings"}},
     "total": {"value", "formula", "sets"}, "records_file"}

Per-response records go to `<tag>.records.jsonl` beside the JSON (they can be large). "Total" follows the paper: the
unweighted mean of the headline scores of the sets, each in percent; the formula is stored with the value.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mgs.eval.runner import FALLBACK_METRIC, EvalResult, stderr_key

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
