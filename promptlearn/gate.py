"""Inside the app's build: export a run's best prompt into the app's config, and gate a build on it.

`export_run` writes a run's best prompt (with provenance: run id, val, test, sha256, as a comment by default) into a
config file; `read_provenance_ref` reads that provenance back and tells whether the prompt still matches it.
`check_prompt` re-evaluates a prompt, as the app will load it, on a split of the task in this process, compares
it with the task's seed prompt on the same examples and says whether it passes a minimum score and a limit on
examples broken. Same model, greedy decoding and the same rendered messages give the same score the run
recorded for that split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from promptlearn.errors import ConfigError, RunError
from promptlearn.types import Usage

if TYPE_CHECKING:
    from promptlearn.task import Task

# Candidate meta keys that change how the target model decodes (not the prompt text): a prompt scored with them
# only reproduces when the app decodes the same way, so an export records them.
DECODING_KEYS = ("guidance",)


def make_provenance(run_id: str, val: float | None, test: float | None, prompt: str,
               decoding: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What an export writes next to the prompt: where it came from, how it scored (and decoding options, if any)."""
    from promptlearn.export import prompt_sha256

    prov: dict[str, Any] = {"run_id": run_id, "val": None if val is None else round(val, 4),
                            "test": None if test is None else round(test, 4), "sha256": prompt_sha256(prompt)}
    if decoding:
        prov["decoding"] = dict(decoding)
    return prov


# ---- export --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportInfo:
    """What `export_run` wrote: the run's best prompt, its recorded scores, and where it went."""

    run_id: str
    candidate_id: str
    prompt: str
    val: float | None
    test: float | None
    path: Path
    key: str
    format: str
    provenance: Mapping[str, Any] | None
    provenance_as: str = "comment"  #: how provenance was written: comment, key or none
    decoding: Mapping[str, Any] = field(default_factory=dict)  #: decoding options the prompt was scored with
    status: str | None = None  #: the run's status: finished, or failed / interrupted / running (best so far)
    run_dir: Path | None = None  #: the run's directory
    targets: tuple[Mapping[str, Any], ...] = ()  #: several targets: each one's model and val / test score


def best_of_run(run: str | Path, root: str | Path = "runs", *, store: str | Path | None = None
                ) -> tuple[str, str, str, float | None, float | None, dict[str, Any]]:
    """(run id, best candidate id, prompt, val score, test score, decoding options) from a run store."""
    from promptlearn.store.locate import locate_run

    ref = locate_run(run, store=store, root=root)
    try:
        rs = ref.open()
        try:
            return _best(rs)
        finally:
            rs.close()
    finally:
        ref.close()


def _best(store: Any) -> tuple[str, str, str, float | None, float | None, dict[str, Any]]:
    best = store.get_meta("best")
    cand = store.candidate(best) if best else None
    if cand is None:
        raise RunError(f"run {store.run_id} has no best prompt yet (it never scored the seed); "
                       "run it again or --resume it")
    scores = store.scores().get(best, {})
    val, test = scores.get("val", {}).get("score"), scores.get("test", {}).get("score")
    meta = cand.get("meta") or {}
    decoding = {k: meta[k] for k in DECODING_KEYS if meta.get(k) is not None}
    return store.run_id, best, cand["prompt"], val, test, decoding


PROVENANCE_CHOICES = ("comment", "key", "none")


def provenance_form(value: str | bool) -> str:
    """`value` as one of PROVENANCE_CHOICES (True means "comment", False "none"); ConfigError otherwise."""
    if isinstance(value, bool):
        return "comment" if value else "none"
    if value not in PROVENANCE_CHOICES:
        raise ConfigError(f"provenance must be one of {', '.join(PROVENANCE_CHOICES)} (--provenance), got {value!r}")
    return value


def export_run(run: str | Path, to: str | Path, key: str, *, fmt: str | None = None,
               provenance: str | bool = "comment", root: str | Path = "runs",
               store: str | Path | None = None) -> ExportInfo:
    """Write the best prompt of `run` under the dotted `key` of the config file `to`, keeping the rest of it.

    `provenance`: "comment" (default) writes run id, val, test, sha256 and decoding options as a comment attached
    to the key (JSON, which has no comments, gets the sibling key); "key" writes them under the sibling key
    `<leaf>_provenance` (YAML, TOML, JSON), for apps that read them; "none" writes only the prompt.
    `store`: where the run lives (default the runs under `root`; or a postgresql:// URL).
    """
    from promptlearn.store.locate import locate_run
    from promptlearn.targets import export_targets

    form = provenance_form(provenance)
    ref = locate_run(run, store=store, root=root)
    try:
        rs = ref.open()
        try:
            run_id, cid, prompt, val, test, decoding = _best(rs)
            status = rs.get_meta("status")
            targets = export_targets(rs.get_meta("targets"), rs.scores().get(cid, {}))
        finally:
            rs.close()
    finally:
        ref.close()
    prov = make_provenance(run_id, val, test, prompt, decoding) if form != "none" else None
    if prov is not None and targets:
        prov["targets"] = list(targets)
    f = write_prompt(to, key, prompt, fmt=fmt, provenance=prov, provenance_as="key" if form == "key" else "comment")
    return ExportInfo(run_id, cid, prompt, val, test, Path(to), key, f, prov, form, decoding, status, ref.files_dir,
                      targets)


def write_prompt(path: str | Path, key: str, prompt: str, *, fmt: str | None = None,
                 provenance: Mapping[str, Any] | None = None, provenance_as: str = "comment") -> str:
    """export.export_prompt, with every failure a one-line ConfigError; returns the format used."""
    from promptlearn.export import detect_format, export_prompt

    try:
        f = detect_format(path, fmt)
        export_prompt(path, key, prompt, fmt=f, provenance=provenance, provenance_as=provenance_as)
    except (ValueError, KeyError, TypeError, OSError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"cannot write the prompt to {path} key {key!r}: {_one_line(e)}") from None
    return f


# ---- reading the prompt the app will load ----------------------------------------------------------------------


def parse_prompt_ref(ref: str) -> tuple[Path, str]:
    """`FILE:dotted.path` -> (file, key). The last colon splits them, so `C:\\app\\cfg.yaml:a.b` works."""
    path, sep, key = str(ref).rpartition(":")
    if not sep or not path or not key or os.sep in key or "/" in key:
        raise ConfigError(f"--prompt-from must look like FILE:dotted.key (e.g. app/config.yaml:assistant."
                          f"system_prompt), a plain-text file or a run, got {ref!r}")
    return Path(path), key


def read_prompt_ref(ref: str, *, fmt: str | None = None) -> tuple[Path, str, str]:
    """(file, key, prompt) for `FILE:dotted.path`, the prompt read exactly as the app loads it."""
    from promptlearn.export import read_prompt

    path, key = parse_prompt_ref(ref)
    if not path.exists():
        raise ConfigError(f"config file {path} not found (from --prompt-from {ref!r})")
    try:
        return path, key, read_prompt(path, key, fmt=fmt)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ConfigError(f"cannot read key {key!r} from {path}: {_one_line(e)}") from None


def read_provenance_ref(path: str | Path, key: str, prompt: str, *, fmt: str | None = None
                        ) -> tuple[dict[str, Any] | None, bool | None]:
    """(provenance, whether its sha256 is the prompt's) for the prompt an export wrote under `key` of `path`
    (comment or key form); (None, None) when there is none, so a gate can tell an edited prompt from the run's."""
    from promptlearn.export import prompt_sha256, read_provenance

    try:
        prov = read_provenance(path, key, fmt=fmt)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ConfigError(f"cannot read the provenance of key {key!r} from {path}: {_one_line(e)}") from None
    if prov is None:
        return None, None
    return prov, prov.get("sha256") == prompt_sha256(prompt)


def read_prompt_source(ref: str | Path, *, fmt: str | None = None, root: str | Path = "runs",
                       store: str | Path | None = None) -> tuple[Path | str, str | None, str, dict[str, Any]]:
    """(where, key, prompt, decoding) for what `check --prompt-from` takes: a run (id under `root`, or its
    directory: its best prompt and the decoding it was scored with), a plain-text file such as a run's
    best_prompt.txt (read exactly), `FILE:dotted.key` of an app config (key None for the first two), or a
    prompt registry version `mlflow://prompts/NAME@ALIAS` (where names the exact version).
    `store`: a postgresql:// URL to find the run in (a StoreError there is not hidden by the file fallbacks)."""
    from promptlearn.export import detect_format
    from promptlearn.export.mlflow_registry import is_registry_uri, read_registry_prompt
    from promptlearn.store.locate import locate_run

    if is_registry_uri(ref):
        got = read_registry_prompt(str(ref))
        return got.where, None, got.prompt, dict(got.decoding)

    try:
        run = locate_run(ref, store=store, root=root)
    except RunError:
        run = None
    if run is not None:
        try:
            rs = run.open()
            try:
                _, _, prompt, _, _, decoding = _best(rs)
            finally:
                rs.close()
        finally:
            run.close()
        return run.files_dir, None, prompt, decoding
    path = Path(ref)
    if path.is_file():
        try:
            kind = detect_format(path, fmt)
        except ValueError:
            kind = None  # not a config format: plain text
        if kind is not None and path.suffix.lower() != ".txt":
            raise ConfigError(f"{path} is a {kind} config: give the prompt's key as {path}:dotted.key (e.g. "
                              "assistant.system_prompt)")
        try:
            return path, None, path.read_text(encoding="utf-8"), {}
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the prompt from {path}: {_one_line(e)}") from None
    file, key, prompt = read_prompt_ref(str(ref), fmt=fmt)
    return file, key, prompt, {}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---- the gate --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckReport:
    """A prompt re-evaluated on one split, compared with the task's seed prompt, and the gate's verdict.

    `score` is the mean example score (what `optimize` records per split); `checks` the pass rate of each check;
    `fixed` / `broken` count examples the seed failed and this prompt passes, and the reverse; `reasons` says
    why the gate fails (empty when it passes); `failures` lists failing examples with the checks' feedback, the
    broken ones first.
    """

    task: str
    split: str
    prompt: str
    prompt_sha256: str
    score: float
    checks: Mapping[str, float]
    seed_score: float
    seed_checks: Mapping[str, float]
    n_examples: int
    fixed: int
    broken: int
    fixed_ids: tuple[str, ...]
    broken_ids: tuple[str, ...]
    min_score: float | None
    max_broken: int | None
    complete: bool
    reasons: tuple[str, ...]
    failures: tuple[Mapping[str, Any], ...]
    usage: Usage = field(default_factory=Usage)
    side_effects: Mapping[str, Any] = field(default_factory=dict)
    targets: Mapping[str, Any] = field(default_factory=dict)  #: several targets: score, fixed, broken per target

    @property
    def passed(self) -> bool:
        """True when the gate passes: complete, score >= min_score, broken <= max_broken."""
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "passed": self.passed, "score": self.score,
                "seed_score": self.seed_score, "checks": dict(self.checks), "seed_checks": dict(self.seed_checks),
                "n_examples": self.n_examples, "fixed": self.fixed, "broken": self.broken,
                "fixed_ids": list(self.fixed_ids), "broken_ids": list(self.broken_ids),
                "min_score": self.min_score, "max_broken": self.max_broken, "complete": self.complete,
                "reasons": list(self.reasons), "failures": [dict(f) for f in self.failures],
                "prompt_sha256": self.prompt_sha256, "calls": self.usage.calls,
                "cached_calls": self.usage.cached_calls, "tokens": self.usage.tokens, "usd": self.usage.usd,
                "side_effects": {k: v for k, v in self.side_effects.items() if not k.endswith("_ids")},
                **({"targets": {k: dict(v) for k, v in self.targets.items()}} if self.targets else {})}


def _sha(prompt: str) -> str:
    from promptlearn.export import prompt_sha256

    return prompt_sha256(prompt)


def check_prompt(task: "Task | str | Path", prompt: str | None = None, split: str = "test",
                 min_score: float | None = None, max_broken: int | None = None, *,
                 cache_path: str | Path | None = None, use_cache: bool = True,
                 decoding: Mapping[str, Any] | None = None,
                 target_min: Mapping[str, float] | None = None) -> CheckReport:
    """Evaluate `prompt` (default: the seed) and the task's seed prompt on `split`; gate on score and breakage.

    `task` is a Task or a task file path. Both evaluations share one Evaluator (cache, ledger, budget) in this
    process. The gate fails when the evaluation is incomplete (a budget stop), when the score is below
    `min_score`, or when more than `max_broken` examples the seed passed now fail. `decoding`: the decoding
    options the run scored the prompt with (an export's provenance, e.g. {"guidance": 1.5}), applied to this
    prompt only; the seed is decoded as the task says, as in the run. With several targets (`targets:`), the
    score is the task's aggregate, and `min_score` and `max_broken` hold on every target; `target_min` sets one
    target's own minimum (target label -> score).
    """
    from promptlearn.targets import check_target_names, gate_targets, make_evaluator
    from promptlearn.metrics import side_effects
    from promptlearn.task import Task, load_task

    t = task if isinstance(task, Task) else load_task(task)
    text = t.prompt if prompt is None else prompt
    if not isinstance(text, str):
        raise ConfigError(f"the prompt must be a string, got {type(text).__name__}")
    if min_score is not None and not 0 <= min_score <= 1:  # also refuses NaN
        raise ConfigError(f"min_score must be between 0 and 1 (scores are 0-1), got {min_score:g}")
    if max_broken is not None and max_broken < 0:
        raise ConfigError(f"max_broken must be >= 0, got {max_broken}")
    unknown = sorted(set(decoding or {}) - set(DECODING_KEYS))
    if unknown:
        raise ConfigError(f"unknown decoding options {unknown}; known: {', '.join(DECODING_KEYS)}")
    overrides = {k: v for k, v in (decoding or {}).items() if v is not None} or None
    if overrides and not t.model.is_local:
        raise ConfigError(f"decoding options {overrides} need the embedded model (local/...); "
                          f"{t.model.name} cannot apply them")
    check_target_names(t, list(target_min or {}))
    t.require(split)
    t.warn()
    examples = t.examples(split)
    ev = make_evaluator(t, cache_path=cache_path, use_cache=use_cache)
    try:
        mine = ev.evaluate(text, examples, split=split, tag="check", model_overrides=overrides)
        seed = mine if text == t.prompt and not overrides else ev.evaluate(t.prompt, examples, split=split,
                                                                           tag="seed")
        usage = ev.ledger.snapshot()
    finally:
        ev.close()
    effects = side_effects(mine, seed, examples)
    reasons: list[str] = []
    if not mine.complete or not seed.complete:
        reasons.append(f"evaluation incomplete ({mine.stop_reason or seed.stop_reason}): scored "
                       f"{len(mine.results)} of {len(examples)} examples")
    if min_score is not None and mine.score < min_score:
        reasons.append(f"score {mine.score:.4f} is below the minimum {min_score:g}")
    broken_ids = tuple(effects.get("broken_ids", ()))
    if max_broken is not None and len(broken_ids) > max_broken:
        reasons.append(f"breaks {len(broken_ids)} {split} example(s) the seed prompt passed "
                       f"(allowed {max_broken}): {', '.join(broken_ids)}")
    per_target, target_reasons = gate_targets(mine, seed, examples, min_score=min_score, max_broken=max_broken,
                                              target_min=target_min)
    reasons += target_reasons
    failures = tuple(sorted(({"id": ex_id, "score": res.score, "broken": ex_id in broken_ids,
                              "feedback": res.feedback, "reply": res.turns[-1].reply if res.turns else ""}
                             for ex_id, res in mine.results.items() if not res.passed),
                            key=lambda f: not f["broken"]))  # what this prompt broke, then what the seed fails too
    return CheckReport(t.name, split, text, _sha(text), mine.score, mine.check_rates(), seed.score,
                       seed.check_rates(), len(mine.results), int(effects.get("fixed", 0)), len(broken_ids),
                       tuple(effects.get("fixed_ids", ())), broken_ids, min_score, max_broken,
                       mine.complete and seed.complete, tuple(reasons), failures, usage, effects, per_target)
