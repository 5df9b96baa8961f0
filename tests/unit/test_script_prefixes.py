"""The script allowlist: which `module:function` targets a database row may name."""

from __future__ import annotations

from importlib import resources

import pytest

from interpreter.errors import DefinitionError
from interpreter.scripts import (
    DEFAULT_ALLOWED_PREFIXES,
    allowed_prefixes,
    check_target,
    module_allowed,
)


@pytest.mark.parametrize("prefix", ["actors", "actors."])
@pytest.mark.parametrize("module,allowed", [
    ("actors", True),
    ("actors.examples", True),
    ("actors.deep.er", True),
    ("actorsx", False),
    ("actorsx.y", False),
    ("actors_evil.x", False),
    ("my.actors.x", False),
    ("os", False),
])
def test_prefixes_match_whole_module_path_components(monkeypatch, prefix, module, allowed):
    monkeypatch.setenv("INTERP_SCRIPT_PREFIXES", prefix)
    assert module_allowed(module, allowed_prefixes()) is allowed


def test_dotted_prefix_matches_its_components_only():
    prefixes = ("mycompany.actors",)
    assert module_allowed("mycompany.actors.x", prefixes)
    assert module_allowed("mycompany.actors", prefixes)
    assert not module_allowed("mycompany.actorsx.y", prefixes)
    assert not module_allowed("mycompany", prefixes)


def test_several_prefixes_and_blanks(monkeypatch):
    monkeypatch.setenv("INTERP_SCRIPT_PREFIXES", " actors., ,mycompany.jobs ,")
    assert allowed_prefixes() == ("actors", "mycompany.jobs")


def test_refused_target_names_the_allowlist(monkeypatch):
    monkeypatch.setenv("INTERP_SCRIPT_PREFIXES", "actors")
    with pytest.raises(DefinitionError, match="outside the allowed module prefixes"):
        check_target("actorsx.y:run")
    assert check_target("actors.examples:count_words") == ("actors.examples", "count_words")


def test_default_allowlist_reaches_no_fault_injector(monkeypatch):
    monkeypatch.delenv("INTERP_SCRIPT_PREFIXES", raising=False)
    assert allowed_prefixes() == DEFAULT_ALLOWED_PREFIXES == ("actors",)
    for target in ("tests.actors.faults:out_of_memory", "tests.actors.chaos:exhaust_memory",
                   "noop_actor:noop"):
        with pytest.raises(DefinitionError, match="outside the allowed module prefixes"):
            check_target(target)
    # And the shipped package holds none of them (looked up as files: an editable
    # install's import hook could find another checkout's copy of a missing module).
    shipped = {f.name for f in resources.files("actors").iterdir()}
    assert not shipped & {"faults.py", "chaos.py", "bench_noop.py", "noop_actor.py"}
