"""The jump-forward recognizer (`interpreter.llm.forced`) on the grammars that
llama-cpp-python's converter writes for many schemas: the text it says is forced
is always a prefix of every valid continuation, the answer ends only where the
grammar does, and the canonical layout forces keys and separators."""

from __future__ import annotations

import json
import random
import re
import string

import pytest

from interpreter.llm.forced import Recognizer
from interpreter.llm.gbnf import Grammar, canonical_whitespace
from interpreter.llm.llama_backend import json_string_chars

llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")

JOB = {"type": "object", "additionalProperties": False,
       "required": ["title", "remote", "seniority"],
       "properties": {"title": {"type": "string", "maxLength": 60},
                      "remote": {"type": "boolean"},
                      "seniority": {"type": "string", "enum": ["junior", "mid", "senior"]}}}
NESTED = {"type": "object", "required": ["team", "size"],
          "properties": {
              "team": {"type": "array", "minItems": 1, "maxItems": 3,
                       "items": {"type": "object", "required": ["name", "role"],
                                 "properties": {
                                     "name": {"type": "string", "maxLength": 12},
                                     "role": {"enum": ["lead", "dev", "devops", "design"]},
                                     "skills": {"type": "array",
                                                "items": {"type": "string"}}}}},
              "size": {"type": "integer"},
              "ratio": {"type": "number"},
              "note": {"type": ["string", "null"]}}}
SCHEMAS = {
    "job": JOB,
    "nested": NESTED,
    "optional_only": {"type": "object",
                      "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"},
                                     "c": {"type": "string"}}},
    "const_and_enum": {"type": "object", "required": ["kind", "level", "tags"],
                       "properties": {"kind": {"const": "posting"},
                                      "level": {"enum": ["low", "lower", "lowest", 3, None]},
                                      "tags": {"type": "array", "maxItems": 4,
                                               "items": {"enum": ["a", "ab", "abc"]}}}},
    "any_of": {"type": "object", "required": ["v"],
               "properties": {"v": {"anyOf": [{"type": "integer"},
                                              {"type": "string", "maxLength": 5},
                                              {"type": "array", "items": {"type": "boolean"}}]}}},
    "strings": {"type": "object", "required": ["s", "d"],
                "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 8},
                               "d": {"type": "string", "format": "date"},
                               "p": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"}}},
    "free_object": {"type": "object", "required": ["meta"],
                    "properties": {"meta": {"type": "object"}}},
    "top_array": {"type": "array", "minItems": 2, "maxItems": 2,
                  "items": {"type": "object", "required": ["x"],
                            "properties": {"x": {"type": "integer"}}}},
    "space_named": {"type": "object", "required": ["space", "b"],
                    "properties": {"space": {"enum": ["x y", "z"]}, "b": {"type": "integer"}}},
}


def grammar_of(schema: dict) -> str:
    return canonical_whitespace(json_string_chars(
        llama_grammar.json_schema_to_gbnf(json.dumps(schema))))


# ---------------------------------------------------------------- instances

TEXT = string.ascii_letters + string.digits + ' .,:;-_/"\\\n\té€😀{}[]'


def instance(schema: dict, rng: random.Random, depth: int = 0):
    """A random value valid for the schema (the subset the converter handles here)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema:
        return instance(rng.choice(schema["anyOf"]), rng, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        return instance({**schema, "type": rng.choice(kind)}, rng, depth)
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if props is None:    # a free object
            return {rng.choice(["k", "key", "x y"]): instance({"type": "integer"}, rng)
                    for _ in range(rng.randint(0, 2))}
        out = {}
        for name, sub in props.items():
            if name in schema.get("required", []) or rng.random() < 0.5:
                out[name] = instance(sub, rng, depth + 1)
        return out
    if kind == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", lo_hi_default(depth))
        return [instance(schema["items"], rng, depth + 1) for _ in range(rng.randint(lo, hi))]
    if kind == "string":
        if schema.get("format") == "date":
            return f"{rng.randint(1000, 2999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if "pattern" in schema:
            return "".join(rng.choice(string.ascii_uppercase) for _ in range(2)) \
                + "-" + str(rng.randint(0, 999))
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 12)
        # The grammar counts an escape as one character: an emoji written as two
        # \u escapes (ensure_ascii) is two, so bounded strings have none.
        chars = TEXT.replace("😀", "") if "maxLength" in schema else TEXT
        return "".join(rng.choice(chars) for _ in range(rng.randint(lo, hi)))
    if kind == "integer":
        return rng.choice([0, 7, -3, 12345, -900])
    if kind == "number":
        return rng.choice([0, 1.5, -2.25, 3e21, 1234.5678, 7])
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise AssertionError(f"no instance for {schema}")


def lo_hi_default(depth: int) -> int:
    return 3 if depth < 3 else 1


def canonical(value, schema: dict, rng: random.Random) -> str:
    """json.dumps' layout, the members in the grammar's order (required first, each
    group in the schema's order); strings with or without ASCII escapes."""
    ordered = order(value, schema)
    return json.dumps(ordered, ensure_ascii=rng.random() < 0.5)


def order(value, schema: dict):
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        required = [k for k in props if k in schema.get("required", [])]
        rest = [k for k in props if k not in required]
        return {k: order(value[k], props[k]) for k in [*required, *rest] if k in value}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [order(v, schema["items"]) for v in value]
    if "anyOf" in schema and isinstance(value, list):
        return [order(v, {"type": "boolean"}) for v in value]
    return value


# ---------------------------------------------------------------- the property

def walk(grammar: Grammar, text: str) -> list[str]:
    """Follows text character by character; asserts that what is forced at each
    point is how the text goes on, and that the text may end only at its end.
    Returns the forced texts seen (non-empty ones)."""
    rec = Recognizer(grammar)
    seen = []
    for i in range(len(text) + 1):
        forced, _ = rec.forced()
        rest = text[i:]
        assert rest.startswith(forced), (text, i, forced)
        if forced:
            seen.append(forced)
        if i == len(text):
            break
        assert not rec.must_end(), (text, i)
        rec.accept_text(text[i])
        assert not rec.lost, f"{text!r} left the grammar at {i}: {text[:i + 1]!r}"
    assert 0 in rec.stacks, f"{text!r} is incomplete for the grammar"
    return seen


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_forced_text_is_a_prefix_of_every_valid_answer(name):
    schema = SCHEMAS[name]
    grammar = Grammar(grammar_of(schema))
    rng = random.Random(name)
    for _ in range(60):
        walk(grammar, canonical(instance(schema, rng), schema, rng))


def test_the_bytes_of_tokens_are_followed_across_split_characters():
    grammar = Grammar(grammar_of(JOB))
    text = '{"title": "Café 😀 \\"chef\\"", "remote": false, "seniority": "mid"}'
    data = text.encode()
    rec = Recognizer(grammar)
    for i in range(0, len(data), 3):     # pieces that cut multi-byte characters
        rec.accept_bytes(data[i:i + 3])
        if rec.mid_character:
            assert rec.forced()[0] == ""
    assert rec.must_end() and not rec.lost


def test_keys_separators_and_enum_tails_are_forced():
    rec = Recognizer(Grammar(grammar_of(JOB)))
    assert rec.forced()[0] == "{"            # then '"' or the model's optional space
    rec.accept_text('{"')
    assert rec.forced()[0] == 'title": "'
    rec.accept_text('title": "Nurse"')
    assert rec.forced()[0] == ""             # an optional space, or ","
    rec.accept_text(",")
    assert rec.forced()[0] == ' "remote": '
    rec.accept_text(' "remote": t')
    assert rec.forced()[0] == "rue"
    rec.accept_text('rue, "seniority": "s')
    assert rec.forced()[0] == 'enior"}'      # the answer ends at its brace
    rec.accept_text('enior"}')
    assert rec.must_end()


def test_a_shared_enum_prefix_is_forced_up_to_where_values_part():
    rec = Recognizer(Grammar(grammar_of(SCHEMAS["const_and_enum"])))
    assert rec.forced()[0] == "{"
    rec.accept_text('{"')
    assert rec.forced()[0] == 'kind": "posting", "level": '   # a const: no space after it
    rec.accept_text('kind": "posting", "level": "')
    assert rec.forced()[0] == "low"          # then "low", "lower" or "lowest"
    rec.accept_text('lowe')
    assert rec.forced()[0] == ""             # "lower" or "lowest"
    rec.accept_text('s')
    assert rec.forced()[0] == 't", "tags": ['   # an enum value: no space after it


def test_nothing_is_forced_where_an_optional_member_or_the_end_may_come():
    rec = Recognizer(Grammar(grammar_of(NESTED)))
    rec.accept_text('{"team": [{"name": "Ann", "role": "lead"')
    assert rec.forced()[0] == ""             # ", " (skills) or "}"
    rec.accept_text('}], "size": 3')
    assert rec.forced()[0] == ""             # more digits, ", " or "}"
    rec.accept_text('}')
    assert rec.must_end()
    opt = Recognizer(Grammar(grammar_of(SCHEMAS["optional_only"])))
    assert opt.forced()[0] == "{"


def test_other_layouts_leave_the_canonical_grammar():
    for text in ['{"title":"x"', '{"title" : "x"', '{"title": "x",  "', '{"title": "x",\n',
                 '{\n"title"', '{"title": "x", "remote": true, "seniority": "mid"} ']:
        rec = Recognizer(Grammar(grammar_of(JOB)))
        rec.accept_text(text)
        assert rec.lost, text


def test_the_models_own_optional_spaces_stay_in_the_canonical_grammar():
    for text in ['{ "title": "x"', '{"title": "x" ,', '{"title": "x" , "remote": true',
                 '{"title": "x", "remote": true , "seniority": "mid"}']:
        rec = Recognizer(Grammar(grammar_of(JOB)))
        rec.accept_text(text)
        assert not rec.lost, text


def test_canonical_whitespace_fixes_the_separators_only():
    gbnf = grammar_of(SCHEMAS["space_named"])
    assert re.search(r'^space ::= " "\?$', gbnf, re.MULTILINE)   # the converter's own
    # The property's value rule is named space0: kept, not emptied.
    assert 'space0 ::= "\\"x y\\"" | "\\"z\\""' in gbnf
    assert walk(Grammar(gbnf), '{"space": "x y", "b": 2}')[:2] == ["{", 'space": "']
    assert canonical_whitespace("root ::= [a-z]+") == "root ::= [a-z]+"


def test_llama_cpp_parses_the_canonical_grammars():
    from llama_cpp import LlamaGrammar

    for schema in SCHEMAS.values():
        assert LlamaGrammar.from_string(grammar_of(schema), verbose=False)


# ---------------------------------------------------------------- hostile grammars

def test_a_grammar_nested_deeper_than_python_turns_jumping_off():
    # The converter writes maxLength 800 as 800 nested groups; llama.cpp reads
    # them, the recognizer's parser recursed past Python's stack (RecursionError
    # out of TokenSampler, so the step failed). Now jumping is off for it.
    from interpreter.llm.gbnf import GrammarError
    from interpreter.llm.token_sampling import SamplerBuffers

    text = grammar_of({"type": "object", "required": ["s"],
                       "properties": {"s": {"type": "string", "maxLength": 800}}})
    with pytest.raises(GrammarError):
        Grammar(text)
    assert SamplerBuffers(8).grammar(text) is None


def test_full_stack_tables_stop_the_seam_check_instead_of_raising():
    # A grammar's stack tables are shared by every generation of the model and
    # capped (gbnf.MAX_NODES); once full, a recognizer stepping somewhere new is
    # lost. The seam check (allows_after) raised GrammarError out of the decode.
    grammar = Grammar(grammar_of({"type": "array", "maxItems": 400,
                                  "items": {"type": "string", "maxLength": 400}}))
    text = "[" + ", ".join(['"' + "z" * 300 + '"'] * 300)
    first = Recognizer(grammar)
    at = next(i for i, ch in enumerate(text) if first.accept_text(ch) or first.lost)
    second = Recognizer(grammar)
    second.accept_text(text[:at])
    assert not second.lost
    assert second.allows_after(second.stacks, ord(text[at])) is True
    assert second.lost


def test_a_model_starts_a_grammar_afresh_once_its_stack_tables_are_full():
    # The tables are shared by every generation of the model; once full, every
    # later generation that went somewhere new was lost, for the model's life.
    from interpreter.llm.gbnf import MAX_NODES
    from interpreter.llm.token_sampling import SamplerBuffers

    text = grammar_of({"type": "array", "maxItems": 400,
                       "items": {"type": "string", "maxLength": 400}})
    buffers = SamplerBuffers(8)
    full = buffers.grammar(text)
    assert full is not None
    answer = "[" + ", ".join(['"' + "z" * 300 + '"'] * 300)
    first = Recognizer(full)
    first.accept_text(answer)
    assert first.lost and len(full.nodes) >= MAX_NODES
    fresh = buffers.grammar(text)
    assert fresh is not None and fresh is not full and len(fresh.nodes) < MAX_NODES
    again = Recognizer(fresh)
    again.accept_text(answer[:5000])
    assert not again.lost
    assert buffers.grammar(text) is fresh
