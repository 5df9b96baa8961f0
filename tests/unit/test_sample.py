"""Sample and hostile postings: determinism, variety, shares, cleaning (no database)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from actors.sample_postings import (
    HUGE_DESCRIPTION_CHARS,
    TEXT_COLUMNS,
    clean_row,
    clean_text,
    generate_postings,
    iter_postings,
    make_posting,
)
from tests.hostile import hostile_postings

N = 5000


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return generate_postings(N, seed=42)


def test_deterministic_for_a_seed(sample):
    again = generate_postings(200, seed=42)
    assert again == sample[:200]
    other = generate_postings(200, seed=43)
    changed = [a["description"] != b["description"] for a, b in zip(again, other, strict=True)]
    assert sum(changed) > 190


def test_content_of_an_id_does_not_depend_on_count_or_start(sample):
    assert generate_postings(1, seed=42, start_id=137)[0] == sample[136]
    assert next(iter_postings(5, seed=42, start_id=4000)) == make_posting(4000, 42)
    ids = [p["posting_id"] for p in generate_postings(10, start_id=77)]
    assert ids == list(range(77, 87))


def test_variety(sample):
    assert len({p["title"] for p in sample}) > 300
    assert len({p["company"] for p in sample}) > 500
    assert len({p["location"] for p in sample}) > 40
    assert len({p["currency"] for p in sample}) > 10
    assert len({p["seniority"] for p in sample}) >= 8
    assert len({p["description"] for p in sample}) > N * 0.97
    policies = Counter(p["remote_policy"] for p in sample)
    assert set(policies) == {"onsite", "hybrid", "remote"}
    assert min(policies.values()) > N * 0.1
    normal = [p for p in sample if p["_edge"] is None]
    assert all(p["description"].count("\n\n") >= 5 for p in normal)  # multi-paragraph
    with_salary = [p for p in sample if p["salary_min"] is not None]
    assert 0.75 < len(with_salary) / N < 0.95
    assert all(0 < p["salary_min"] < p["salary_max"] and p["currency"] for p in with_salary)
    reposted = Counter(p["times_reposted"] for p in sample)
    assert reposted[0] > N * 0.75 and set(reposted) <= set(range(6)) and len(reposted) == 6
    assert len({p["posted_at"].date() for p in sample}) > 300


def test_shares_of_summaries_disabled_and_edges(sample):
    summaries = [p["extracted_summary"] for p in sample if p["extracted_summary"] is not None]
    assert 0.17 < len(summaries) / N < 0.23
    assert all(len(s) > 50 for s in summaries)
    assert all(p["summary_saved_at"] is not None for p in sample if p["extracted_summary"])
    disabled = sum(not p["enabled"] for p in sample)
    assert 0.035 < disabled / N < 0.065
    edges = Counter(p["_edge"] for p in sample if p["_edge"])
    assert 0.012 < sum(edges.values()) / N < 0.03
    assert set(edges) == {"empty", "huge", "unicode", "html", "sql", "jinja", "shell"}


def test_edge_cases_look_like_what_they_claim(sample):
    by_kind: dict[str, list[dict]] = {}
    for p in sample:
        if p["_edge"]:
            by_kind.setdefault(p["_edge"], []).append(p)
    assert all(p["description"] == "" for p in by_kind["empty"])
    assert all(len(p["description"]) == HUGE_DESCRIPTION_CHARS for p in by_kind["huge"])
    assert all(any(ord(c) > 0x24F for c in p["title"]) for p in by_kind["unicode"])
    text = "".join(p["description"] for p in by_kind["unicode"])
    for script in ("[\u4e00-\u9fff]", "[\u0600-\u06ff]", "[\u0400-\u04ff]"):  # CJK Arab Cyr
        assert re.search(script, text), script
    assert any(ord(c) > 0xFFFF for p in by_kind["unicode"] for c in p["description"])  # emoji
    assert all("<" in p["description"] and ">" in p["description"] for p in by_kind["html"])
    assert any("DROP TABLE postings" in p["description"] for p in by_kind["sql"])
    assert all("{{" in p["description"] or "{0." in p["description"] for p in by_kind["jinja"])
    assert all("$(" in p["description"] or "`" in p["description"] for p in by_kind["shell"])


def test_clean_text():
    assert clean_text(None) is None
    assert clean_text("plain") == "plain"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text(b"caf\xc3\xa9 \xff") == "café \ufffd"
    assert clean_text(b"ok\x00") == "ok\ufffd"
    escaped = b"x\xffy".decode("utf-8", errors="surrogateescape")
    assert clean_text(escaped) == "x\ufffdy"
    assert "\ufffd" in clean_text("lone \ud800 surrogate")
    keep = "日本 🚀 \u202e\u200b\t\n"
    assert clean_text(keep) == keep


def test_nothing_unstorable_after_cleaning(sample):
    for p in sample[:500] + hostile_postings():
        for col, value in clean_row(p).items():
            if col in TEXT_COLUMNS and value is not None:
                assert isinstance(value, str)
                assert "\x00" not in value, (p.get("_why"), col)
                value.encode("utf-8")  # no lone surrogates left


def test_hostile_corpus_covers_issue_7():
    rows = hostile_postings(start_id=900000)
    assert len(rows) >= 50
    assert [r["posting_id"] for r in rows] == list(range(900000, 900000 + len(rows)))
    assert len({r["_why"] for r in rows}) == len(rows)
    assert all(r["remote_policy"] in ("onsite", "hybrid", "remote") for r in rows)

    def anywhere(needle: str) -> bool:
        return any(isinstance(v, str) and needle in v for r in rows for v in r.values())

    for needle in ["DROP TABLE", "{{ ''.__class__.__mro__ }}", "{0.__class__}", "%s%s",
                   "$(rm -rf /)", "`reboot`", "\u202e", "\u200b",
                   "</script><script>alert(1)</script>", '{"']:
        assert anywhere(needle), needle
    for field in ("title", "company", "location", "description", "seniority"):
        assert any(isinstance(r[field], str) and ("DROP" in r[field] or "' OR '" in r[field])
                   for r in rows), field
    assert any(r.get("_has_nul") for r in rows)
    assert all(any("\x00" in v for v in r.values() if isinstance(v, str))
               for r in rows if r.get("_has_nul"))
    assert any(r.get("_invalid_utf8") for r in rows)
    assert any(isinstance(v, bytes) for r in rows for v in r.values())
    assert any(isinstance(v, str) and len(v) >= 1024 * 1024 for r in rows for v in r.values())
    assert any(len(r["title"]) >= 10000 for r in rows)
