"""Sample and hostile postings written to a real PostgreSQL through COPY."""

from __future__ import annotations

from actors.sample_postings import TEXT_COLUMNS, clean_text, generate_postings, insert_postings
from tests.hostile import hostile_postings, insert_hostile


def test_insert_500_then_again_is_a_noop(db, conn):
    assert insert_postings(db, count=500, seed=42) == 500
    assert insert_postings(db, count=500, seed=42) == 0
    assert insert_postings(db, count=10, seed=42, start_id=495) == 4  # 501..504 are new
    row = conn.execute("SELECT count(*) AS n, count(*) FILTER (WHERE NOT enabled) AS off, "
                       "count(extracted_summary) AS summ, min(posting_id) AS lo, "
                       "max(posting_id) AS hi FROM public.postings").fetchone()
    assert row["n"] == 504 and row["lo"] == 1 and row["hi"] == 504
    assert 0 < row["off"] < 60 and 60 < row["summ"] < 150
    expected = generate_postings(500, seed=42)
    got = {r["posting_id"]: r for r in conn.execute(
        "SELECT * FROM public.postings WHERE posting_id <= 500")}
    for p in expected:
        r = got[p["posting_id"]]
        for col in ("title", "company", "location", "remote_policy", "description",
                    "salary_min", "salary_max", "currency", "times_reposted", "enabled",
                    "extracted_summary", "posted_at"):
            assert r[col] == p[col], (p["posting_id"], col)
        assert r["source"] == "sample" and r["skills"] is None


def test_zero_count_writes_nothing(db, conn):
    assert insert_postings(db, count=0) == 0
    assert conn.execute("SELECT count(*) AS n FROM public.postings").fetchone()["n"] == 0


def test_hostile_corpus_round_trips_cleaned(db, conn):
    rows = hostile_postings(start_id=900000)
    assert insert_hostile(db) == len(rows) >= 50
    assert insert_hostile(db) == 0
    got = {r["posting_id"]: r for r in conn.execute(
        "SELECT * FROM public.postings WHERE posting_id >= 900000")}
    assert len(got) == len(rows)
    for p in rows:
        r = got[p["posting_id"]]
        for col, value in p.items():
            if col.startswith("_"):
                continue
            want = clean_text(value) if col in TEXT_COLUMNS else value
            assert r[col] == want, (p["_why"], col)
    # The injection payloads were stored, not executed.
    names = {r["table_name"] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema IN ('public', 'interp')")}
    assert {"postings", "workflows", "checkpoints"} <= names
