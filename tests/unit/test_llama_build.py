"""The AMX guard: which builds load with llama.cpp's extra buffer types, and the override."""

from __future__ import annotations

import pytest

from interpreter.llm import llama_build
from interpreter.llm.backend import GenerationRequest
from interpreter.llm.llama_build import EXTRA_BUFFERS_ENV, build_features, extra_buffers_choice


def test_build_features_are_read_from_llama_cpp_system_info():
    features = build_features()
    # Every build reports its CPU backend's features; none reports a feature as "0" here.
    assert features, "llama_print_system_info reported no feature at all"
    assert all("=" not in f and f == f.strip() for f in features)


def test_a_build_with_amx_kernels_loads_without_extra_buffers(monkeypatch):
    monkeypatch.delenv(EXTRA_BUFFERS_ENV, raising=False)
    monkeypatch.setattr(llama_build, "build_features", lambda: {"AVX2", "AMX_INT8"})
    choice = extra_buffers_choice()
    assert choice.on is False and "AMX" in choice.chosen_by


def test_a_build_without_amx_keeps_llama_cpp_default(monkeypatch):
    monkeypatch.delenv(EXTRA_BUFFERS_ENV, raising=False)
    monkeypatch.setattr(llama_build, "build_features", lambda: {"AVX2", "AVX512"})
    assert extra_buffers_choice().on is True


@pytest.mark.parametrize("value,on", [("0", False), ("1", True)])
def test_the_environment_forces_the_choice(monkeypatch, value, on):
    monkeypatch.setenv(EXTRA_BUFFERS_ENV, value)
    monkeypatch.setattr(llama_build, "build_features", lambda: {"AMX_INT8"})
    choice = extra_buffers_choice()
    assert choice.on is on and EXTRA_BUFFERS_ENV in choice.chosen_by


def test_a_model_loaded_without_extra_buffers_generates_and_says_so(monkeypatch, smollm2):
    from interpreter.definitions import ModelDef
    from interpreter.llm.llama_backend import LlamaBackend

    monkeypatch.setenv(EXTRA_BUFFERS_ENV, "0")
    backend = LlamaBackend(ModelDef(name="s", source=str(smollm2), n_ctx=512))
    try:
        gen = backend.generate(GenerationRequest(
            "Say hello.", schema=None, sampling={"temperature": 0.0}, seed=1, max_tokens=4,
            deadline=None))
        assert gen.completion_tokens > 0
        report = backend.describe()
        assert report["extra_buffers"] is False
        assert EXTRA_BUFFERS_ENV in report["extra_buffers_chosen_by"]
    finally:
        backend.close()
    # The swap of llama-cpp-python's defaults is undone after the load.
    import llama_cpp.llama_cpp as lc
    assert lc.llama_model_default_params().use_extra_bufts is True


def test_json_grammars_use_llama_cpp_string_rule_without_control_characters():
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from interpreter.llm.llama_backend import JSON_STRING_CHAR_RULE, json_string_chars

    raw = json_schema_to_gbnf(json.dumps({"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 5}}}))
    fixed = json_string_chars(raw)
    char_rules = [line for line in fixed.splitlines() if line.startswith("char ::=")]
    assert char_rules == [JSON_STRING_CHAR_RULE]
    assert r"\x00-\x1F" in JSON_STRING_CHAR_RULE
    # Everything else is the converter's own.
    assert [x for x in raw.splitlines() if not x.startswith("char ::=")] == \
        [x for x in fixed.splitlines() if not x.startswith("char ::=")]
