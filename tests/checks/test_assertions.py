import importlib
import textwrap

import pytest

from promptlearn.checks import assertions as A
from promptlearn.checks import base
from promptlearn.checks import build as builder
from promptlearn.checks.base import CheckContext, CheckSpecError
from promptlearn.types import CheckResult

CTX = CheckContext(system_prompt="Be a pirate.", user="hi")


@pytest.fixture
def build(monkeypatch):
    # builder._load_builtins also imports modules other helpers are still writing; load only ours.
    monkeypatch.setattr(builder, "_load_builtins", lambda: importlib.import_module("promptlearn.checks.assertions"))
    return lambda **spec: builder.build_check(spec)


def score(check, reply, ctx=CTX):
    r = check.score(reply, ctx)
    assert isinstance(r, CheckResult) and 0.0 <= r.score <= 1.0
    if r.score < 1.0:
        assert r.feedback
    return r


def test_every_type_registers_and_builds(build):
    specs = [
        {"type": "equals", "value": "x"}, {"type": "contains", "value": "x"}, {"type": "icontains", "value": "x"},
        {"type": "not_contains", "value": "x"}, {"type": "regex", "pattern": "x"},
        {"type": "starts_with", "value": "x"}, {"type": "ends_with", "value": "x"}, {"type": "is_json"},
        {"type": "json_schema", "schema": {"type": "object"}}, {"type": "max_words", "value": 3},
        {"type": "min_words", "value": 3}, {"type": "max_chars", "value": 3}, {"type": "min_chars", "value": 3},
        {"type": "refusal"}, {"type": "not_refusal"},
        {"type": "python", "function": "promptlearn.checks.assertions:is_refusal"},
    ]
    for spec in specs:
        check = build(**spec)
        assert check.needs_model is False
        assert check.name
        assert isinstance(check.score("", CTX), CheckResult)
    assert build(type="starts_with", value="Ahoy", name="pirate").name == "pirate"
    assert build(type="starts_with", value="Ahoy").name == "starts_with(Ahoy)"


def test_factories_work_without_build_check():
    check = A.text_match(kind="starts_with", value="Ahoy")
    assert check.name == "starts_with(Ahoy)"
    assert score(check, "Ahoy there").passed


def test_equals(build):
    check = build(type="equals", value="Yes")
    assert score(check, "  Yes\n").passed
    r = score(check, "yes")
    assert r.score == 0 and r.feedback == "expected exactly 'Yes', got 'yes'"
    assert score(build(type="equals", value="Yes", ignore_case=True), "yes").passed
    assert not score(build(type="equals", value="Yes", strip=False), "Yes ").passed
    assert score(build(type="equals", value=42), "42").passed
    assert score(build(type="equals", value=""), "  ").passed
    assert score(build(type="equals", values=["Yes", "No"]), "No").passed
    assert score(build(type="equals", value="Yes", skip_punctuation=True), "**Yes.**").passed


def test_contains_any_all_and_case(build):
    any_ = build(type="contains", values=["arr", "matey"])
    assert score(any_, "arr, hello").passed
    r = score(any_, "hello")
    assert r.score == 0 and r.feedback == "reply contains none of 'arr', 'matey'"
    all_ = build(type="contains", values=["arr", "matey", "ship"], mode="all")
    r = score(all_, "arr matey")
    assert r.score == pytest.approx(2 / 3) and "lacks 'ship'" in r.feedback
    assert score(build(type="contains", value="Arr"), "arr").score == 0
    assert score(build(type="contains", value="Arr", ignore_case=True), "ARR").passed
    assert score(build(type="icontains", value="Arr"), "ARR!").passed
    assert score(build(type="contains", value="Arr"), "no").feedback == "reply lacks 'Arr'"


def test_not_contains(build):
    check = build(type="not_contains", values=["password", "secret"])
    assert score(check, "all good").passed
    r = score(check, "the password is hunter2")
    assert r.score == 0 and r.feedback == "reply contains forbidden 'password'"
    assert score(build(type="not_contains", value="PASSWORD", ignore_case=True), "password").score == 0
    both = build(type="not_contains", values=["a1", "b2"], mode="all")  # fails only if all appear
    assert score(both, "a1 only").passed
    assert score(both, "a1 and b2").score == 0


def test_regex(build):
    assert score(build(type="regex", pattern=r"\d{3}"), "code 123").passed
    r = score(build(type="regex", pattern=r"\d{3}"), "no digits")
    assert r.score == 0 and r.feedback == r"reply does not match /\d{3}/"
    assert score(build(type="regex", pattern="^ahoy", flags=["IGNORECASE", "multiline"]), "x\nAHOY").passed
    assert not score(build(type="regex", pattern="a.b"), "a\nb").passed
    assert score(build(type="regex", pattern="a.b", flags=["DOTALL"]), "a\nb").passed
    assert not score(build(type="regex", pattern=r"\d+", match="fullmatch"), "12a").passed
    assert score(build(type="regex", pattern=r"\d+", match="match"), "12a").passed
    r = score(build(type="regex", pattern=r"\bTODO\b", negate=True), "fix TODO later")
    assert r.score == 0 and "must not match" in r.feedback and "'TODO'" in r.feedback


def test_starts_and_ends_with(build):
    check = build(type="starts_with", value="Ahoy")
    assert score(check, "  Ahoy, matey!").passed
    r = score(check, "Sure, here is your answer")
    assert r.feedback == "expected to start with 'Ahoy', starts with 'Sure, here'"
    assert score(build(type="starts_with", values=["Ahoy", "Arr"]), "Arr!").passed
    assert not score(check, "ahoy").passed
    assert score(build(type="starts_with", value="Ahoy", ignore_case=True), "ahoy").passed
    assert not score(build(type="starts_with", value="Ahoy", strip=False), " Ahoy").passed
    assert not score(check, "**Ahoy**").passed
    assert score(build(type="starts_with", value="Ahoy", skip_punctuation=True), "**Ahoy** matey").passed
    assert score(check, "").feedback == "expected to start with 'Ahoy', reply is empty"
    end = build(type="ends_with", value="Arr!")
    assert score(end, "Goodbye. Arr!\n").passed
    r = score(end, "See you tomorrow.")
    assert r.feedback == "expected to end with 'Arr!', ends with 'you tomorrow.'"
    assert score(build(type="ends_with", value="Arr", skip_punctuation=True), "Bye, Arr!!").passed


def test_json_checks(build):
    check = build(type="is_json")
    assert score(check, '{"a": 1}').passed
    assert score(check, '```json\n{"a": 1}\n```').passed
    assert score(check, '```\n[1, 2]\n```\n').passed
    assert not score(check, 'Here you go:\n```json\n{"a": 1}\n```').passed
    assert not score(build(type="is_json", allow_fence=False), '```json\n{"a": 1}\n```').passed
    r = score(check, "{'a': 1}")
    assert r.score == 0 and r.feedback.startswith("reply is not valid JSON")

    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    sc = build(type="json_schema", schema=schema)
    assert score(sc, '{"answer": "42"}').passed
    r = score(sc, '{"answer": 42}')
    assert r.score == 0 and "at $.answer" in r.feedback and "is not of type 'string'" in r.feedback
    assert "'answer' is a required property" in score(sc, "{}").feedback
    assert score(sc, "nope").feedback.startswith("reply is not valid JSON")


def test_lengths(build):
    r = score(build(type="max_words", value=120), "word " * 143)
    assert r.feedback == "reply has 143 words, limit is 120"
    assert score(build(type="max_words", value=3), "one two three").passed
    assert score(build(type="min_words", value=3), "one two").feedback == "reply has 2 words, minimum is 3"
    assert score(build(type="max_chars", value=5), "  12345 \n").passed
    assert score(build(type="max_chars", value=4), "12345").feedback == "reply has 5 characters, limit is 4"
    assert not score(build(type="min_chars", value=10), "short").passed


@pytest.mark.parametrize("text", [
    "I can't help with that.", "I cannot do that.", "I’m sorry, but I can’t share that.",
    "I am unable to provide legal advice.", "As an AI, I don't have opinions.", "I won't write that.",
    "**I'm not able to** assist here.", "Thanks for asking! Unfortunately I cannot assist with that request.",
    "Here is some context first. " * 20 + "Sadly I can't help with that.",
])
def test_is_refusal_positive(text):
    assert A.is_refusal(text)


@pytest.mark.parametrize("text", [
    "Sure! Here is the recipe.", "I can't wait to help you plan the trip!", "Ahoy matey, the cannon is ready.",
    "", "Step 1. " * 60 + "Note: I won't be around later.",
])
def test_is_refusal_negative(text):
    assert not A.is_refusal(text)


def test_refusal_checks(build):
    assert score(build(type="refusal"), "I'm sorry, but I can't do that.").passed
    r = score(build(type="refusal"), "Sure, here is how to do it.")
    assert r.feedback.startswith("expected a refusal, reply complies: 'Sure, here")
    r = score(build(type="not_refusal"), "I cannot share the password.")
    assert r.score == 0 and r.feedback.startswith("reply refuses ('i cannot')")


def _write_module(tmp_path, name="mychecks"):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from promptlearn.types import CheckResult

        def is_loud(reply, ctx):
            return reply.isupper()

        def half(reply, ctx):
            return 0.5

        def with_feedback(reply, ctx):
            return (0.0, "too quiet") if not reply.isupper() else (1.0, "")

        def result(reply, ctx):
            return CheckResult(0.25, "quarter", details={"k": 1})

        def boom(reply, ctx):
            raise RuntimeError("kaboom")

        def nothing(reply, ctx):
            return None

        def uses_ctx(reply, ctx):
            return ctx.user in reply
    """))


def test_python_module_function(build, tmp_path, monkeypatch):
    _write_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert score(build(type="python", function="mychecks:is_loud"), "ARR").passed
    r = score(build(type="python", function="mychecks:is_loud"), "arr")
    assert r.score == 0 and r.feedback == "check function 'mychecks:is_loud' failed (score 0)"
    assert score(build(type="python", function="mychecks:half"), "x").score == 0.5
    assert score(build(type="python", function="mychecks:with_feedback"), "x").feedback == "too quiet"
    r = score(build(type="python", function="mychecks:result"), "x")
    assert (r.score, r.feedback, dict(r.details)) == (0.25, "quarter", {"k": 1})
    r = score(build(type="python", function="mychecks:boom"), "x")
    assert r.score == 0 and "raised RuntimeError: kaboom" in r.feedback
    r = score(build(type="python", function="mychecks:nothing"), "x")
    assert r.score == 0 and "returned None" in r.feedback
    assert score(build(type="python", function="mychecks:uses_ctx"), "hi there").passed


def test_python_file_path_and_cwd_module(build, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    _write_module(tmp_path / "sub", "filechecks")
    _write_module(tmp_path, "cwdchecks")
    monkeypatch.chdir(tmp_path)
    assert score(build(type="python", function="sub/filechecks.py:is_loud"), "ARR").passed
    assert score(build(type="python", function="cwdchecks:is_loud"), "ARR").passed  # not on sys.path
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    check = build(type="python", function="filechecks.py:half", base_dir=str(tmp_path / "sub"))
    assert score(check, "x").score == 0.5
    _write_module(tmp_path, "basedirchecks")  # module form, found via base_dir though cwd is elsewhere
    assert score(build(type="python", function="basedirchecks:half", base_dir=str(tmp_path)), "x").score == 0.5


def test_python_import_errors(build, tmp_path, monkeypatch):
    _write_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="cannot import module 'no_such_mod'"):
        build(type="python", function="no_such_mod:f")
    with pytest.raises(ValueError, match="module 'mychecks' has no function 'missing'"):
        build(type="python", function="mychecks:missing")
    with pytest.raises(ValueError, match="'module:function'"):
        build(type="python", function="mychecks.is_loud")
    with pytest.raises(ValueError, match="file 'nope.py'"):
        build(type="python", function="nope.py:f")
    (tmp_path / "broken.py").write_text("import not_a_real_dependency_xyz\n")
    with pytest.raises(ValueError, match="cannot import module 'broken'.*not_a_real_dependency_xyz"):
        build(type="python", function="broken:f")


def test_function_check_from_code():
    one_arg = A.FunctionCheck(lambda reply: "arr" in reply, name="says_arr")
    assert one_arg.name == "says_arr" and one_arg.needs_model is False
    assert score(one_arg, "arr").passed and not score(one_arg, "hello").passed

    def polite(reply, ctx):
        return ("please" in reply, "say please")

    check = A.FunctionCheck(polite)
    assert check.name == "polite"
    assert score(check, "no").feedback == "say please"
    assert score(A.FunctionCheck(lambda r, c: 1 / 0), "x").feedback.endswith("ZeroDivisionError: division by zero")
    assert score(A.FunctionCheck(lambda r, c: 1.5), "x").score == 0
    with pytest.raises(TypeError):
        A.FunctionCheck("not callable")


@pytest.mark.parametrize("spec, message", [
    ({"type": "starts_with"}, "starts_with needs 'value' (a string) or 'values'"),
    ({"type": "contains", "value": "a", "values": ["b"]}, "give 'value' or 'values', not both"),
    ({"type": "contains", "values": "abc"}, "contains needs 'value' (a string) or 'values'"),
    ({"type": "contains", "value": "a", "mode": "some"}, "'mode' must be one of any, all"),
    ({"type": "contains", "value": ""}, "empty strings"),
    ({"type": "equals"}, "equals needs 'value' (a string) or 'values'"),
    ({"type": "regex"}, "regex needs 'pattern'"),
    ({"type": "regex", "pattern": "("}, "does not compile"),
    ({"type": "regex", "pattern": "a", "flags": ["LOUD"]}, "unknown flag 'LOUD'"),
    ({"type": "regex", "pattern": "a", "match": "find"}, "'match' must be one of"),
    ({"type": "max_words", "value": "ten"}, "max_words needs 'value' (a whole number >= 0)"),
    ({"type": "min_chars", "value": -1}, "min_chars needs 'value'"),
    ({"type": "json_schema"}, "json_schema needs 'schema'"),
    ({"type": "is_json", "schema": {}}, "is_json takes no 'schema'"),
    ({"type": "json_schema", "schema": {"type": "nonsense"}}, "not a valid JSON Schema"),
    ({"type": "python"}, "python needs 'function'"),
    ({"type": "starts_with", "valeu": "x"}, "starts_with: unknown param 'valeu' (did you mean 'value'?)"),
    ({"type": "icontains", "value": "x", "ignore_case": True}, "icontains: unknown param 'ignore_case'"),
    ({"type": "equals", "value": "x", "strip": "yes"}, "equals: 'strip' must be true or false"),
    ({"type": "regex", "pattern": "a", "flags": 2}, "'flags' must be a list"),
])
def test_bad_params_raise_spec_errors(build, spec, message):
    # CheckSpecError is a ValueError; build_check passes it on unchanged and the message names param and fix.
    with pytest.raises(CheckSpecError) as e:
        build(**spec)
    assert message in str(e.value)
    with pytest.raises(ValueError) as e:  # the same from the bare factory
        base._REGISTRY[spec["type"]](kind=spec["type"], **{k: v for k, v in spec.items() if k != "type"})
    assert message in str(e.value)
