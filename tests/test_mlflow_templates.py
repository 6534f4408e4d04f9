"""promptlearn `{placeholder}` <-> MLflow Prompt Registry `{{placeholder}}`: lossless, and faithful to how MLflow's
own PromptVersion.format renders the registered template (no server needed: the conversion is offline)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("mlflow")  # promptlearn[mlflow]; in [all], so CI has it

from mlflow.entities.model_registry.prompt_version import PromptVersion  # noqa: E402

from promptlearn.errors import ConfigError  # noqa: E402
from promptlearn.export.mlflow_registry import (  # noqa: E402
    from_registry_template,
    parse_registry_uri,
    to_registry_template,
)
from promptlearn.task import PLACEHOLDER_RE, render_prompt  # noqa: E402


def mlflow_render(template: str, **values: str) -> str:
    return PromptVersion("t", 1, template).format(**values)


@pytest.mark.parametrize("prompt, template", [
    ("Hi {topic}.", "Hi {{topic}}."),
    ('Answer as JSON {"a": {"b": 1}} about {topic}', 'Answer as JSON {"a": {"b": 1}} about {{topic}}'),
    ("empty {} and { spaced } and {1x} stay", "empty {} and { spaced } and {1x} stay"),
    ("a lone {{ then a lone }} and }}{{ stay", "a lone {{ then a lone }} and }}{{ stay"),
    ("{a}{b} {a}", "{{a}}{{b}} {{a}}"),
    ("{{topic} and {topic}} are literal in both", "{{topic} and {topic}} are literal in both"),
    ("no braces at all", "no braces at all"),
])
def test_placeholders_convert_both_ways_exactly(prompt, template):
    assert to_registry_template(prompt) == template
    assert from_registry_template(template) == prompt
    values = {n: f"<{n}>" for n in PLACEHOLDER_RE.findall(prompt)}
    assert mlflow_render(template, **values) == render_prompt(prompt, values)


@pytest.mark.parametrize("prompt, why", [
    ("Templates write {{name}} for a name.", "would read back as other text"),  # MLflow: a variable
    ("keep {{ and }} as they are", "would read back as other text"),
    ("{{{topic}}}", "read differently"),
    ("{% if x %}yes{% endif %} {topic}", "Jinja2"),
    ("{{user.name}}", "dotted"),
])
def test_prompts_mlflow_would_read_otherwise_are_refused(prompt, why):
    with pytest.raises(ConfigError, match=why):
        to_registry_template(prompt)


def test_a_registry_template_written_by_hand_reads_as_promptlearn_renders_it():
    assert from_registry_template("Hello {{ name }}, about {{topic}}.") == "Hello {name}, about {topic}."
    with pytest.raises(ConfigError, match="read differently"):
        from_registry_template("{name} is literal to MLflow, {{name}} is not")


BRACEY = st.text(alphabet=st.sampled_from(list("{}{}ab _.%\n\"x1")), max_size=40)


@settings(max_examples=400, deadline=None)
@given(BRACEY)
def test_any_prompt_is_either_refused_or_round_trips_and_renders_alike(prompt):
    try:
        template = to_registry_template(prompt)
    except ConfigError:
        return
    assert from_registry_template(template) == prompt
    names = set(PLACEHOLDER_RE.findall(prompt)) | PromptVersion("t", 1, template).variables
    values = {n: f"[{i}]" for i, n in enumerate(sorted(names))}
    assert mlflow_render(template, **values) == render_prompt(prompt, values)


@pytest.mark.parametrize("uri, name, alias, version, mlflow_uri", [
    ("mlflow://prompts/app", "app", None, None, "prompts:/app@latest"),
    ("mlflow://prompts/app.sys-1@production", "app.sys-1", "production", None, "prompts:/app.sys-1@production"),
    ("mlflow://prompts/app/3", "app", None, 3, "prompts:/app/3"),
])
def test_registry_uris(uri, name, alias, version, mlflow_uri):
    ref = parse_registry_uri(uri)
    assert (ref.name, ref.alias, ref.version, ref.mlflow_uri, str(ref)) == (name, alias, version, mlflow_uri, uri)


@pytest.mark.parametrize("uri, message", [
    ("mlflow://prompts/", "bad prompt name"), ("mlflow://prompts/a b", "bad prompt name"),
    ("mlflow://prompts/app/0", "bad version"), ("mlflow://prompts/app/x", "bad version"),
    ("mlflow://prompts/app@", "bad alias"), ("mlflow://models/app", "not a prompt registry URI"),
])
def test_bad_registry_uris_say_the_form(uri, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_registry_uri(uri)
    assert "mlflow://prompts/NAME@ALIAS" in str(info.value)
