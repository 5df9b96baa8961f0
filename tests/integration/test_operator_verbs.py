"""`interp retry`, `interp rewind` and `interp cancel` on a real PostgreSQL, with two
`interp run` workers polling and one of them SIGKILLed while it holds a wave.

The pipeline: a gate, a slow leased script (fails subjects titled BOOM, one
attempt), and a SQL actor that counts its effect per (subject, visit), keyed by
the visit the engine gives it in %(batch)s. After every action: the subjects it
moved are where the verb says and the others are untouched; at the end, one
effect per (subject, visit), never two successful checkpoints for one
(subject, step, visit), and interp.operator_actions holds every action with
its counts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from interpreter.config import DatabaseChoice
from interpreter.db import Database
from interpreter.ops.metrics import metrics_registry
from tests.helpers import GATE_NOT_DONE_SQL, add_items, make_workflow, wait_for

WF = 97
N = 40
BOOM = (1, 2, 3, 4, 5)

VISIT_EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS public.visit_effects (
    id    bigint NOT NULL,
    visit integer NOT NULL,
    n     integer NOT NULL DEFAULT 1,
    PRIMARY KEY (id, visit)
)"""

# The rewind-safe SQL actor of docs/ops.md: its effect is keyed by (subject, visit),
# so a rewind (a new visit) applies it once more, and nothing applies it twice.
COUNT_PER_VISIT_SQL = """
INSERT INTO public.visit_effects (id, visit)
SELECT (b ->> 'subject_id')::bigint, (b ->> 'visit')::int
  FROM jsonb_array_elements(%(batch)s) AS b
ON CONFLICT (id, visit) DO UPDATE SET n = visit_effects.n + 1
"""


def pipeline(conn: psycopg.Connection[Any], sleep_s: float = 0.3) -> None:
    add_items(conn, N)
    conn.execute(VISIT_EFFECTS_DDL)
    conn.execute("UPDATE public.items SET title = 'BOOM ' || id WHERE id = ANY(%s)",
                 (list(BOOM),))
    make_workflow(
        conn, WF,
        actors=[{"name": "slow_97", "kind": "script",
                 "target": "tests.actors.operator:slow_unless_marked",
                 "params": {"sleep_s": sleep_s}},
                {"name": "count_97", "kind": "sql", "target": COUNT_PER_VISIT_SQL}],
        steps=[{"number": 1, "name": "Gate", "kind": "gate", "gate_sql": GATE_NOT_DONE_SQL},
               {"number": 2, "name": "Slow", "actor": "slow_97", "max_attempts": 1},
               {"number": 3, "name": "Count", "actor": "count_97"}],
        transitions=[(1, "RUN", 2), (1, "SKIP", None), (2, "*", 3), (3, "DONE", None)])


def states(conn) -> dict[str, dict[str, Any]]:
    return {r["subject_id"]: r for r in conn.execute(
        "SELECT subject_id, status, step, visits, attempts, lease_owner FROM interp.subject_state "
        "WHERE workflow_id = %s", (WF,))}




def settled(conn) -> bool:
    """Nothing ready or leased: every subject done, dead or cancelled."""
    return conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
                        "AND status IN ('ready', 'leased')", (WF,)).fetchone()["n"] == 0


#: What idle workers keep writing (heartbeats, hardware samples, lane time).
WORKER_TABLES = ("runs", "utilisation", "lane_intervals")


def checksum(conn, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """md5 of every interp table's rows, in order (but those in skip)."""
    tables = [r["relname"] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'interp' AND c.relkind = 'r' ORDER BY 1")]
    out = {}
    for t in (t for t in tables if t not in skip):
        out[t] = conn.execute(
            f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h "
            f"FROM interp.{t} x").fetchone()["h"]
    return out


def act(cli, *args: str, check: bool = True) -> dict[str, Any]:
    proc = cli(*args, "--workflow", str(WF), "--json", check=check)
    return json.loads(proc.stdout)


def moved_by(conn, action_id: int) -> dict[str, dict[str, Any]]:
    return {r["subject_id"]: r for r in conn.execute(
        "SELECT * FROM interp.operator_action_subjects WHERE action_id = %s", (action_id,))}


def checkpoints_after(conn, sid: str, action_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT c.step, c.visit, c.attempt, c.ok FROM interp.checkpoints c "
        "JOIN interp.operator_actions a ON a.action_id = %s "
        "WHERE c.workflow_id = %s AND c.subject_id = %s AND c.finished_at > a.at",
        (action_id, WF, sid)).fetchall()


def first_pass_after(conn, sid: str, visits: int) -> tuple[int, int]:
    """(step, visit) of the subject's first checkpoint on a visit after `visits`."""
    row = conn.execute(
        "SELECT step, visit FROM interp.checkpoints WHERE workflow_id = %s AND subject_id = %s "
        "AND visit > %s ORDER BY visit, checkpoint_id LIMIT 1", (WF, sid, visits)).fetchone()
    return (row["step"], row["visit"])


def admit_all(conn, wf: int = WF) -> None:
    """Admits every item without running anything (the workflow stays still)."""
    conn.execute("INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step) "
                 "SELECT %s, id::text, 'all', 1 FROM public.items", (wf,))


def test_verbs_with_live_workers_and_a_sigkill(cli, conn, dsn):
    pipeline(conn, sleep_s=0.5)
    worker_args = ("run", "--workflow", str(WF), "--poll", "0.05", "--lease", "8",
                   "--batch-size", "4", "--quiet")
    workers = {name: cli.popen(*worker_args, "--worker-id", name,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for name in ("w1", "w2")}
    try:
        wait_for(lambda: conn.execute(
            "SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s",
            (WF,)).fetchone()["n"] == N and settled(conn), what="the first pass")
        st = states(conn)
        assert {s for s, r in st.items() if r["status"] == "dead"} == {str(i) for i in BOOM}

        # --- a dry run changes nothing, and says what it would do
        before = checksum(conn, skip=WORKER_TABLES)
        dry = act(cli, "retry", "--dry-run")
        assert (dry["matched"], dry["would_change"], dry["changed"]) == (5, 5, 0)
        assert dry["sample"] == sorted(str(i) for i in BOOM)
        assert checksum(conn, skip=WORKER_TABLES) == before

        # --- retry: the cause fixed, the dead letters go back where they died
        conn.execute("UPDATE public.items SET title = 'fixed' WHERE id = ANY(%s)", (list(BOOM),))
        before_st = states(conn)
        r = act(cli, "retry", "--reason", "BOOM fixed")
        assert (r["selected"], r["matched"], r["skipped"], r["changed"]) == (N, 5, 0, 5)
        moved = moved_by(conn, r["action_id"])
        assert set(moved) == {str(i) for i in BOOM}
        for m in moved.values():
            assert (m["from_status"], m["from_step"], m["to_status"], m["to_step"]) == \
                ("dead", 2, "ready", 2)
        wait_for(lambda: settled(conn), what="the retried subjects")
        st = states(conn)
        assert {k: v for k, v in st.items() if k not in moved} == \
            {k: v for k, v in before_st.items() if k not in moved}  # the others untouched
        for sid, m in moved.items():
            assert st[sid]["status"] == "done"
            cps = conn.execute(
                "SELECT step, visit, attempt, ok FROM interp.checkpoints WHERE workflow_id = %s "
                "AND subject_id = %s AND visit > %s ORDER BY checkpoint_id",
                (WF, sid, m["from_visits"])).fetchall()
            # the step where it died, attempt 1 again, on a new visit
            assert [(c["step"], c["attempt"], c["ok"]) for c in cps] == [(2, 1, True), (3, 1, True)]
            assert cps[0]["visit"] == m["from_visits"] + 1

        # --- rewind the done subjects to the SQL actor: one more effect each, on a new visit
        before_st = states(conn)
        r = act(cli, "rewind", "--to-step", "3", "--status", "done", "--subject",
                ",".join(str(i) for i in range(1, 21)), "--reason", "recount")
        assert (r["selected"], r["matched"], r["changed"]) == (20, 20, 20)
        wait_for(lambda: settled(conn), what="the rewound subjects")
        for sid, m in moved_by(conn, r["action_id"]).items():
            # it went on from step 3, on the next visit
            assert first_pass_after(conn, sid, m["from_visits"]) == (3, m["from_visits"] + 1)
        after_st = states(conn)
        for sid in before_st:
            if int(sid) <= 20:
                assert after_st[sid]["visits"] == before_st[sid]["visits"] + 2  # rewind + step 3
            else:
                assert after_st[sid] == before_st[sid]  # the others untouched
        assert conn.execute("SELECT count(*) AS n FROM public.visit_effects WHERE id <= 20"
                            ).fetchone()["n"] == 40

        # --- rewind everything to step 2 while both workers run; SIGKILL w1 while it
        # holds a wave, then cancel what waits at step 2: leased subjects are skipped
        r_all = act(cli, "rewind", "--to-step", "2", "--all", "--reason", "rerun the slow step")
        assert r_all["changed"] == N
        wait_for(lambda: conn.execute(
            "SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = %s "
            "AND lease_owner = 'w1'", (WF,)).fetchone()["n"] > 0, what="w1 to lease a wave")
        workers["w1"].send_signal(signal.SIGKILL)
        workers["w1"].wait(10)
        held_by_dead = {r["subject_id"] for r in conn.execute(
            "SELECT subject_id FROM interp.subject_state WHERE workflow_id = %s "
            "AND lease_owner = 'w1' AND lease_expires > now() + interval '3 seconds'", (WF,))}
        assert held_by_dead, "w1 was killed between two waves; slow the script down"
        r = act(cli, "cancel", "--step", "2", "--reason", "stop the rerun")
        cancel_id = r["action_id"]
        assert r["matched"] == r["changed"] + r["skipped"]
        cancelled = moved_by(conn, cancel_id)
        # the dead worker's wave still had a live lease: skipped, not moved under it
        assert r["skipped"] >= len(held_by_dead) and not held_by_dead & set(cancelled)
        assert len(cancelled) == r["changed"]
        # w1's leases expire; w2's reaper returns them and w2 finishes them
        wait_for(lambda: settled(conn), timeout=120, what="the killed worker's subjects")
        st = states(conn)
        rewound = moved_by(conn, r_all["action_id"])
        for sid, row in st.items():
            assert (rewound[sid]["to_status"], rewound[sid]["to_step"]) == ("ready", 2)
            if sid in cancelled:
                assert (row["status"], row["step"]) == ("cancelled", 2), sid
                assert checkpoints_after(conn, sid, cancel_id) == []
            else:
                assert row["status"] == "done", sid
                assert first_pass_after(conn, sid, rewound[sid]["from_visits"]) == \
                    (2, rewound[sid]["from_visits"] + 1)

        # --- cancelled subjects come back with retry --status cancelled
        r = act(cli, "retry", "--status", "cancelled", "--reason", "resume")
        assert r["changed"] == len(cancelled)
        wait_for(lambda: settled(conn), what="the resumed subjects")
        assert all(row["status"] == "done" for row in states(conn).values())
    finally:
        for p in workers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in workers.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    # No (subject, step, visit) has two successful checkpoints.
    assert conn.execute(
        "SELECT subject_id, step, visit FROM interp.checkpoints WHERE workflow_id = %s AND ok "
        "GROUP BY 1, 2, 3 HAVING count(*) > 1", (WF,)).fetchall() == []
    # Exactly one effect per (subject, visit) at the SQL actor, and one per checkpoint.
    assert conn.execute("SELECT * FROM public.visit_effects WHERE n <> 1").fetchall() == []
    effects = {(str(r["id"]), r["visit"]) for r in conn.execute(
        "SELECT id, visit FROM public.visit_effects")}
    passes = [(r["subject_id"], r["visit"]) for r in conn.execute(
        "SELECT subject_id, visit FROM interp.checkpoints WHERE workflow_id = %s AND step = 3 "
        "AND ok", (WF,))]
    assert len(passes) == len(set(passes)) and set(passes) == effects
    # Every action is recorded, with counts that match the subjects it moved.
    actions = conn.execute(
        "SELECT a.*, (SELECT count(*) FROM interp.operator_action_subjects t "
        "              WHERE t.action_id = a.action_id) AS moved "
        "FROM interp.operator_actions a WHERE workflow_id = %s ORDER BY action_id",
        (WF,)).fetchall()
    assert [a["verb"] for a in actions] == ["retry", "rewind", "rewind", "cancel", "retry"]
    for a in actions:
        assert a["moved"] == a["changed"] and a["matched"] == a["changed"] + a["skipped"]
        assert a["reason"] and a["db_role"] and a["db_user"]
    assert actions[0]["selection"] == {"all": True}


def test_dry_runs_and_bad_selections_change_nothing(cli, conn):
    pipeline(conn, sleep_s=0)
    cli("run", "--workflow", str(WF), "--until-idle", "--quiet", "--batch-size", "50")
    conn.execute("CREATE SEQUENCE IF NOT EXISTS public.op_seq")
    before = checksum(conn)
    items_before = conn.execute("SELECT count(*) AS n FROM public.items").fetchone()["n"]

    for args in (("retry", "--dry-run"), ("rewind", "--to-step", "1", "--all", "--dry-run"),
                 ("cancel", "--status", "dead", "--dry-run"),
                 ("rewind", "--to-step", "2", "--outcome-at", "1=run", "--dry-run"),
                 ("cancel", "--where", "t.id < 10 AND t.title LIKE '%BOOM%'", "--dry-run")):
        out = act(cli, *args)
        assert out["dry_run"] and out["action_id"] is None and out["changed"] == 0
    out = act(cli, "cancel", "--where", "t.id < 10 AND t.title LIKE '%BOOM%'", "--dry-run")
    assert out["matched"] == 5 and out["sample"] == [str(i) for i in BOOM]
    out = act(cli, "rewind", "--to-step", "2", "--outcome-at", "1=run", "--dry-run")
    assert out["matched"] == N
    assert checksum(conn) == before

    bad = [
        (("rewind", "--to-step", "9", "--all", "--reason", "x"), "no step 9"),
        (("cancel", "--step", "9", "--reason", "x"), "no step 9"),
        (("retry", "--outcome-at", "9=DONE", "--reason", "x"), "no step 9"),
        (("retry", "--subject", "12345", "--reason", "x"), "no subject 12345"),
        (("retry", "--subject", "abc", "--reason", "x"), "invalid input syntax"),
        (("retry", "--reason", ""), "needs --reason"),
        (("rewind", "--to-step", "1", "--reason", "x"), "needs a selection"),
        (("retry", "--status", "done", "--reason", "x"), "selects none it can move"),
        (("cancel", "--status", "nope", "--reason", "x"), "--status 'nope'"),
        (("cancel", "--outcome-at", "1", "--reason", "x"), "STEP=OUTCOME"),
        (("cancel", "--where", "t.id <", "--reason", "x"), "--where failed"),
        (("cancel", "--where", "nextval('public.op_seq') > 0", "--reason", "x"),
         "read-only transaction"),
        (("cancel", "--where", "t.id IN (WITH d AS (DELETE FROM public.items RETURNING id) "
                               "SELECT id FROM d)", "--reason", "x"), "--where failed"),
        (("cancel", "--where", "true; DELETE FROM public.items", "--reason", "x"),
         "--where failed"),
        (("cancel", "--where", "true) AND false; DELETE FROM public.items; SELECT (1",
          "--reason", "x"), "--where failed"),
        (("cancel", "--where", "pg_sleep(5) IS NOT NULL", "--where-timeout", "0.2",
          "--reason", "x"), "longer than 0.2s"),
    ]
    for args, message in bad:
        proc = cli(*args, "--workflow", str(WF), check=False)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert checksum(conn) == before
    assert conn.execute("SELECT count(*) AS n FROM public.items").fetchone()["n"] == items_before
    assert conn.execute("SELECT last_value, is_called FROM public.op_seq").fetchone()[
        "is_called"] is False


def test_cancelled_is_counted_apart_and_shown(cli, conn):
    pipeline(conn, sleep_s=0)
    admit_all(conn)
    r = act(cli, "cancel", "--subject", "1", "--subject", "2,3", "--reason", "not these")
    assert r["changed"] == 3
    status = json.loads(cli("status", "--workflow", str(WF), "--json").stdout)
    t = status["totals"]
    assert (t["cancelled"], t["waiting"], t["active"], t["subjects"]) == (3, N - 3, N - 3, N)
    assert status["operator_actions"][0]["verb"] == "cancel"
    assert [(s["step"], s["cancelled"]) for s in status["steps"]] == [(1, 3), (2, 0), (3, 0)]
    assert "3 cancelled" in cli("status", "--workflow", str(WF)).stdout
    trace = cli("trace", "--workflow", str(WF), "--subject", "2").stdout
    assert "operator cancel" in trace and "not these" in trace
    assert json.loads(cli("trace", "--workflow", str(WF), "--subject", "2", "--json").stdout)[
        "operator_actions"][0]["to_status"] == "cancelled"
    db = Database(DatabaseChoice(cli.dsn, "test"))
    try:
        text = generate_latest(metrics_registry(db)).decode()
    finally:
        db.close()
    cancelled = {(sm.labels["workflow"], sm.labels["step"]): sm.value
                 for fam in text_string_to_metric_families(text)
                 if fam.name == "interp_cancelled_subjects" for sm in fam.samples}
    assert cancelled[(str(WF), "1")] == 3, text
    # the subjects come back with rewind as well
    r = act(cli, "rewind", "--to-step", "1", "--status", "cancelled", "--reason", "after all")
    assert r["changed"] == 3
    cli("run", "--workflow", str(WF), "--until-idle", "--quiet")
    # a gate at the step rewound to is evaluated again: item 9 passed it (RUN); it is
    # done now, so the gate says SKIP and the subject ends without running step 2 again
    conn.execute("UPDATE public.items SET done = true WHERE id = 9")
    act(cli, "rewind", "--to-step", "1", "--subject", "9", "--reason", "gate again")
    cli("run", "--workflow", str(WF), "--until-idle", "--quiet")
    path = [(c["step"], c["outcome"]) for c in conn.execute(
        "SELECT step, outcome FROM interp.checkpoints WHERE workflow_id = %s AND subject_id = '9' "
        "ORDER BY visit", (WF,))]
    assert path == [(1, "RUN"), (2, "DONE"), (3, "DONE"), (1, "SKIP")]
    assert {r["status"] for r in states(conn).values()} == {"done", "dead"}


@pytest.fixture
def ops_login(conn):
    user = f"op_ops_{uuid.uuid4().hex[:8]}"
    yield user
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone():
        conn.execute(f'DROP OWNED BY "{user}"')
        conn.execute(f'DROP ROLE "{user}"')


def test_ops_role_reads_the_actions_but_cannot_run_the_verbs(cli, conn, dsn, ops_login):
    pipeline(conn, sleep_s=0)
    cli("run", "--workflow", str(WF), "--until-idle", "--quiet")
    act(cli, "cancel", "--status", "dead", "--reason", "owner did this")
    cli("db", "roles", "--login", f"{ops_login}=ops")
    params = conninfo_to_dict(dsn)
    params["user"] = ops_login
    params.pop("password", None)
    ops_dsn = make_conninfo(**params)
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        assert ops.execute("SELECT count(*) FROM interp.operator_actions").fetchone()[0] == 1
        assert ops.execute("SELECT count(*) FROM interp.operator_action_subjects"
                           ).fetchone()[0] == 5
    before = checksum(conn)
    as_ops = type(cli)(ops_dsn)
    for args in (("retry", "--status", "cancelled", "--reason", "x"),
                 ("cancel", "--all", "--reason", "x"),
                 ("rewind", "--to-step", "1", "--all", "--reason", "x")):
        proc = as_ops(*args, "--workflow", str(WF), check=False)
        assert proc.returncode == 1, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "permission denied" in lines[0], proc.stderr
    # a dry run only reads: ops may look
    assert json.loads(as_ops("retry", "--status", "cancelled", "--dry-run", "--json",
                             "--workflow", str(WF)).stdout)["matched"] == 5
    assert checksum(conn) == before


def test_subject_ids_are_bound_as_the_key_type_stores_them(cli, conn):
    conn.execute("CREATE TABLE public.docs (doc_id uuid PRIMARY KEY, body text)")
    conn.execute("INSERT INTO public.docs SELECT gen_random_uuid(), 'x' FROM generate_series(1, 3)")
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (98, 'docs', 'public.docs', 'doc_id')")
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES ('noop_98', 'sql', "
                 "'SELECT 1 WHERE false')")
    conn.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor) "
                 "VALUES (98, 1, 'noop', 'actor', 'noop_98')")
    conn.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                 "VALUES (98, 'all', 'SELECT doc_id AS subject_id FROM public.docs', 1)")
    conn.execute("INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step) "
                 "SELECT 98, doc_id::text, 'all', 1 FROM public.docs")
    one = conn.execute("SELECT doc_id::text AS id FROM public.docs ORDER BY 1 LIMIT 1"
                       ).fetchone()["id"]
    proc = cli("cancel", "--workflow", "98", "--subject", one.upper(), "--reason", "x", "--json")
    out = json.loads(proc.stdout)
    assert out["changed"] == 1 and out["sample"] == [one]
    proc = cli("cancel", "--workflow", "98", "--subject", "not-a-uuid", "--reason", "x",
               check=False)
    assert proc.returncode == 1 and "uuid" in proc.stderr


def test_a_long_id_is_refused_not_cut_to_a_shorter_subject(cli, conn):
    """A varchar(5) key: 'abcdefgh' cast to varchar(5) is 'abcde', another subject.
    The id is refused (no such subject), and 'abcde' is left alone."""
    conn.execute("CREATE TABLE public.codes (code varchar(5) PRIMARY KEY)")
    conn.execute("INSERT INTO public.codes VALUES ('abcde'), ('o''k')")
    conn.execute("INSERT INTO interp.workflows (workflow_id, name, subject_table, subject_key) "
                 "VALUES (96, 'codes', 'public.codes', 'code')")
    conn.execute("INSERT INTO interp.actors (name, kind, target) VALUES ('noop_96', 'sql', "
                 "'SELECT 1 WHERE false')")
    conn.execute("INSERT INTO interp.steps (workflow_id, execution_order, name, kind, actor) "
                 "VALUES (96, 1, 'noop', 'actor', 'noop_96')")
    conn.execute("INSERT INTO interp.entry_points (workflow_id, name, admit_sql, first_step) "
                 "VALUES (96, 'all', 'SELECT code AS subject_id FROM public.codes', 1)")
    conn.execute("INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step) "
                 "SELECT 96, code::text, 'all', 1 FROM public.codes")
    proc = cli("cancel", "--workflow", "96", "--subject", "abcdefgh", "--reason", "x",
               check=False)
    assert proc.returncode == 1 and "no subject abcdefgh" in proc.stderr, proc.stderr
    assert conn.execute("SELECT count(*) AS n FROM interp.subject_state WHERE workflow_id = 96 "
                        "AND status = 'cancelled'").fetchone()["n"] == 0
    out = json.loads(cli("cancel", "--workflow", "96", "--subject", "o'k", "--reason", "x",
                         "--json").stdout)
    assert out["changed"] == 1 and out["sample"] == ["o'k"]


def test_an_empty_selection_value_is_refused(cli, conn):
    """`retry --subject ''` (an empty shell variable) is refused, not taken as no
    selection (every dead letter)."""
    pipeline(conn, sleep_s=0)
    cli("run", "--workflow", str(WF), "--until-idle", "--quiet")
    before = checksum(conn)
    for args in (("--subject", ""), ("--where", ""), ("--error-like", " "), ("--status", ",")):
        proc = cli("retry", "--workflow", str(WF), *args, "--reason", "x", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, (args, proc.stderr)
    assert checksum(conn) == before


def test_a_statement_the_server_refused_says_nothing_changed(cli, conn, dsn):
    """A lock timeout (the server answered, and rolled back) is not a lost connection:
    the one line says nothing changed, not 'whether it committed, look'."""
    pipeline(conn, sleep_s=0)
    admit_all(conn)
    params = conninfo_to_dict(dsn)
    params["options"] = "-c lock_timeout=200"
    impatient = type(cli)(make_conninfo(**params))
    before = checksum(conn)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE interp.operator_actions IN EXCLUSIVE MODE")
        proc = impatient("cancel", "--workflow", str(WF), "--subject", "1", "--reason", "x",
                         check=False)
        locker.rollback()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "cancel failed, nothing changed" in lines[0] and "lock timeout" in lines[0], lines
    assert checksum(conn) == before


def test_an_action_killed_midway_changes_nothing(cli, conn, dsn):
    """SIGKILL the operator's own process after its statement moved every subject but
    before it committed: the rewind and its record go together, so nothing changed.

    To kill it there and nowhere else, a share lock on interp.subject_counts holds
    the statement in its last part (the status rollup's trigger, which runs after
    every subject has moved) until the client is dead."""
    n = 20_000
    pipeline(conn, sleep_s=0)
    conn.execute("INSERT INTO public.items (id) SELECT g "
                 "FROM generate_series(%s::bigint, %s::bigint) g ON CONFLICT DO NOTHING",
                 (N + 1, n))
    conn.execute("INSERT INTO interp.subject_state (workflow_id, subject_id, entry_point, step, "
                 "status, visits) SELECT %s, id::text, 'all', NULL, 'done', 3 FROM public.items",
                 (WF,))
    before = checksum(conn)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE interp.subject_counts IN SHARE MODE")
        proc = cli.popen("rewind", "--workflow", str(WF), "--to-step", "2", "--all",
                         "--reason", "killed midway", stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        blocked = ("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                   "AND application_name = 'interp' AND wait_event_type = 'Lock'")
        wait_for(lambda: conn.execute(blocked).fetchone()["n"] == 1, timeout=30,
                 what="the rewind to wait in its last part")
        # it has moved (and so locked) every subject by now
        assert locker.execute(
            "SELECT count(*) FROM (SELECT 1 FROM interp.subject_state WHERE workflow_id = %s "
            "FOR UPDATE SKIP LOCKED) x", (WF,)).fetchone()[0] == 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        locker.rollback()
    # the backend finds its client gone when it answers, and rolls back
    wait_for(lambda: conn.execute(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'interp'").fetchone()["n"] == 0,
        timeout=60, what="the killed action's backend to end")
    assert conn.execute("SELECT count(*) AS n FROM interp.operator_actions").fetchone()["n"] == 0
    assert checksum(conn) == before
    # and the same action, not killed, moves them all
    r = act(cli, "rewind", "--to-step", "2", "--all", "--reason", "not killed")
    assert r["changed"] == n
