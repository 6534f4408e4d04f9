"""The MLflow Prompt Registry as an export target and a prompt source: `mlflow://prompts/NAME`, `...NAME@ALIAS`,
`...NAME/VERSION`.

The server is MLflow's own setting (MLFLOW_REGISTRY_URI, else MLFLOW_TRACKING_URI), and so are its credentials.
Templates: promptlearn's `{placeholder}` is the registry's `{{placeholder}}`. A prompt is converted only when the
result renders exactly as promptlearn renders it (checked with MLflow's own PromptVersion.format) and converts
back to the very same text; a prompt whose literal braces MLflow would read as variables (or as Jinja2) is refused
rather than registered as something else.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from promptlearn.errors import ConfigError

SCHEME = "mlflow://prompts/"
TAG = "promptlearn."  #: prefix of the provenance tags on a prompt version
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # MLflow's PROMPT_NAME_RULE
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_registry_uri(ref: Any) -> bool:
    return isinstance(ref, str) and ref.startswith("mlflow://")


@dataclass(frozen=True)
class RegistryRef:
    """A prompt in the registry: a name and at most one of alias or version (neither: the latest version)."""

    name: str
    alias: str | None = None
    version: int | None = None

    @property
    def mlflow_uri(self) -> str:
        """MLflow's own form, as an app passes it to mlflow.genai.load_prompt."""
        if self.version is not None:
            return f"prompts:/{self.name}/{self.version}"
        return f"prompts:/{self.name}@{self.alias or 'latest'}"

    def __str__(self) -> str:
        tail = f"/{self.version}" if self.version is not None else f"@{self.alias}" if self.alias else ""
        return f"{SCHEME}{self.name}{tail}"


def parse_registry_uri(ref: str) -> RegistryRef:
    """`mlflow://prompts/NAME[@ALIAS|/VERSION]` -> RegistryRef, or a ConfigError saying the form."""
    form = "mlflow://prompts/NAME, mlflow://prompts/NAME@ALIAS or mlflow://prompts/NAME/VERSION"
    if not ref.startswith(SCHEME):
        raise ConfigError(f"{ref!r} is not a prompt registry URI; write {form}")
    rest = ref[len(SCHEME):]
    name, alias, version = rest, None, None
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if not _NAME.fullmatch(alias):
            raise ConfigError(f"bad alias {alias!r} in {ref!r}; write {form}")
    elif "/" in rest:
        name, v = rest.split("/", 1)
        if not v.isdigit() or int(v) < 1:
            raise ConfigError(f"bad version {v!r} in {ref!r} (versions are 1, 2, ...); write {form}")
        version = int(v)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"bad prompt name {name!r} in {ref!r} (letters, digits, _ . -); write {form}")
    return RegistryRef(name, alias, version)


# ---- templates -------------------------------------------------------------------------------------------------


def to_registry_template(prompt: str) -> str:
    """The prompt in the registry's syntax: each `{name}` placeholder as `{{name}}`, everything else as it is."""
    from promptlearn.task import PLACEHOLDER_RE

    template = PLACEHOLDER_RE.sub(lambda m: "{{" + m.group(1) + "}}", prompt)
    try:
        back = from_registry_template(template)
    except ConfigError as e:
        raise ConfigError(f"the prompt cannot go to the registry as it is: {e}") from None
    if back != prompt:
        raise ConfigError("the prompt cannot go to the registry as it is: its literal braces would read back as "
                          "other text (e.g. a literal {{name}}, which MLflow takes for a variable)")
    return template


def from_registry_template(template: str) -> str:
    """A registry template in promptlearn's syntax (`{{ name }}` -> `{name}`); ConfigError when MLflow would
    render it differently from how promptlearn renders the result (Jinja2, dotted variables, literal braces)."""
    from mlflow.prompt.constants import PROMPT_TEMPLATE_VARIABLE_PATTERN

    if "{%" in template and "%}" in template:
        raise ConfigError("the registry template uses Jinja2 ({% ... %}), which promptlearn does not render")
    dotted = [m.group(1) for m in PROMPT_TEMPLATE_VARIABLE_PATTERN.finditer(template) if "." in m.group(1)]
    if dotted:
        raise ConfigError(f"the registry template has dotted variables ({', '.join(sorted(set(dotted)))}), which "
                          "promptlearn placeholders cannot be")
    prompt = PROMPT_TEMPLATE_VARIABLE_PATTERN.sub(lambda m: "{" + m.group(1) + "}", template)
    if not renders_alike(prompt, template):
        raise ConfigError("the registry template's braces read differently in promptlearn (e.g. a literal "
                          "{name} next to {{name}} variables); rewrite them in the registry")
    return prompt


def renders_alike(prompt: str, template: str) -> bool:
    """Whether promptlearn's render of `prompt` and MLflow's PromptVersion.format of `template` give the same text
    for every variable either of them knows (each given a distinct value)."""
    from mlflow.entities.model_registry.prompt_version import PromptVersion

    from promptlearn.task import PLACEHOLDER_RE, render_prompt

    make: Any = PromptVersion  # typed as abstract (from_proto), built like MLflow's own docs build it
    version = make("promptlearn-check", 1, template)
    names = sorted(set(PLACEHOLDER_RE.findall(prompt)) | set(version.variables))
    values = {n: f"<value {i} of {len(names)}>" for i, n in enumerate(names)}
    theirs = version.format(**values)
    return isinstance(theirs, str) and theirs == render_prompt(prompt, {n: values[n] for n in names
                                                                       if _IDENT.fullmatch(n)})


# ---- the server ------------------------------------------------------------------------------------------------


def registry_client(tracking_uri: str | None = None) -> Any:
    """An MlflowClient for the registry MLflow's environment names (or `tracking_uri`)."""
    from promptlearn.mlflow_tracking import check_uri, import_mlflow

    import_mlflow()
    import logging

    from mlflow import MlflowClient

    # "Waiting up to 300 seconds for prompt version to finish creation" on every export says nothing to act on
    logging.getLogger("mlflow.store.model_registry.abstract_store").setLevel(logging.WARNING)

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or uri
    if not registry:
        raise ConfigError("no MLflow server: set MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000); credentials go "
                          "in MLflow's own MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / _PASSWORD")
    try:
        check_uri(registry, "MLFLOW_REGISTRY_URI" if os.environ.get("MLFLOW_REGISTRY_URI") else "MLFLOW_TRACKING_URI")
    except Exception as e:  # noqa: BLE001 (a TaskError here is about the environment: one ConfigError line)
        raise ConfigError(str(e)) from None
    return MlflowClient(tracking_uri=uri or registry, registry_uri=registry)


def _registry_error(what: str, e: BaseException) -> ConfigError:
    from promptlearn.mlflow_tracking import one_line

    return ConfigError(f"{what}: {one_line(e)}")


# ---- reading ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryPrompt:
    """A prompt version read from the registry, in promptlearn's syntax, with the decoding it was scored with."""

    ref: RegistryRef
    version: int
    prompt: str
    template: str
    decoding: Mapping[str, Any]
    tags: Mapping[str, str]
    aliases: tuple[str, ...]

    @property
    def where(self) -> str:
        """The exact version, whatever alias led to it (what a gate report names)."""
        shown = f"{SCHEME}{self.ref.name}/{self.version}"
        return shown if self.ref.version is not None else f"{self.ref} = {shown}"


def read_registry_prompt(ref: str, *, tracking_uri: str | None = None) -> RegistryPrompt:
    """The prompt version `ref` names, as an app's mlflow.genai.load_prompt(...) gets it, in promptlearn's syntax.
    A version promptlearn registered must convert back to the text whose sha256 it recorded."""
    from promptlearn.types import candidate_id

    parsed = parse_registry_uri(ref)
    client = registry_client(tracking_uri)
    try:
        version = client.load_prompt(parsed.mlflow_uri, cache_ttl_seconds=0)
    except Exception as e:  # noqa: BLE001 (MLflow and requests errors alike: one line)
        raise _registry_error(f"cannot read {parsed} from the MLflow registry", e) from None
    if version is None:
        raise ConfigError(f"{parsed}: no such prompt version in the MLflow registry")
    if not version.is_text_prompt:
        raise ConfigError(f"{parsed} is a chat prompt (a list of messages); promptlearn reads text prompts")
    template = str(version.template)
    try:
        prompt = from_registry_template(template)
    except ConfigError as e:
        raise ConfigError(f"{parsed}: {e}") from None
    tags = dict(version.tags)
    decoding = json.loads(tags.get(TAG + "decoding") or "{}")
    recorded = tags.get(TAG + "candidate_id")  # the run's content hash of prompt and decoding
    if recorded and recorded != candidate_id(prompt, decoding):
        raise ConfigError(f"{parsed} version {version.version} does not read back as the prompt the run scored "
                          f"(its {TAG}candidate_id tag)")
    return RegistryPrompt(parsed, int(version.version), prompt, template, decoding, tags,
                          tuple(version.aliases or ()))
