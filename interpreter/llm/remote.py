"""The remote backend: a model row served by OpenAI-compatible servers
(``/v1/chat/completions``: llama.cpp's llama-server, vLLM, ``python -m
llama_cpp.server``), for GPUs on other machines.

Its source is an ``http://host:port`` or ``https://...`` URL, or several such
URLs separated by whitespace or commas, each optionally ending in
``#parallel=N`` (see `RemoteBackend`). A server that wants a bearer key gets it
from the environment variable the row's ``api_key_env`` names (`ServerAccess`);
a URL never carries a secret.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..definitions import ModelDef
from ..errors import first_line
from .backend import (
    SAMPLING_KEYS,
    Generation,
    GenerationError,
    GenerationRequest,
    ModelLoadError,
    OpenSettings,
    PromptTooLong,
    ServerDown,
    ServerTimedOut,
    server_cached_tokens,
)
from .chat_format import Messages
from .files import names_server


def is_remote(source: str) -> bool:
    """Whether a source names OpenAI-compatible servers by http(s) URLs."""
    return source.startswith(("http://", "https://"))


DEFAULT_REMOTE_PARALLEL = 4
"""Requests in flight per server when its URL does not say (``#parallel=N``):
llama-server's own default number of slots."""

REMOTE_COOLDOWN_S = 5.0        # a failing server's first time out; doubles per failure
REMOTE_MAX_COOLDOWN_S = 60.0


@dataclass(frozen=True)
class Endpoint:
    """One server a remote model row names: its base URL and how many requests it
    takes at once."""
    url: str            # without a trailing / or /v1
    parallel: int


KEY_WAY = ("name an environment variable that holds the key in interp.models.api_key_env "
           "(docs/security.md, Keys of model servers)")


def redact_url(url: str) -> str:
    """url (or a whole source of several) with any user:password and query masked,
    for messages and listings. A user:password is masked from a `://` to the last
    `@` before the next `://`, so one holding a comma, a space (where a source is
    split into servers) or an `@` is masked whole; a query up to the `#` or the
    end."""
    url = re.sub(r"://(?:(?!://).)*@", "://***@", url, flags=re.DOTALL)
    return re.sub(r"\?[^#]*", "?***", url)


def redact_source(source: str) -> str:
    """A model source for display: each server URL with its secrets masked."""
    if not names_server(source):
        return source
    return redact_url(source)


def url_secret_problem(url: str) -> str | None:
    """Why a server URL (or a source of several) must not be used as it is: it
    carries a user:password (any `@`) or a query (any `?`: a server URL is a base
    that paths are added to, so a query there is a secret more often than not,
    ?api_key=...). None when it is clean. The message names the URL with the
    secret masked."""
    if "@" in url:
        return (f"model server {redact_url(url)} carries a user or password in its URL; "
                f"a URL is stored, logged and exported: {KEY_WAY}")
    if "?" in url:
        return (f"model server {redact_url(url)} has a query in its URL (a key there is stored, "
                f"logged and exported); for a key, {KEY_WAY}")
    return None


def remote_endpoints(source: str) -> list[Endpoint]:
    """The servers of a remote source: http(s) URLs separated by whitespace or
    commas, each optionally ending in ``#parallel=N``. Raises ModelLoadError when
    malformed, or when a URL carries a secret (user:password, a query): its
    messages show URLs with secrets masked (the fragment is never sent to a
    server: it is ours)."""
    parts = [p for p in re.split(r"[\s,]+", source.strip()) if p]
    if not parts:
        raise ModelLoadError("the model source names no server")
    # The whole source, before it is split: a password may hold a comma or a space.
    secret = url_secret_problem(source.strip())
    if secret:
        raise ModelLoadError(secret)
    endpoints: list[Endpoint] = []
    for part in parts:
        url, _, setting = part.partition("#")
        if not is_remote(url):
            raise ModelLoadError(f"bad model server {part!r} in source {source!r}: every "
                                 f"server must be an http(s):// URL")
        parallel = DEFAULT_REMOTE_PARALLEL
        if setting:
            key, _, value = setting.partition("=")
            if key != "parallel" or not value.isdigit() or int(value) < 1:
                raise ModelLoadError(f"bad model server {part!r}: the only setting after '#' "
                                     f"is parallel=N with N >= 1")
            parallel = int(value)
        base = url.rstrip("/")
        base = base[:-3] if base.endswith("/v1") else base
        if any(e.url == base for e in endpoints):
            raise ModelLoadError(f"model server {base} is listed twice in {source!r}; "
                                 f"give it a larger #parallel instead")
        endpoints.append(Endpoint(base, parallel))
    return endpoints


REDACTED = "[redacted]"
ECHO_READ_BYTES = 65536     # of an error answer: scrubbed whole, then cut for the message
# Characters a bearer key may hold: visible ASCII (RFC 6750's b64token and more),
# never a line break that would end the header and start another.
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header on
    to wherever a redirect points (another host, or http:// from https://). A
    3xx is an HTTPError, reported as such."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ServerAccess:
    """How a model row's requests reach its servers: the bearer key, read from the
    environment variable the row names (``api_key_env``) when the model is
    opened, and the TLS context (certificates always verified; against the row's
    ``ca_bundle`` when it names one, else the system's CAs).

    The key lives only here: it is sent in the ``Authorization`` header, never
    shown by repr(), and `scrub` takes it out of any text that leaves (error
    messages built from a server's answer, which may echo the request)."""

    def __init__(self, model: ModelDef):
        self.key_env = model.api_key_env
        self._key: str | None = None
        if model.api_key_env:
            self._key = _key_from_env(model.name, model.api_key_env)
        try:
            self.tls = ssl.create_default_context(cafile=model.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ModelLoadError(f"model {model.name!r}: its ca_bundle {model.ca_bundle} "
                                 f"cannot be used: {type(exc).__name__}: "
                                 f"{first_line(exc)}") from None
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.tls),
                                                   _NoRedirect())

    def __repr__(self) -> str:
        key = f"from ${self.key_env}" if self.key_env else "none"
        return f"ServerAccess(key {key})"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def scrub(self, text: str) -> str:
        """text with the key replaced by [redacted]: as sent, and as a server that
        echoes the request may write it (JSON-escaped, with `\\/` for `/`,
        percent-encoded), in any letter case. A key shorter than 8 characters is
        replaced only where it stands as a token of its own, so that "k" does not
        blank every k of a message (and so show how short the key is)."""
        if not self._key:
            return text
        forms = sorted(key_forms(self._key), key=len, reverse=True)
        pattern = "|".join(re.escape(f) for f in forms)
        if len(self._key) < 8:
            token = r"[A-Za-z0-9._~+/=-]"
            pattern = rf"(?<!{token})(?:{pattern})(?!{token})"
        return re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)

    def open(self, req: urllib.request.Request, timeout: float) -> Any:
        return self._opener.open(req, timeout=timeout)


def key_forms(key: str) -> set[str]:
    """The ways a key can appear in a server's echo of the request: as is,
    JSON-escaped (`"` and `\\` escaped; some encoders also write `/` as `\\/`) and
    percent-encoded (as a path, a query value, a form value)."""
    escaped = json.dumps(key)[1:-1]
    return {key, escaped, escaped.replace("/", "\\/"), urllib.parse.quote(key, safe=""),
            urllib.parse.quote(key), urllib.parse.quote_plus(key)}


def key_env_problem(model: ModelDef) -> str | None:
    """Why the key of model cannot be read from this process's environment (the
    variable is unset, empty or holds a character a header cannot carry); None
    when it can or the row names no variable. Names the variable, never its value."""
    if not model.api_key_env:
        return None
    value = os.environ.get(model.api_key_env)
    if value is None:
        return (f"model {model.name!r} reads its server key from the environment variable "
                f"{model.api_key_env} (interp.models.api_key_env), which is not set here")
    if not value.strip():
        return (f"model {model.name!r} reads its server key from the environment variable "
                f"{model.api_key_env}, which is empty")
    if not _KEY_CHARS.match(value.strip()):
        return (f"the environment variable {model.api_key_env} (the server key of model "
                f"{model.name!r}) holds a space, a line break or a non-ASCII character, "
                f"which an HTTP header cannot carry")
    return None


def _key_from_env(name: str, env: str) -> str:
    problem = key_env_problem(ModelDef(name, "", api_key_env=env))
    if problem:
        raise ModelLoadError(problem)
    return os.environ[env].strip()


def _http_json(url: str, body: dict[str, Any] | None, timeout: float,
               access: ServerAccess) -> dict[str, Any]:
    """GET (no body) or POST JSON to url with access's key and TLS context; the
    decoded JSON answer. Every message it raises is scrubbed of the key (a
    server's error text may echo the request)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers=access.headers())
    clean = access.scrub
    try:
        with access.open(req, max(0.1, timeout)) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        # Scrubbed before it is cut to 300 characters: a cut through the key would
        # leave a prefix of it that the scrub no longer recognises.
        detail = clean(exc.read(ECHO_READ_BYTES).decode("utf-8", "replace"))[:300]
        msg = f"HTTP {exc.code} from {url}: {' '.join(detail.split())}"
        if exc.code == 400 and "context" in detail.lower():
            raise PromptTooLong(msg) from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise ServerDown(msg) from exc
        if exc.code in (401, 403):
            msg += (f" (the key from ${access.key_env} was refused)" if access.key_env else
                    f" (the server wants a key: {KEY_WAY})")
        elif 300 <= exc.code < 400:
            msg += " (redirects are not followed: name the URL it points to)"
        raise GenerationError(msg) from exc      # the request's fault: no other server helps
    except TimeoutError as exc:
        raise ServerTimedOut(f"{url} timed out after {timeout:.1f}s") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ServerTimedOut(f"{url} timed out after {timeout:.1f}s") from exc
        reason = exc.reason if isinstance(exc.reason, BaseException) else exc
        hint = (" (a private CA? name its PEM file in interp.models.ca_bundle)"
                if isinstance(reason, ssl.SSLCertVerificationError) else "")
        raise ServerDown(clean(f"{url}: {first_line(reason)}{hint}")) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # a dropped connection, a half-sent answer, or something that is not JSON
        raise ServerDown(clean(f"{url}: {type(exc).__name__}: {first_line(exc)}")) from exc
    if not isinstance(answer, dict):
        raise ServerDown(f"{url}: the answer is not a JSON object")
    return answer


def _completion(resp: dict[str, Any], url: str, gen_ms: float) -> Generation:
    try:
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        return Generation(text=(choice.get("message") or {}).get("content") or "",
                          finish_reason=choice.get("finish_reason") or "stop",
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          gen_ms=gen_ms, prompt_tokens_reused=server_cached_tokens(usage))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ServerDown(f"{url}: not an OpenAI chat completion: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc


class _ServerState:
    """A server's load and its small breaker. Guarded by its RemoteBackend's lock."""

    def __init__(self, endpoint: Endpoint):
        self.url = endpoint.url
        self.parallel = endpoint.parallel
        self.remote_id: str | None = None   # the model id its /v1/models names
        self.in_flight = 0
        self.failures = 0           # consecutive: each one doubles the cool-down
        self.down_until = 0.0       # monotonic; taken out until then
        self.last_error: str | None = None
        self.served = 0

    def is_up(self, now: float) -> bool:
        return now >= self.down_until

    def capacity(self) -> int:
        # Back from a cool-down, one request probes the server before it gets
        # all its slots again, so a fleet of waiting threads does not pile onto
        # a server that is still dead.
        return 1 if self.failures else self.parallel


class RemoteBackend:
    """One model row served by OpenAI-compatible servers (llama.cpp's llama-server,
    vLLM, ``python -m llama_cpp.server``), one or several.

    Thread-safe: any number of threads may call generate() at once; each server
    gets at most its ``parallel`` requests (further callers wait for a slot), so
    `slots` threads keep every server busy. A request goes to the up server with
    the fewest requests in flight (ties in turn). A server that fails
    (unreachable, a 5xx or 429, a timeout) is taken out for a cool-down (5 s,
    doubling per consecutive failure up to 60 s; then one request probes it) and
    the request is retried on another server; only when every server is out does
    generate() raise GenerationError, which the model actor counts as an actor
    failure.
    """

    def __init__(self, model: ModelDef, *, timeout: float = 30.0,
                 cooldown_s: float = REMOTE_COOLDOWN_S,
                 max_cooldown_s: float = REMOTE_MAX_COOLDOWN_S):
        self.model = model
        self.name = model.name
        self.timeout = timeout
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.sha256 = model.sha256
        self.size_bytes = 0
        self.n_ctx = model.n_ctx
        self._servers = [_ServerState(e) for e in remote_endpoints(model.source)]
        self.access = ServerAccess(model)      # reads the key from the environment now
        self._lock = threading.Condition()
        self._turn = 0              # where the round-robin among equally loaded servers is
        self._waiting: list[set[str]] = []    # requests waiting for a slot, oldest first:
                                              # the servers each has tried
        started = time.perf_counter()
        self._probe_all()
        self.load_ms = (time.perf_counter() - started) * 1000

    @property
    def slots(self) -> int:
        """Requests this backend keeps in flight at most: the sum of the servers'
        ``parallel`` (up or not: a wave is sized once, and a server out for a
        cool-down just makes its callers wait for the others)."""
        return sum(s.parallel for s in self._servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self._servers]

    def _probe_all(self) -> None:
        """Asks every server for its model id at once; servers that do not answer
        start in a cool-down; raises ModelLoadError when none answers."""
        errors: dict[str, str] = {}

        def probe(server: _ServerState) -> None:
            try:
                info = _http_json(server.url + "/v1/models", None, self.timeout, self.access)
                data = info.get("data") or []
                server.remote_id = data[0].get("id") if data else None
            except (GenerationError, AttributeError, TypeError) as exc:
                errors[server.url] = first_line(exc)

        threads = [threading.Thread(target=probe, args=(s,), name="remote-probe", daemon=True)
                   for s in self._servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(errors) == len(self._servers):
            where = "; ".join(f"{url}: {err}" for url, err in errors.items())
            raise ModelLoadError(f"model server for {self.name!r} is not answering: {where}")
        for server in self._servers:
            if server.url in errors:
                self._mark_down(server, errors[server.url], time.monotonic())

    def generate(self, request: GenerationRequest) -> Generation:
        deadline, should_stop = request.deadline, request.should_stop
        body: dict[str, Any] = {"messages": request.chat(), "seed": request.seed,
                                "max_tokens": request.max_tokens}
        body.update({k: request.sampling[k] for k in SAMPLING_KEYS if k in request.sampling})
        if request.schema is not None:
            body["response_format"] = {"type": "json_object", "schema": request.schema}
        started = time.perf_counter()
        waited_ms = 0.0     # in _take_slot, all tries together: not generation time

        def ended(reason: str) -> Generation:
            total_ms = (time.perf_counter() - started) * 1000
            return Generation("", reason, 0, 0, total_ms - waited_ms, wait_ms=waited_ms)

        tried: set[str] = set()
        while True:
            asked = time.perf_counter()
            server = self._take_slot(tried, deadline, should_stop)
            waited_ms += (time.perf_counter() - asked) * 1000
            if isinstance(server, str):
                return ended(server)
            tried.add(server.url)
            timeout = self.timeout if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                self._give_back(server, ok=False, blame=None)
                return ended("timeout")
            try:
                gen = self._send_unless_stopped(server, body, timeout, deadline is not None,
                                                should_stop, started)
            except ServerTimedOut:
                if deadline is not None:
                    return ended("timeout")     # the subject's time ran out, on any server
                continue
            except GenerationError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    return ended("timeout")
                if isinstance(exc, ServerDown):
                    continue        # that server is out now: the next free one takes it
                raise
            if gen is None:
                return ended("aborted")
            gen.gen_ms, gen.wait_ms = gen.gen_ms - waited_ms, waited_ms
            return gen

    def _take_slot(self, tried: set[str], deadline: float | None,
                   should_stop: Callable[[], bool] | None) -> _ServerState | str:
        """A slot on the least loaded up server not yet tried by this request,
        waiting while all such servers are full; "timeout" or "aborted" when the
        deadline or the stop flag comes first. Raises GenerationError when no
        untried server is up. Slots go to waiting requests in the order they
        came, so a subject is not starved by the ones that came after it (the
        next wave's, when two waves are in flight)."""
        with self._lock:
            self._waiting.append(tried)
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    up = [(i, s) for i, s in enumerate(self._servers)
                          if s.url not in tried and s.is_up(now)]
                    if not up:
                        raise GenerationError(self._down_message(now))
                    free = [(i, s) for i, s in up if self._free_for(tried, s)]
                    if free:
                        n = len(self._servers)
                        i, server = min(free, key=lambda pair: (pair[1].in_flight,
                                                                (pair[0] - self._turn) % n))
                        self._turn = (i + 1) % n
                        server.in_flight += 1
                        return server
                    self._lock.wait(0.1)   # a slot frees, or a cool-down ends, or a stop
                if deadline is not None and time.monotonic() >= deadline:
                    return "timeout"
                if should_stop is not None and should_stop():
                    return "aborted"
        finally:
            with self._lock:
                # by identity: two requests' tried sets are often equal (both empty)
                del self._waiting[next(i for i, w in enumerate(self._waiting) if w is tried)]
                self._lock.notify_all()     # the next in line may take what this left

    def _free_for(self, tried: set[str], server: _ServerState) -> bool:
        """Whether server has a slot for this waiting request once the requests
        waiting before it that could use the server have had theirs. The oldest
        waiter has no one before it, so some request can always proceed."""
        ahead = 0
        for earlier in self._waiting:
            if earlier is tried:
                break
            ahead += server.url not in earlier
        return server.in_flight + ahead < server.capacity()

    def _down_message(self, now: float) -> str:
        parts = []
        for s in self._servers:
            back = f", out for {s.down_until - now:.1f}s more" if not s.is_up(now) else ""
            parts.append(f"{s.url}: {s.last_error or 'failed for this request'}{back}")
        if len(self._servers) == 1:
            return f"model server for {self.name!r} is down: {parts[0]}"
        return (f"all {len(self._servers)} model servers for {self.name!r} are down: "
                + "; ".join(parts))

    def _send_unless_stopped(self, server: _ServerState, body: dict[str, Any],
                             timeout: float, timeout_is_deadline: bool,
                             should_stop: Callable[[], bool] | None,
                             started: float) -> Generation | None:
        """The completion from server (its slot already taken); None when
        should_stop() turned true first: the request is then abandoned on its
        thread (the server finishes it alone, and its slot stays taken until it
        does, since the server is still busy with it)."""
        if should_stop is None:
            return self._send(server, body, timeout, timeout_is_deadline, started)
        box: dict[str, Any] = {}
        done = threading.Event()

        def send() -> None:
            try:
                box["gen"] = self._send(server, body, timeout, timeout_is_deadline, started)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=send, name="remote-generate", daemon=True).start()
        while not done.wait(0.1):
            if should_stop():
                return None
        if "error" in box:
            raise box["error"]
        return box["gen"]

    def _send(self, server: _ServerState, body: dict[str, Any], timeout: float,
              timeout_is_deadline: bool, started: float) -> Generation:
        """One request on a taken slot; gives the slot back and keeps the server's
        breaker: a ServerDown takes the server out, a success brings it back."""
        if server.remote_id:
            body = {**body, "model": server.remote_id}
        ok, blame = False, None
        try:
            resp = _http_json(server.url + "/v1/chat/completions", body, timeout, self.access)
            gen = _completion(resp, server.url, (time.perf_counter() - started) * 1000)
            ok = True
        except ServerTimedOut as exc:
            # Past the subject's own deadline the subject timed out, not the server.
            blame = None if timeout_is_deadline else str(exc)
            raise
        except ServerDown as exc:
            blame = str(exc)
            raise
        finally:
            self._give_back(server, ok=ok, blame=blame)
        return gen

    def _give_back(self, server: _ServerState, *, ok: bool, blame: str | None) -> None:
        with self._lock:
            server.in_flight -= 1
            if blame is not None:
                self._mark_down(server, blame, time.monotonic())
            elif ok:
                server.failures, server.down_until = 0, 0.0
                server.served += 1
            self._lock.notify_all()

    def _mark_down(self, server: _ServerState, error: str, now: float) -> None:
        with self._lock:
            server.last_error = error
            if not server.is_up(now):
                return      # another request's report of the same outage
            server.failures += 1
            pause = self.cooldown_s * 2 ** (server.failures - 1)
            server.down_until = now + min(self.max_cooldown_s, pause)

    def count_tokens(self, text: str) -> int | None:
        return None   # the server's tokenizer is not ours; it refuses long prompts itself

    def count_prompt(self, messages: Messages) -> int | None:
        return None

    def truncate_middle(self, text: str, max_tokens: int, marker: str = "\n[...]\n") -> str:
        return text

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            servers = [{"url": s.url, "parallel": s.parallel, "up": s.is_up(now),
                        "in_flight": s.in_flight, "served": s.served,
                        "last_error": s.last_error} for s in self._servers]
            waiting = len(self._waiting)
        return {"chat_format": "the server's", "chat_format_chosen_by": ", ".join(self.urls),
                "slots": self.slots, "waiting": waiting, "servers": servers}

    def close(self) -> None:
        pass


def open_remote(model: ModelDef, settings: OpenSettings) -> RemoteBackend:
    """The pool's opener for http(s) sources."""
    return RemoteBackend(model, timeout=settings.remote_timeout)


def remote_slots(model: ModelDef) -> int:
    """Requests a server row keeps in flight, known without contacting its servers:
    the sum of their ``#parallel`` (as `RemoteBackend.slots` counts them)."""
    return sum(e.parallel for e in remote_endpoints(model.source))
