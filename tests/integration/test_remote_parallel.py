"""RemoteBackend against several servers at once: slots, spreading, a server's
breaker, stopping.

The servers are small threaded HTTP servers on 127.0.0.1 that speak the OpenAI
chat-completions shape RemoteBackend uses, take a fixed time per request and
record how many requests they hold at once. llama.cpp's llama-server is measured
the same way by bench/bench_remote.py where it can be built; CI cannot count on
building it.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from interpreter.actor_api import Subject
from interpreter.definitions import ActorDef, ModelDef, StepDef, Workflow
from interpreter.llm.backend import GenerationError, GenerationRequest, ModelLoadError
from interpreter.llm.pool import ModelPool
from interpreter.llm.remote import (
    DEFAULT_REMOTE_PARALLEL,
    Endpoint,
    RemoteBackend,
    remote_endpoints,
)
from interpreter.model_actor import run_model_wave
from tests.helpers import stop_process, wait_for

SAMPLING = {"temperature": 0.0}


class Recorder:
    """Requests in flight across every server of a test, and the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


class FakeServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that answers "<name>:<prompt>"
    after `delay` seconds. kill() stops it like a crash: new connections are
    refused and requests it holds get their connection dropped. While `failing`
    is set it answers 503."""

    def __init__(self, name: str, recorder: Recorder, delay: float):
        self.name, self.recorder, self.delay = name, recorder, delay
        self.lock = threading.Lock()
        self.now = self.most = self.served = 0
        self.killed = threading.Event()
        self.failing = threading.Event()
        # prompt -> Event: such a request waits for its event before its delay, so a
        # test decides when a slot frees instead of racing a timer
        self.held: dict[str, threading.Event] = {}
        self.order: list[str] = []      # prompts in the order their answers were sent
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kill(self) -> None:
        if not self.killed.is_set():
            self.killed.set()
            self.httpd.shutdown()
            self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {"object": "list", "data": [{"id": f"model-{server.name}"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.failing.is_set():
                    self._answer(503, {"error": "unavailable"})
                    return
                # Counted out before answering: the client frees its slot when the
                # answer arrives, and the next request may reach us before a
                # handler thread's later bookkeeping would.
                prompt = body["messages"][-1]["content"]
                server.enter()
                if prompt in server.held:
                    server.held[prompt].wait(30)
                crashed = server.killed.wait(server.delay)
                server.leave(served=not crashed, prompt=prompt)
                if crashed:
                    self.connection.shutdown(socket.SHUT_RDWR)   # a crash mid-request
                    return
                self._answer(200, {
                    "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant",
                                             "content": f"{server.name}:{prompt}"}}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3}})

        return Handler

    def enter(self) -> None:
        self.recorder.enter()
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self, served: bool, prompt: str) -> None:
        self.recorder.leave()
        with self.lock:
            self.now -= 1
            self.served += served
            if served:
                self.order.append(prompt)


@pytest.fixture
def servers():
    made: list[FakeServer] = []
    recorder = Recorder()

    def make(n: int, delay: float) -> tuple[list[FakeServer], Recorder]:
        made.extend(FakeServer(chr(ord("a") + i), recorder, delay) for i in range(n))
        return made, recorder

    yield make
    for s in made:
        s.kill()


def backend_for(servers: list[FakeServer], parallel: int | None = None,
                **kw: float) -> RemoteBackend:
    setting = f"#parallel={parallel}" if parallel else ""
    source = ", ".join(s.url + setting for s in servers)
    return RemoteBackend(ModelDef("remote", source), **kw)


def ask(backend: RemoteBackend, prompt: str, **kw):
    kw.setdefault("deadline", time.monotonic() + 30)
    return backend.generate(GenerationRequest(
        prompt, schema=None, sampling=SAMPLING, seed=1, max_tokens=8, **kw))


def run_on_threads(backend: RemoteBackend, prompts: list[str], threads: int) -> dict:
    """Each of `threads` threads takes prompts from a queue and asks, the way a lane
    with `threads` subjects in flight does; {prompt: Generation or exception}."""
    todo: queue.Queue[str] = queue.Queue()
    for p in prompts:
        todo.put(p)
    results: dict = {}

    def work() -> None:
        while True:
            try:
                p = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[p] = ask(backend, p)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                results[p] = exc

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    return results


# ---------------------------------------------------------------- sources

def test_source_lists_servers_with_their_parallel():
    assert remote_endpoints("http://10.0.0.1:8080/v1, https://gpu2:8443/#parallel=16\n"
                            "http://gpu3:8080") == [
        Endpoint("http://10.0.0.1:8080", DEFAULT_REMOTE_PARALLEL),
        Endpoint("https://gpu2:8443", 16),
        Endpoint("http://gpu3:8080", DEFAULT_REMOTE_PARALLEL)]
    for bad in ("http://a:1#parallel=0", "http://a:1#threads=2", "http://a:1 /models/x.gguf",
                "http://a:1, http://a:1/v1", " , "):
        with pytest.raises(ModelLoadError):
            remote_endpoints(bad)


# ---------------------------------------------------------------- concurrency

def test_eight_threads_keep_four_in_flight_over_two_servers(servers):
    (a, b), recorder = servers(2, delay=0.6)
    backend = backend_for([a, b], parallel=2)
    assert backend.slots == 4
    prompts = [f"p{i}" for i in range(8)]
    results = run_on_threads(backend, prompts, threads=8)
    for p in prompts:
        gen = results[p]
        assert not isinstance(gen, Exception), gen
        assert gen.finish_reason == "stop" and gen.text.endswith(f":{p}")
        assert gen.completion_tokens == 3
    # Four at once and never more: each server got its two slots' worth, no more.
    assert recorder.most == 4
    assert a.most == 2 and b.most == 2
    assert a.served == 4 and b.served == 4


def test_a_server_killed_mid_run_leaves_the_work_to_the_other(servers):
    (a, b), recorder = servers(2, delay=0.3)
    backend = backend_for([a, b], parallel=2)
    prompts = [f"p{i}" for i in range(16)]
    killer = threading.Thread(target=lambda: (wait_for(lambda: a.served >= 2), a.kill()))
    killer.start()
    results = run_on_threads(backend, prompts, threads=backend.slots)
    killer.join()
    for p in prompts:
        gen = results[p]
        assert not isinstance(gen, Exception), gen
        assert gen.finish_reason == "stop" and gen.text.endswith(f":{p}")
    # Every prompt was answered once; what a was holding when it died went to b.
    assert a.served + b.served == 16
    assert 2 <= a.served < 16 and b.served > a.served
    state = {s["url"]: s for s in backend.describe()["servers"]}
    assert not state[a.url]["up"] and state[a.url]["last_error"]
    assert state[b.url]["up"] and state[b.url]["served"] == b.served
    assert b.most <= 2


def test_all_servers_down_is_a_clear_failure(servers):
    (a, b), _ = servers(2, delay=0.05)
    backend = backend_for([a, b])
    assert ask(backend, "hello").text.endswith(":hello")
    a.kill()
    b.kill()
    started = time.monotonic()
    with pytest.raises(GenerationError) as failed:
        ask(backend, "again")
    message = str(failed.value)
    assert "all 2 model servers for 'remote' are down" in message
    assert a.url in message and b.url in message
    assert time.monotonic() - started < 5       # no waiting out the cool-downs
    # Still out: the next call fails at once, without a request.
    started = time.monotonic()
    with pytest.raises(GenerationError, match="are down"):
        ask(backend, "and again")
    assert time.monotonic() - started < 0.5


def test_no_server_answering_at_load_is_a_load_error(servers):
    (a, b), _ = servers(2, delay=0.05)
    a.kill()
    b.kill()
    with pytest.raises(ModelLoadError, match="not answering") as failed:
        backend_for([a, b], timeout=5)
    assert a.url in str(failed.value) and b.url in str(failed.value)


def test_a_server_down_at_load_is_left_out_until_its_cool_down_ends(servers):
    (a, b), _ = servers(2, delay=0.05)
    a.failing.set()                     # answers GET /v1/models, 503 to completions
    backend = backend_for([a, b], cooldown_s=0.3)
    for i in range(3):
        assert ask(backend, f"x{i}").text == f"b:x{i}"
    assert a.served == 0
    a.failing.clear()
    # Waited for, not slept: on a slow machine an x call may have tried a again
    # after 0.3 s and doubled its cool-down.
    wait_for(lambda: backend.describe()["servers"][0]["up"])
    # Back from the cool-down, a gets a request again.
    answers = [ask(backend, f"y{i}").text for i in range(4)]
    assert any(t.startswith("a:") for t in answers), answers
    assert a.served >= 1


def test_a_5xx_is_retried_on_another_server(servers):
    (a, b), _ = servers(2, delay=0.05)
    backend = backend_for([a, b])
    a.failing.set()
    answers = [ask(backend, f"q{i}").text for i in range(4)]
    assert answers == [f"b:q{i}" for i in range(4)]
    assert "HTTP 503" in {s["url"]: s for s in backend.describe()["servers"]}[a.url][
        "last_error"]


# ---------------------------------------------------------------- stop and deadline

def test_stop_abandons_a_request_in_flight_without_waiting_for_its_answer(servers):
    (a,), _ = servers(1, delay=5.0)
    backend = backend_for([a])
    stopped_at: list[float] = []

    def stop_once_on_the_server() -> bool:
        if not stopped_at and a.now == 1:
            stopped_at.append(time.monotonic())
        return bool(stopped_at)

    gen = ask(backend, "slow", should_stop=stop_once_on_the_server)
    assert gen.finish_reason == "aborted" and a.served == 0
    # Polled every 0.1 s (docs/actors.md); 2 s leaves a loaded machine its stalls
    # and still proves the 5 s answer was not waited for.
    assert time.monotonic() - stopped_at[0] < 2.0


def test_stop_and_deadline_while_waiting_for_a_slot(servers):
    (a,), _ = servers(1, delay=0.05)
    a.held["holds the only slot"] = release = threading.Event()
    backend = backend_for([a], parallel=1)
    holder = threading.Thread(target=ask, args=(backend, "holds the only slot"))
    holder.start()
    wait_for(lambda: a.now == 1)
    asked: list[float] = []

    def stop_once_queued() -> bool:
        if not asked and backend.describe()["waiting"] == 1:
            asked.append(time.monotonic())
        return bool(asked)

    gen = ask(backend, "waits", should_stop=stop_once_queued)
    assert gen.finish_reason == "aborted"
    assert time.monotonic() - asked[0] < 2.0
    gen = ask(backend, "waits too", deadline=time.monotonic() + 0.3)
    assert gen.finish_reason == "timeout"
    release.set()
    holder.join()
    assert a.served == 1 and a.order == ["holds the only slot"]


def test_gen_ms_leaves_out_the_wait_for_a_server_slot(servers):
    (a,), _ = servers(1, delay=0.2)
    a.held["holds the only slot"] = release = threading.Event()
    backend = backend_for([a], parallel=1)
    holder = threading.Thread(target=ask, args=(backend, "holds the only slot"))
    holder.start()
    wait_for(lambda: a.now == 1)
    got: list = []
    started = time.monotonic()
    queued = threading.Thread(target=lambda: got.append(ask(backend, "queues behind it")))
    queued.start()
    wait_for(lambda: backend.describe()["waiting"] == 1)
    time.sleep(0.3)
    release.set()               # the holder still takes its 0.2 s on the server
    queued.join()
    wall_ms = (time.monotonic() - started) * 1000
    holder.join()
    [gen] = got
    assert gen.finish_reason == "stop"
    assert gen.wait_ms >= 500           # the 0.3 s held and the holder's own 0.2 s
    assert gen.gen_ms >= 200            # its own 0.2 s on the server ...
    assert gen.gen_ms + gen.wait_ms <= wall_ms      # ... and the wait counted once, apart


def test_slots_go_to_waiting_requests_in_the_order_they_came(servers):
    # A thread that asks again the moment its answer arrives is already running
    # when its slot frees; without a queue it takes the slot again before the
    # request that has been waiting wakes, every time.
    (a,), _ = servers(1, delay=0.05)
    a.held["hog 0"] = release = threading.Event()
    backend = backend_for([a], parallel=1)

    def hog() -> None:
        for i in range(10):
            ask(backend, f"hog {i}")

    t = threading.Thread(target=hog)
    t.start()
    wait_for(lambda: a.now == 1)
    waiter = threading.Thread(target=ask, args=(backend, "waiting"))
    waiter.start()
    wait_for(lambda: backend.describe()["waiting"] == 1)
    release.set()
    waiter.join()
    t.join()
    assert a.order[:3] == ["hog 0", "waiting", "hog 1"]
    assert len(a.order) == 11


def test_a_subject_timeout_is_not_held_against_the_server(servers):
    (a,), _ = servers(1, delay=2.0)
    backend = backend_for([a])
    gen = ask(backend, "slow", deadline=time.monotonic() + 0.3)
    assert gen.finish_reason == "timeout"
    assert backend.describe()["servers"][0]["up"]


def test_a_server_timing_out_on_its_own_is_taken_out(servers):
    (a, b), _ = servers(2, delay=0.05)
    a.delay = 3.0
    backend = backend_for([a, b], timeout=0.5)
    answers = [ask(backend, f"r{i}", deadline=None).text for i in range(3)]
    assert answers == [f"b:r{i}" for i in range(3)]
    state = {s["url"]: s for s in backend.describe()["servers"]}
    assert not state[a.url]["up"] and "timed out" in state[a.url]["last_error"]


# ---------------------------------------------------------------- through the model actor

def test_model_wave_uses_the_live_server_and_fails_the_actor_when_all_are_down(servers):
    (a, b), _ = servers(2, delay=0.05)
    model = ModelDef("remote", f"{a.url} {b.url}")
    s = StepDef(workflow_id=1, number=1, name="s1", kind="actor", actor="a_remote",
                template="t", params={"max_tokens": 8})
    wf = Workflow(id=1, name="t", description="", subject_table="postings",
                  subject_key="posting_id", paused=False, version=1, steps={1: s},
                  transitions={}, entry_points=[],
                  actors={"a_remote": ActorDef("a_remote", "model", "remote", {})},
                  models={"remote": model}, templates={"t": "Title: {{ title }}"})
    subjects = [Subject(f"p{i}", {"posting_id": f"p{i}", "title": f"job {i}"}, {})
                for i in range(4)]
    with ModelPool(1 << 30) as pool:
        a.kill()
        results = run_model_wave(pool, wf, s, subjects)
        assert all(r.ok for r in results), [r.error for r in results]
        assert {r.output["text"] for r in results} == {f"b:Title: job {i}" for i in range(4)}
        b.kill()
        results = run_model_wave(pool, wf, s, subjects[:1])
    [r] = results
    assert not r.ok and r.actor_failure and "are down" in r.error


# ---------------------------------------------------------------- real servers

def _start_llama_cpp_server(model, log) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    threads = os.environ.get("INTERP_TEST_MODEL_THREADS", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port),
         "--host", "127.0.0.1", "--n_ctx", "512", "--n_threads", threads, "--verbose", "False"],
        stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.model
@pytest.mark.slow
def test_two_real_servers_share_the_work_and_one_can_die(smollm2, tmp_path):
    """Two `python -m llama_cpp.server` (one request at a time each, so #parallel=1):
    requests spread over both; one killed mid-run, the other answers the rest.
    (Concurrency inside one server is llama-server's; see bench/bench_remote.py.)"""
    pytest.importorskip("llama_cpp.server")
    log = (tmp_path / "servers.log").open("w")
    started = [_start_llama_cpp_server(smollm2, log) for _ in range(2)]
    procs = [p for p, _ in started]
    try:
        for proc, url in started:
            wait_for(lambda proc=proc, url=url: (_answers(url + "/v1/models")
                                                  or proc.poll() is not None), timeout=90)
            assert proc.poll() is None, (tmp_path / "servers.log").read_text()[-2000:]
        source = " ".join(f"{url}#parallel=1" for _, url in started)
        backend = RemoteBackend(ModelDef("remote", source), timeout=120)
        assert backend.slots == 2
        prompts = [f"Say the number {i} in words." for i in range(8)]
        killer = threading.Thread(target=lambda: (
            wait_for(lambda: _served(backend, started[0][1]) >= 1, timeout=120),
            procs[0].kill()))
        killer.start()
        todo: queue.Queue[str] = queue.Queue()
        for p in prompts:
            todo.put(p)
        answers: dict = {}

        def work() -> None:
            while True:
                try:
                    p = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    answers[p] = backend.generate(GenerationRequest(
                        p, schema=None, sampling=SAMPLING, seed=1, max_tokens=6,
                        deadline=time.monotonic() + 120))
                except Exception as exc:  # noqa: BLE001 - the test inspects it
                    answers[p] = exc

        workers = [threading.Thread(target=work) for _ in range(backend.slots)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(300)
        killer.join(10)
        for p in prompts:
            assert not isinstance(answers[p], Exception), answers[p]
            assert answers[p].completion_tokens > 0
        served = {s["url"]: s["served"] for s in backend.describe()["servers"]}
        first, second = (url for _, url in started)
        assert served[first] >= 1 and served[second] >= 1
        assert served[first] + served[second] == 8
        assert not {s["url"]: s for s in backend.describe()["servers"]}[first]["up"]
    finally:
        for proc in procs:
            stop_process(proc)
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _served(backend: RemoteBackend, url: str) -> int:
    return {s["url"]: s["served"] for s in backend.describe()["servers"]}[url]

