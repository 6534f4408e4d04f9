"""The task file: pydantic schema, dataset loading, splits. Everything is validated before a token is spent."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptlearn import importers
from promptlearn.errors import TaskError
from promptlearn.importers import read_text
from promptlearn.types import Example, Message

PLACEHOLDER_RE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """A model reached through litellm: `local/smollm2`, `openai/gpt-4o-mini`, `ollama/llama3`, ..."""

    name: str
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(128, ge=1, le=100_000)
    seed: int | None = 0
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="name of the env var holding the key (never the key)")
    concurrency: int | None = Field(None, ge=1, le=1024)
    timeout: float = Field(120.0, gt=0)
    retries: int = Field(6, ge=0, le=50)
    guidance: float = Field(1.0, ge=0.0, le=10.0, description="classifier-free guidance on the system prompt")
    params: dict[str, Any] = Field(default_factory=dict)
    transport: Literal["auto", "litellm", "http"] = Field(
        "auto", description="auto: `openai/<name>` + api_base posts straight to the server (promptlearn.openai_http), "
                            "everything else goes through litellm; litellm / http force one")

    @property
    def is_local(self) -> bool:
        return self.name.startswith("local/")

    @property
    def direct_http(self) -> bool:
        """Whether calls skip litellm and post to an OpenAI-compatible api_base (see promptlearn.openai_http)."""
        if self.transport == "http":
            return True
        # OpenAI's own API stays with litellm, which maps parameters per model (max_completion_tokens, ...)
        return (self.transport == "auto" and bool(self.api_base) and self.name.startswith("openai/")
                and "api.openai.com" not in (self.api_base or ""))

    @model_validator(mode="after")
    def _http_needs_a_server(self) -> "ModelConfig":
        if self.transport == "http" and (not self.api_base or self.is_local):
            raise ValueError("transport: http posts to an OpenAI-compatible server: set model.api_base "
                             "(e.g. http://127.0.0.1:8000/v1) or use transport: auto")
        return self

    @property
    def max_concurrency(self) -> int:
        return self.concurrency or (1 if self.is_local else 8)

    @field_validator("params")
    @classmethod
    def _no_inline_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        def check(params: Any, where: str) -> None:
            if isinstance(params, dict):
                for key, value in params.items():
                    if _secret_like(str(key)):
                        raise ValueError(f"{where}.{key} looks like a secret; put it in an env var and name it "
                                         "with api_key_env")
                    check(value, f"{where}.{key}")
            elif isinstance(params, list):
                for item in params:
                    check(item, where)

        check(v, "params")
        return v


_NOT_SECRETS = {"prompt_cache_key"}


def _secret_like(name: str) -> bool:
    """A parameter name that would carry a credential (api_key, x-api-key, access_token, client_secret,
    Authorization, extra_headers, ...); token counts like max_completion_tokens are not."""
    n = name.lower().replace("-", "_")
    if n in _NOT_SECRETS:
        return False
    if any(w in n for w in ("key", "secret", "password", "passwd", "credential", "auth", "bearer", "cookie")):
        return True
    return ("token" in n and not n.endswith("tokens")) or n in ("headers", "extra_headers")


class DataSource(_Strict):
    """A dataset: a file (JSONL or a known format) or inline examples, with checks and meta for all its rows."""

    file: str | None = None
    format: Literal["jsonl", "sys_ifeval", "tensortrust_hijacking", "tensortrust_helpful", "sysbench"] = "jsonl"
    examples: list[dict[str, Any]] | None = None
    limit: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)
    checks: list[dict[str, Any]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    split: Literal["train", "val", "test"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DataSource":
        if (self.file is None) == (self.examples is None):
            raise ValueError("give exactly one of 'file' or 'examples'")
        return self


class Splits(_Strict):
    train: float = Field(0.4, ge=0, le=1)
    val: float = Field(0.3, ge=0, le=1)
    test: float = Field(0.3, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> "Splits":
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {self.train + self.val + self.test:g}")
        return self


class Budget(_Strict):
    max_calls: int | None = Field(None, ge=0)
    max_usd: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    max_seconds: float | None = Field(None, gt=0)


class Objective(_Strict):
    """What the search maximises and what it must not break.

    `primary`: the score every decision uses (screening, acceptance, the reported val and test): "score" (strict)
    or "loose" (IFEval's loose variant for the checks that have one). `weights`: check name -> weight in its
    turn's score (times the check's own `weight:`; 1 by default). `constraints`: side-effect limits like
    `broken: "<= 2"` a new best must keep.
    """

    primary: Literal["score", "loose"] = "score"
    aggregate: Literal["min", "mean"] = Field(
        "min", description="with several targets: min (the prompt must work on every target) or mean (weighted "
                           "by each target's weight)")
    constraints: dict[str, str] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for name, w in v.items():
            if not 0 < w < float("inf"):
                raise ValueError(f"weight of check '{name}' must be > 0, got {w:g}")
        return v

    @field_validator("constraints")
    @classmethod
    def _parse(cls, v: dict[str, str]) -> dict[str, str]:
        for key, expr in v.items():
            if not re.fullmatch(r"\s*(<=|>=|<|>)\s*-?[0-9.]+\s*", str(expr)):
                raise ValueError(f"constraint {key}: '{expr}' must look like '<= 2' or '>= 0.9'")
        return {k: str(e) for k, e in v.items()}


#: What to do instead of writing credentials into a tracking URI (which would end up in run files and logs).
CREDENTIALS_FIX = ("put them in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN and give "
                   "the URI without them")


def has_credentials(uri: str) -> bool:
    """Whether a URI carries `user:password@` (one rule for the task file, --mlflow and MLFLOW_TRACKING_URI)."""
    from urllib.parse import urlsplit

    return "@" in (urlsplit(uri).netloc or "")


class Tracking(_Strict):
    """Where runs are logged: `mlflow:` a tracking server URI (credentials only in MLflow's own env vars)."""

    mlflow: str | None = None
    experiment: str = "promptlearn"

    @field_validator("mlflow")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        if v is not None and has_credentials(v):
            raise ValueError(f"the URI holds credentials; {CREDENTIALS_FIX}")
        return v


class TargetConfig(_Strict):
    """One model the prompt must work on (see promptlearn.targets): its model, its weight in a `mean` objective
    and side-effect constraints that hold on this target on top of `objective.constraints`."""

    model: ModelConfig
    label: str | None = Field(None, description="the target's name in reports (default: the model's name)")
    weight: float = Field(1.0, gt=0, lt=float("inf"))
    constraints: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _target_shorthand(v)

    @field_validator("constraints")
    @classmethod
    def _parse(cls, v: dict[str, str]) -> dict[str, str]:
        return Objective._parse(v)

    @property
    def key(self) -> str:
        return self.label or self.model.name


def _target_shorthand(v: Any) -> Any:
    """`- local/smollm2` or `- {name: local/smollm2, guidance: 1.5, weight: 2}`: a model with target keys."""
    if isinstance(v, str):
        return {"model": {"name": v}}
    if isinstance(v, Mapping) and "model" not in v:
        own = {k: v[k] for k in ("label", "weight", "constraints") if k in v}
        return {**own, "model": {k: x for k, x in v.items() if k not in own}}
    if isinstance(v, Mapping) and isinstance(v.get("model"), str):
        return {**v, "model": {"name": v["model"]}}
    return v


class Migration(_Strict):
    """Move a prompt to the task's `model` from the model it was written for (`from`): the seed's test score on
    `from` is the bar; the search runs on `model`, and the result says whether it reaches the bar, example by
    example."""

    source: ModelConfig = Field(alias="from")

    @field_validator("source", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class OptimizerConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "evolve"


class TaskSpec(_Strict):
    name: str
    description: str = ""
    model: ModelConfig
    targets: list[TargetConfig] = Field(default_factory=list)
    migrate: Migration | None = None
    proposer: ModelConfig | None = None
    judge: ModelConfig | None = None
    prompt: str
    protected: list[str] = Field(default_factory=list)
    placeholders: list[str] | None = None
    data: list[DataSource] = Field(min_length=1)
    splits: Splits = Field(default_factory=Splits)
    checks: list[dict[str, Any]] = Field(default_factory=list)
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    cache: str | None = None
    tracking: Tracking = Field(default_factory=Tracking)

    @field_validator("model", "proposer", "judge", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _model_from_targets(cls, v: Any) -> Any:
        """`targets:` (several models) replaces `model:`: the first target is the model the proposer and judge
        default to. Giving both would leave unclear which models are scored."""
        if not isinstance(v, Mapping):
            return v
        v = {k: x for k, x in v.items() if not (k in ("model", "targets") and x is None)}  # cleared by overrides
        if not v.get("targets"):
            return v
        if v.get("model") is not None:
            raise ValueError("give `model:` (one target) or `targets:` (several), not both; set the proposer's "
                             "model with `proposer:`")
        if v.get("migrate"):
            raise ValueError("`migrate:` moves a prompt to one `model:`; it does not combine with `targets:`")
        first = v["targets"][0] if isinstance(v["targets"], list) and v["targets"] else {}
        if isinstance(first, TargetConfig):
            return {**v, "model": first.model}
        return {**v, "model": _target_shorthand(first).get("model", {})}

    @model_validator(mode="after")
    def _distinct_targets(self) -> "TaskSpec":
        keys = [t.key for t in self.targets]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise ValueError(f"two targets are named '{dup}'; give each a distinct `label:`")
        if len(self.targets) == 1:
            raise ValueError("targets: needs two or more models; for one, use `model:`")
        if self.objective.aggregate == "min" and any(t.weight != 1 for t in self.targets):
            raise ValueError("a target's `weight` counts only with `objective: {aggregate: mean}`; the default "
                             "aggregate min takes the worst target")
        configs = [t.model.model_dump_json() for t in self.targets]
        if len(set(configs)) < len(configs):
            raise ValueError("two targets have the same model config: they would give the same replies")
        return self


MIN_SPLIT = 5  # fewer val (or test) examples than this: Task.warnings says acceptance (or test) means little


class Task:
    """A loaded, validated task: the spec plus its examples split into train/val/test."""

    def __init__(self, spec: TaskSpec, examples: Mapping[str, list[Example]], *, path: Path | None = None):
        self.spec = spec
        self.path = path
        self.splits = {k: list(v) for k, v in examples.items()}
        self.placeholders = tuple(spec.placeholders if spec.placeholders is not None
                                  else dict.fromkeys(PLACEHOLDER_RE.findall(spec.prompt)))

    name = property(lambda self: self.spec.name)
    prompt = property(lambda self: self.spec.prompt)
    model = property(lambda self: self.spec.model)
    proposer = property(lambda self: self.spec.proposer or self.spec.model)
    judge = property(lambda self: self.spec.judge or self.spec.proposer or self.spec.model)
    budget = property(lambda self: self.spec.budget)
    checks = property(lambda self: self.spec.checks)

    @classmethod
    def build(cls, name: str, prompt: str, conversations: Iterable[Any], checks: Iterable[Any] = (),
              model: str | ModelConfig | Mapping[str, Any] | None = None, **spec: Any) -> "Task":
        """Build a task in code; same as `make_task`."""
        return make_task(name, prompt, conversations, checks, model, **spec)

    def examples(self, split: str = "val") -> list[Example]:
        if split == "all":
            return self.splits["train"] + self.splits["val"] + self.splits["test"]
        if split not in self.splits:
            raise TaskError(f"unknown split '{split}'", fix="use train, val, test or all")
        return self.splits[split]

    def require(self, *splits: str, proposer: bool = False) -> None:
        """Refuse a command before it creates anything or calls a model: every split it scores must have
        examples, and every model it will call (target; proposer when `proposer`; judge when a check on those
        splits needs one) must find its key, or its GGUF file for a `local/` model. Raises TaskError in one
        line naming the split, the key or the model."""
        names = list(dict.fromkeys(splits))
        empty = [s for s in names if not self.examples(s)]  # an unknown split name is a TaskError of its own
        if empty:
            counts = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
            which = " and ".join(empty)
            raise TaskError(f"the {which} split{'s have' if len(empty) > 1 else ' has'} no examples ({counts})",
                            file=str(self.path) if self.path else None, field="splits",
                            fix=f"add examples or change `splits:` so that {which} get"
                                f"{'' if len(empty) > 1 else 's'} at least one")
        from promptlearn.local import require_gguf
        from promptlearn.lm import require_key

        # an unset proposer is the model; an unset judge the proposer, else the model: check each config once,
        # under the field that holds it
        judge = self.uses_judge(*names)
        uses_proposer = proposer or (judge and self.spec.judge is None)
        models = [("model", self.spec.model), ("proposer", self.spec.proposer if uses_proposer else None),
                  ("judge", self.spec.judge if judge else None)]
        models += [(f"targets[{i}].model", t.model) for i, t in enumerate(self.spec.targets)]
        if self.spec.migrate is not None:
            models.append(("migrate.from", self.spec.migrate.source))
        for field, config in models:
            if config is not None:
                check = require_gguf if config.is_local else require_key
                check(config, field=field, file=str(self.path) if self.path else None)

    def warnings(self, *, search: bool = False) -> list[str]:
        """What makes this task measure little or nothing, one line each (it still runs): an empty seed prompt,
        protected clauses the seed lacks, no checks at all; with `search` (optimize), val or test splits too
        small for acceptance or the held-out score to mean anything."""
        out = ["prompt: the seed prompt is empty"] if not self.prompt.strip() else []
        out += [f"protected: '{c}' is not in the seed prompt: every candidate must keep it verbatim, so the seed "
                "is the only prompt without it" for c in self.spec.protected if c not in self.prompt]
        examples = self.examples("all")
        if not self.spec.checks and not any(e.checks or any(t.checks for t in e.turns) for e in examples):
            out.append("checks: the task has no checks: every reply scores 1.0, so every prompt ties")
        if search:
            for split, what in (("val", "accepting a prompt over another"), ("test", "the held-out score")):
                n = len(self.examples(split))
                if 0 < n < MIN_SPLIT:
                    rests = "it alone" if n == 1 else "so few"
                    out.append(f"splits: {split} has {n} example{'s' if n > 1 else ''}: {what} rests on {rests}; "
                               f"give {split} at least {MIN_SPLIT}")
        return [" ".join(w.split()) for w in out]

    def warn(self, *, search: bool = False) -> None:
        """Issue `warnings()` as TaskWarnings (the CLI prints each on one stderr line)."""
        import warnings

        from promptlearn.errors import TaskWarning

        for text in self.warnings(search=search):
            warnings.warn(text, TaskWarning, stacklevel=3)

    def uses_judge(self, *splits: str) -> bool:
        """Whether scoring these splits calls the judge model (a check with `needs_model`, e.g. checklist)."""
        from promptlearn.checks import build_check

        specs: list[Mapping[str, Any]] = list(self.spec.checks)
        for split in splits:
            for ex in self.examples(split):
                specs += list(ex.checks) + [c for t in ex.turns for c in t.checks]
        seen: set[str] = set()
        for spec in specs:
            key = json.dumps(spec, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                if getattr(build_check(spec), "needs_model", False):
                    return True
        return False

    def violations(self, prompt: str) -> list[str]:
        """What a candidate prompt lost: protected clauses and placeholders that must survive verbatim."""
        missing = [f"protected clause '{c[:40]}'" for c in self.spec.protected if c not in prompt]
        missing += [f"placeholder '{{{p}}}'" for p in self.placeholders if "{" + p + "}" not in prompt]
        return missing

    def fingerprint(self) -> str:
        """Hash of everything that changes scores: used to refuse resuming a run with a different task."""
        blob = json.dumps({"spec": self.spec.model_dump(mode="json", exclude={"budget", "optimizer", "tracking"}),
                           "examples": {k: [e.id for e in v] for k, v in self.splits.items()}}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_task(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Task:
    """Load and validate a task file. Every problem is a TaskError naming the file, the field and the fix."""
    import yaml

    path = Path(path)
    if not _exists(path):
        raise TaskError("file not found", file=str(path), fix="check the path to the task file")
    text = read_text(path, file=str(path), what="the task file")
    try:
        raw = yaml.load(text, Loader=_safe_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark else None
        raise TaskError(f"not valid YAML: {getattr(e, 'problem', e)}", file=str(path), field=line,
                        fix="fix the YAML syntax (indentation, quotes, colons)") from None
    except RecursionError:
        raise TaskError("not valid YAML: nested too deeply", file=str(path), fix="flatten the task file") from None
    except ValueError as e:  # e.g. a number with more digits than Python converts
        raise TaskError(f"not valid YAML: {str(e)[:120]}", file=str(path), fix="fix the value") from None
    if not isinstance(raw, dict):
        raise TaskError("the task file must be a YAML mapping", file=str(path),
                        fix="start with 'name:', 'model:', 'prompt:', 'data:'")
    if overrides:
        raw = _deep_merge(raw, overrides)
    return task_from_dict(raw, base_dir=path.parent, source=str(path))


def task_from_dict(raw: Mapping[str, Any], *, base_dir: Path | str = ".", source: str = "<task>") -> Task:
    """Build a Task from a plain dict (what the YAML holds); relative paths resolve against base_dir."""
    base_dir = Path(base_dir)
    raw = dict(raw)
    if isinstance(raw.get("prompt"), Mapping) and "file" in raw["prompt"]:
        prompt_path = base_dir / str(raw["prompt"]["file"])
        if not _exists(prompt_path):
            raise TaskError(f"prompt file '{prompt_path}' not found", file=source, field="prompt.file",
                            fix="give a path relative to the task file")
        raw["prompt"] = read_text(prompt_path, file=source, field="prompt.file", what=f"prompt file '{prompt_path}'")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        raise _one_line(e, source) from None
    except RecursionError:
        raise TaskError("nested too deeply", file=source, fix="flatten the task file") from None
    _validate_checks(spec.checks, source, "checks")
    for i, ds in enumerate(spec.data):
        _validate_checks(ds.checks, source, f"data[{i}].checks")
    examples = _load_examples(spec, base_dir, source)
    _validate_weights(spec, [ex for _, ex in examples], source)
    return Task(spec, _split(spec, examples), path=Path(source) if source != "<task>" else None)


def _validate_weights(spec: TaskSpec, examples: Sequence[Example], source: str) -> None:
    """Every name in objective.weights must be the name of a check the task has (a typo would weigh nothing)."""
    if not spec.objective.weights:
        return
    from promptlearn.checks import build_check

    specs = list(spec.checks) + [c for ex in examples for c in ex.checks + tuple(x for t in ex.turns for x in t.checks)]
    names = sorted({build_check(c).name for c in specs})
    for name in spec.objective.weights:
        if name not in names:
            import difflib

            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise TaskError(f"no check is named '{name}'", file=source, field=f"objective.weights.{name}",
                            fix=f"{hint}use a check's name (its `name:`, or e.g. starts_with(Ahoy)); checks here: "
                                + (", ".join(names[:8]) or "none"))


def make_task(name: str, prompt: str, conversations: Iterable[Any], checks: Iterable[Any] = (),
              model: str | ModelConfig | Mapping[str, Any] | None = None, *, base_dir: Path | str = ".",
              **spec: Any) -> Task:
    """Build a Task in code instead of a task file.

    `conversations`: each one a string (one user turn), a list of strings (user turns), a list of `Message`s or
    `{role, content}` dicts (assistant messages are given history), or a row dict as in a JSONL dataset
    (`{"id": ..., "user": ..., "checks": [...]}`). `checks`: spec dicts as in a task file, or plain callables
    `fn(reply, ctx) -> bool | float | (score, feedback)` (also `fn(reply)`). `model` (and `proposer` / `judge`
    in `spec`): a litellm model string, a ModelConfig or a mapping (default `local/smollm2`, or none with
    `targets=[...]`, several models). `spec` takes any other task-file field (`splits`, `budget`, `objective`,
    `protected`, `optimizer`, `data`, `targets`, `migrate`, ...). Raises TaskError.
    """
    rows = [_conversation_row(c, i) for i, c in enumerate(conversations)]
    extra_data = [_as_plain(d) for d in spec.pop("data", None) or []]
    if not rows and not extra_data:
        raise TaskError("no conversations", field="conversations",
                        fix="pass at least one conversation, e.g. ['How do I reset my password?']")
    if model is None and not spec.get("targets"):
        model = "local/smollm2"
    raw: dict[str, Any] = {"name": name, "prompt": prompt, "model": _as_plain(model),
                           "data": ([{"examples": rows}] if rows else []) + extra_data,
                           "checks": [_check_spec(c, f"checks[{i}]") for i, c in enumerate(checks)]}
    for key, value in spec.items():
        raw[key] = _as_plain(value)
    return task_from_dict(raw, base_dir=base_dir)


def _as_plain(value: Any) -> Any:
    """ModelConfig and other spec models -> the dicts a task file would hold."""
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


def _check_spec(check: Any, where: str) -> dict[str, Any]:
    """A check spec mapping as is; a callable (or a Check object's `score`) registered in this process."""
    from promptlearn.checks.assertions import register_callable

    if isinstance(check, Mapping):
        return dict(check)
    if callable(check):
        return register_callable(check)
    score: Callable[..., Any] | None = getattr(check, "score", None)
    if callable(score) and not getattr(check, "needs_model", False):
        return register_callable(score, getattr(check, "name", None))
    raise TaskError(f"a check must be a spec mapping or a callable fn(reply, ctx), got {type(check).__name__}",
                    field=where, fix="pass e.g. {'type': 'starts_with', 'value': 'Ahoy'} or a function")


def _message(m: Any, where: str) -> dict[str, Any]:
    if isinstance(m, Message):
        return m.to_dict()
    if isinstance(m, str):
        return {"role": "user", "content": m}
    if isinstance(m, Mapping):
        out = dict(m)
        if "checks" in out:
            out["checks"] = [_check_spec(c, f"{where}.checks[{j}]") for j, c in enumerate(out["checks"])]
        return out
    raise TaskError(f"a message must be a string, a Message or a {{role, content}} dict, got {type(m).__name__}",
                    field=where, fix="write conversations as strings, lists of strings or lists of Message")


def _conversation_row(conv: Any, i: int) -> dict[str, Any]:
    """One conversation given in code -> one dataset row (the JSONL shape)."""
    where = f"conversations[{i}]"
    if isinstance(conv, str):
        return {"user": conv}
    if isinstance(conv, Message):
        return {"messages": [conv.to_dict()]}
    if isinstance(conv, Mapping):
        row = dict(conv)
        if "checks" in row:
            row["checks"] = [_check_spec(c, f"{where}.checks[{j}]") for j, c in enumerate(row["checks"])]
        if isinstance(row.get("messages"), (list, tuple)):
            row["messages"] = [_message(m, f"{where}.messages[{j}]") for j, m in enumerate(row["messages"])]
        return row
    if isinstance(conv, Sequence) and conv:
        if all(isinstance(m, str) for m in conv):
            return {"user": list(conv)}
        return {"messages": [_message(m, f"{where}[{j}]") for j, m in enumerate(conv)]}
    raise TaskError(f"a conversation must be a string, a non-empty list of strings or messages, or a row dict; "
                    f"got {type(conv).__name__}", field=where,
                    fix="e.g. 'Hi', ['Hi', 'And then?'] or [Message('user', 'Hi')]")


def _safe_loader() -> Any:
    """yaml.SafeLoader, except that a number too long for Python is a YAML error with its line, not a ValueError."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_int(loader: Any, node: Any) -> int:
        try:
            return yaml.SafeLoader.construct_yaml_int(loader, node)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"the number {node.value[:12]}... has too many "
                                                                 "digits", node.start_mark) from None

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return Loader


def _exists(path: Path) -> bool:
    """Path.exists, but a name the OS refuses (too long, NUL byte) is simply not there."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _validate_checks(checks: list[dict[str, Any]], source: str, field: str) -> None:
    from promptlearn.checks import CheckSpecError, build_check

    for i, spec in enumerate(checks):
        try:
            build_check(spec)
        except Exception as e:  # noqa: BLE001 - a check factory may raise anything for bad parameters
            msg = str(e) if isinstance(e, CheckSpecError) else f"{type(e).__name__}: {e}"
            raise TaskError(msg, file=source, field=f"{field}[{i}]",
                            fix="see `promptlearn checks` for types and their parameters") from None


def _one_line(err: ValidationError, source: str) -> TaskError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    fix = {
        "missing": f"add '{loc}' to the task file",
        "extra_forbidden": f"remove '{loc}' or check its spelling",
    }.get(first["type"], f"change '{loc}'")
    if first["type"] == "extra_forbidden" and first["loc"]:
        import difflib

        close = difflib.get_close_matches(str(first["loc"][-1]), _fields_at(first["loc"][:-1]), n=1)
        if close:
            msg += f"; did you mean '{close[0]}'?"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return TaskError(msg.replace("Value error, ", "") + extra, file=source, field=loc, fix=fix)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the schema model at a validation error location (for did-you-mean hints)."""
    model: Any = TaskSpec
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info else None
        if model is None:
            return []
    return list(model.model_fields)


def _model_in(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, Mapping) and isinstance(out.get(k), str):
            out[k] = _deep_merge({"name": out[k]}, v)
        else:
            out[k] = v
    return out


def _load_examples(spec: TaskSpec, base_dir: Path, source: str) -> list[tuple[DataSource, Example]]:
    from promptlearn.checks import build_check

    out: list[tuple[DataSource, Example]] = []
    seen: set[str] = set()
    for i, ds in enumerate(spec.data):
        field = f"data[{i}]"
        if ds.examples is not None:
            rows = [(n + 1, r) for n, r in enumerate(ds.examples)]
            where = f"{source} {field}.examples"
        else:
            assert ds.file is not None  # DataSource._one_source: examples or a file
            fpath = base_dir / ds.file
            if not _exists(fpath) or fpath.is_dir():
                what = "is a directory" if _exists(fpath) else "not found"
                raise TaskError(f"data file '{fpath}' {what}", file=source, field=f"{field}.file",
                                fix="give a path relative to the task file")
            rows = importers.read_rows(fpath, ds.format)
            where = str(fpath)
        rows = rows[ds.offset: ds.offset + ds.limit if ds.limit else None]
        for lineno, row in rows:
            try:
                ex = importers.to_example(row, ds.format, default_id=f"{Path(ds.file or 'inline').stem}-{lineno}")
            except Exception as e:  # noqa: BLE001 - any row that does not convert is a data error
                known: dict[type[Exception], str] = {KeyError: f"missing field {e}", IndexError: f"too few items ({e})"}
                msg = known.get(type(e), str(e))
                raise TaskError(f"line {lineno}: {msg}", file=where,
                                fix="each row needs 'messages' (or 'user') and optional 'checks'") from None
            ex = Example(ex.id, ex.turns, tuple(ds.checks) + ex.checks, {**ds.meta, **ex.meta})
            if ex.id in seen:
                raise TaskError(f"line {lineno}: duplicate example id '{ex.id}'", file=where,
                                fix="give every example a unique 'id'")
            seen.add(ex.id)
            for spec_i, c in enumerate(ex.checks + tuple(ch for t in ex.turns for ch in t.checks)):
                try:
                    build_check(c)
                except Exception as e:  # noqa: BLE001 - any bad check spec is a data error
                    raise TaskError(f"line {lineno}: check {spec_i}: {e}", file=where,
                                    fix="see `promptlearn checks`") from None
            out.append((ds, ex))
    if not out:
        raise TaskError("no examples", file=source, field="data", fix="add rows to the data files")
    return out


def _split(spec: TaskSpec, examples: list[tuple[DataSource, Example]]) -> dict[str, list[Example]]:
    """Fixed splits from `split:` on a data source; the rest shuffled by seed and cut by fraction."""
    out: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    free = []
    for ds, ex in examples:
        (out[ds.split].append(ex) if ds.split else free.append(ex))
    rng = random.Random(spec.splits.seed)
    free.sort(key=lambda e: e.id)
    rng.shuffle(free)
    n = len(free)
    n_train = round(n * spec.splits.train)
    n_val = round(n * spec.splits.val)
    out["train"] += free[:n_train]
    out["val"] += free[n_train:n_train + n_val]
    out["test"] += free[n_train + n_val:]
    return out


def render_prompt(template: str, variables: Mapping[str, Any]) -> str:
    """Fill `{placeholders}` the way the app will; unknown names and other braces stay as they are."""
    if not variables:
        return template
    return PLACEHOLDER_RE.sub(lambda m: str(variables[m.group(1)]) if m.group(1) in variables else m.group(0),
                              template)
