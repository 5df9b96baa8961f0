import pytest

from interpreter.actor_api import Subject
from interpreter.definitions import StepDef
from interpreter.templates import TemplateRenderError, build_context, render, template_problems

STEP = StepDef(workflow_id=1, number=3, name="grade", kind="actor", actor="m", template="t")


def ctx(row=None, outputs=None):
    return build_context(Subject("42", row or {"title": "Dev", "body": "x"}, outputs or {}), STEP)


def test_context_has_columns_subject_out_and_step():
    c = ctx({"title": "Dev"}, {"1": {"city": "Berlin"}, "2": None})
    assert c["title"] == "Dev" and c["subject"]["title"] == "Dev"
    assert c["out"] == {1: {"city": "Berlin"}, 2: None}
    assert c["step"] == {"number": 3, "name": "grade", "visit": 1}
    assert render("{{ title }} in {{ out[1].city }} at {{ step.name }}", c) == \
        "Dev in Berlin at grade"


def test_step_visit_says_which_pass_through_the_step_the_subject_is_on():
    subject = Subject("42", {"title": "Dev"}, {"3": {"score": 2}}, attempt=2, visit_of_step=3)
    c = build_context(subject, STEP)
    assert render("pass {{ step.visit }} of {{ step.name }}, last score {{ out[3].score }}",
                  c) == "pass 3 of grade, last score 2"
    assert template_problems("{% if step.visit > 1 %}again{% endif %}", {"title"}, {}) == []


def test_subject_text_is_data_not_template():
    evil = "{{ 7*7 }} {% for x in range(3) %}{{ x }}{% endfor %} {{ ''.__class__ }}"
    out = render("Posting: {{ body }}", ctx({"body": evil}))
    assert out == "Posting: " + evil
    assert "49" not in out


def test_no_autoescape():
    assert render("{{ body }}", ctx({"body": "<b>&</b>"})) == "<b>&</b>"


def test_missing_variable_is_a_clear_error():
    with pytest.raises(TemplateRenderError, match="salary"):
        render("{{ salary }}", ctx())
    with pytest.raises(TemplateRenderError):
        render("{{ out[2].city }}", ctx())


def test_sandbox_blocks_unsafe_access():
    with pytest.raises(TemplateRenderError, match="Security|unsafe"):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", ctx())


def test_syntax_error_is_reported():
    with pytest.raises(TemplateRenderError, match="syntax error"):
        render("{% for %}", ctx())


def test_template_problems():
    schemas = {1: {"type": "object", "properties": {"city": {"type": "string"}}}, 2: None}
    body = ("{{ title }} {{ salary }} {{ subject.bogus }} {{ out[1].city }} {{ out[1].zip }} "
            "{{ out[2].anything }} {{ out[5] }} {% for x in range(2) %}{{ x }}{% endfor %}"
            "{% set y = 1 %}{{ y }} {{ step.number }}")
    problems = template_problems(body, {"title", "body"}, schemas)
    text = "\n".join(problems)
    assert "'salary'" in text
    assert "bogus" in text
    assert "out[1].zip" in text
    assert "out[5]" in text
    assert "city" not in text.replace("it has: city", "")
    assert "anything" not in text
    assert len(problems) == 4, problems


def test_template_problems_clean_and_syntax():
    assert template_problems("{{ title }} {{ out[1]['city'] }}", {"title"},
                             {1: {"properties": {"city": {}}}}) == []
    assert "syntax error" in template_problems("{{ title ", {"title"}, {})[0]


def test_dict_methods_on_outputs_are_not_fields():
    from interpreter.templates import template_problems

    schema = {"type": "object", "properties": {"reason": {"type": "string"}}}
    body = "{{ out[4].get('reason', 'none') }} {{ out[4].items() | list }} {{ out[4].nope }}"
    problems = template_problems(body, {"title"}, {4: schema})
    assert len(problems) == 1 and "nope" in problems[0]
