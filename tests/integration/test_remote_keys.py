"""Model servers that want a bearer key, and TLS: the row names an environment
variable (interp.models.api_key_env), the worker sends `Authorization: Bearer`,
and the key is found nowhere interp writes or prints. Certificates are verified;
a private CA is named by interp.models.ca_bundle. A secret in a URL is refused.

The fake servers are small threaded HTTP(S) servers on 127.0.0.1; the last test
runs a real `python -m llama_cpp.server --api_key` with SmolLM2."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from interpreter.definitions import ModelDef
from interpreter.llm.backend import GenerationError, GenerationRequest, ModelLoadError
from interpreter.llm.remote import RemoteBackend, ServerAccess, redact_source, remote_endpoints
from tests.helpers import add_items, make_workflow, stop_process

KEY = "sk-test-0123456789abcdef-NOT-A-REAL-KEY"
ENV = "INTERP_TEST_SERVER_KEY"
SAMPLING = {"temperature": 0.0}


class KeyedServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that wants `Bearer <key>`
    (401 otherwise), optionally over TLS. `echo` makes it answer 400 with the
    request's headers in the body, as a careless gateway might. `redirect_to`
    makes it answer every request with a 307 there."""

    def __init__(self, key: str | None = KEY, tls: ssl.SSLContext | None = None):
        self.key, self.echo, self.redirect_to = key, False, None
        self.echo_500 = None    # (Authorization header) -> body of a 500 answer
        self.seen: list[dict[str, str]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _allowed(self) -> bool:
                server.seen.append(dict(self.headers))
                if server.redirect_to:
                    self._answer(307, {}, {"Location": server.redirect_to + self.path})
                    return False
                if server.echo_500 is not None:
                    data = server.echo_500(self.headers.get("Authorization") or "")
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return False
                if server.echo:
                    self._answer(400, {"error": "bad request", "headers": dict(self.headers)})
                    return False
                if server.key and self.headers.get("Authorization") != f"Bearer {server.key}":
                    self._answer(401, {"error": {"message": "Invalid API key"}})
                    return False
                return True

            def do_GET(self):
                if self._allowed():
                    self._answer(200, {"data": [{"id": "fake"}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self._allowed():
                    text = body["messages"][-1]["content"]
                    self._answer(200, {"choices": [{"message": {"content": f"ok:{text}"},
                                                    "finish_reason": "stop"}],
                                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

        return Handler


@pytest.fixture
def keyed():
    server = KeyedServer()
    yield server
    server.close()


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    return ENV


def _model(url: str, **kw) -> ModelDef:
    return ModelDef("keyed", url, api_key_env=kw.pop("api_key_env", ENV), **kw)


def _generate(backend: RemoteBackend) -> str:
    gen = backend.generate(GenerationRequest(
        "hi", schema=None, sampling=SAMPLING, seed=1, max_tokens=4, deadline=time.monotonic() + 10))
    return gen.text


# ---------------------------------------------------------------- the key

def test_the_key_is_read_from_the_environment_and_sent_as_bearer(keyed, with_key):
    backend = RemoteBackend(_model(keyed.url), timeout=5)
    assert _generate(backend) == "ok:hi"
    assert {h.get("Authorization") for h in keyed.seen} == {f"Bearer {KEY}"}
    # The backend's own descriptions never hold it.
    assert KEY not in repr(backend.access) and ENV in repr(backend.access)
    assert KEY not in json.dumps(backend.describe(), default=str)


def test_without_the_key_the_server_refuses_and_the_message_says_how(keyed):
    with pytest.raises(ModelLoadError) as err:
        RemoteBackend(ModelDef("keyed", keyed.url), timeout=5)
    assert "HTTP 401" in str(err.value) and "api_key_env" in str(err.value)


def test_a_wrong_key_is_refused_and_named_by_its_variable(keyed, monkeypatch):
    monkeypatch.setenv(ENV, "sk-wrong-key-value")
    with pytest.raises(ModelLoadError) as err:
        RemoteBackend(_model(keyed.url), timeout=5)
    assert "HTTP 401" in str(err.value) and f"${ENV}" in str(err.value)
    assert "sk-wrong-key-value" not in str(err.value)


@pytest.mark.parametrize("value, says", [(None, "is not set"), ("  ", "is empty"),
                                         ("sk-a\r\nX-Evil: 1", "line break")])
def test_a_missing_or_unusable_variable_is_one_line_naming_it(keyed, monkeypatch, value, says):
    if value is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, value)
    with pytest.raises(ModelLoadError) as err:
        RemoteBackend(_model(keyed.url), timeout=5)
    message = str(err.value)
    assert ENV in message and says in message and "\n" not in message
    assert keyed.seen == []                  # refused before any request
    if value:
        assert "sk-a" not in message


def test_a_server_echoing_the_request_gets_the_key_scrubbed(keyed, with_key):
    backend = RemoteBackend(_model(keyed.url), timeout=5)
    keyed.echo = True
    with pytest.raises(GenerationError) as err:
        _generate(backend)
    assert "HTTP 400" in str(err.value) and "[redacted]" in str(err.value)
    assert KEY not in str(err.value)
    assert KEY not in str(err.value.__cause__)


# A base64-like key with the characters encoders change: / + = and a quote.
ODD_KEY = 'sk-AbC/def+GHI=jkl"mno\\pqr0123456789=='


@pytest.mark.parametrize("echo", [
    # the header cut by the 300-character limit of the message: its prefix is a secret too
    pytest.param(lambda auth: ("x" * 280 + " " + auth).encode(), id="cut-at-300"),
    pytest.param(lambda auth: json.dumps({"auth": auth}).encode(), id="json"),
    pytest.param(lambda auth: json.dumps({"auth": auth}).replace("/", "\\/").encode(),
                 id="json-escaped-slash"),
    pytest.param(lambda auth: ("auth=" + urllib.parse.quote(auth, safe="")).encode(),
                 id="percent-encoded"),
    pytest.param(lambda auth: ("auth=" + urllib.parse.quote_plus(auth)).encode(), id="form"),
    pytest.param(lambda auth: auth.upper().encode(), id="upper-case")])
def test_a_500_echoing_the_key_in_any_form_is_scrubbed(keyed, monkeypatch, echo):
    """A server's 500 becomes the wave's error (checkpoints' error column, the log):
    no form of the key, and no 8 characters of it in a row, may be in it."""
    monkeypatch.setenv(ENV, ODD_KEY)
    keyed.key = ODD_KEY
    backend = RemoteBackend(_model(keyed.url), timeout=5)
    keyed.echo_500 = echo
    with pytest.raises(GenerationError) as err:
        _generate(backend)
    message = str(err.value)
    assert "HTTP 500" in message and "[redacted]" in message, message
    secret = ODD_KEY[3:]        # what follows "sk-"
    pieces = {secret[i:i + 8].lower() for i in range(len(secret) - 7)}
    readings = {message, urllib.parse.unquote_plus(message),
                message.replace("\\/", "/").replace('\\"', '"').replace("\\\\", "\\")}
    assert not [p for p in pieces for text in readings if p in text.lower()], message


def test_a_redirect_is_not_followed_so_the_key_stays_home(keyed, with_key):
    elsewhere = KeyedServer(key=None)
    try:
        keyed.redirect_to = elsewhere.url
        with pytest.raises(ModelLoadError) as err:
            RemoteBackend(_model(keyed.url), timeout=5)
        assert "HTTP 307" in str(err.value) and "redirects are not followed" in str(err.value)
        assert elsewhere.seen == []
    finally:
        elsewhere.close()


def test_access_repr_and_scrub():
    os.environ[ENV] = KEY
    try:
        access = ServerAccess(_model("http://127.0.0.1:1"))
    finally:
        del os.environ[ENV]
    assert KEY not in repr(access)
    assert access.scrub(f"x {KEY} y") == "x [redacted] y"
    assert access.headers()["Authorization"] == f"Bearer {KEY}"
    os.environ[ENV] = "k1"
    try:
        short = ServerAccess(_model("http://127.0.0.1:1"))
    finally:
        del os.environ[ENV]
    assert short.scrub('Name not known; "Bearer k1"') == 'Name not known; "Bearer [redacted]"'


# ---------------------------------------------------------------- secrets in URLs

@pytest.mark.parametrize("source", ["https://bob:hunter2secret@gpu.example:8443",
                                    "http://10.0.0.1:8080, https://hunter2secret@gpu2#parallel=2",
                                    "https://gpu.example/v1?api_key=hunter2secret",
                                    # where a source is split into servers, or at an @
                                    "https://bob:hunter2,secret@gpu.example:8443",
                                    "https://bob:hunter2 secret@gpu.example:8443",
                                    "https://bob:hunter2@secret@gpu.example:8443",
                                    "https://gpu.example/v1?key=hunter2 secret#parallel=2"])
def test_a_secret_in_a_url_is_refused_masked_with_the_way(source):
    with pytest.raises(ModelLoadError) as err:
        remote_endpoints(source)
    message = str(err.value)
    for part in ("hunter2", "secret"):
        assert part not in message and part not in redact_source(source), message
    assert "api_key_env" in message and "***" in message


def test_validate_refuses_a_password_in_the_url(conn, cli):
    _keyed_workflow(conn, 61, "https://bob:hunter2secret@gpu.example:8443")
    proc = cli("workflow", "validate", "61", check=False)
    assert proc.returncode == 1
    problems = [line for line in proc.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, proc.stdout
    assert "user or password" in problems[0] and "api_key_env" in problems[0]
    assert "hunter2secret" not in proc.stdout + proc.stderr
    listed = cli("models", "list", "--json")
    assert "hunter2secret" not in listed.stdout


def test_a_run_is_refused_before_it_starts_when_the_variable_is_not_set(conn, cli, keyed,
                                                                        monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    _keyed_workflow(conn, 62, keyed.url)
    proc = cli("run", "--workflow", "62", "--until-idle", check=False)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: workflow 62 is not valid") and ENV in line, proc.stderr
    assert keyed.seen == []
    assert conn.execute("SELECT count(*) AS n FROM interp.runs").fetchone()["n"] == 0
    # validate shows it as a warning: it may run where the workers' secrets are not
    checked = cli("workflow", "validate", "62")
    assert ENV in checked.stderr and "warning:" in checked.stderr


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_is_verified_by_default_and_a_ca_bundle_is_accepted(self_signed, with_key):
    cert, key = self_signed
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = KeyedServer(tls=tls)
    try:
        with pytest.raises(ModelLoadError) as err:
            RemoteBackend(_model(server.url), timeout=5)
        assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        assert "ca_bundle" in str(err.value)
        assert server.seen == []            # no request (no key) went out unverified
        backend = RemoteBackend(_model(server.url, ca_bundle=str(cert)), timeout=5)
        assert _generate(backend) == "ok:hi"
        assert {h.get("Authorization") for h in server.seen} == {f"Bearer {KEY}"}
    finally:
        server.close()


def test_a_ca_bundle_that_is_not_there_is_one_line(with_key, tmp_path):
    with pytest.raises(ModelLoadError) as err:
        RemoteBackend(_model("https://127.0.0.1:1", ca_bundle=str(tmp_path / "no.pem")),
                      timeout=5)
    assert "ca_bundle" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- a real server

@pytest.mark.model
@pytest.mark.slow
def test_a_real_llama_server_with_a_key(smollm2, conn, cli, monkeypatch, tmp_path):
    """`python -m llama_cpp.server --api_key`: 401 without the key; a model step
    through `interp run` with the key; then the key is in no interp table, not in
    the worker's log (-v), `interp models list` or `interp workflow export`."""
    pytest.importorskip("llama_cpp.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2), "--port", str(port),
         "--host", "127.0.0.1", "--n_ctx", "512", "--api_key", KEY, "--verbose", "False",
         "--n_threads", os.environ.get("INTERP_TEST_MODEL_THREADS", "1")],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while _status(url + "/v1/models") is None:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert _status(url + "/v1/chat/completions", {"messages": []}) == 401
        assert _status(url + "/v1/models", key="sk-wrong") == 401
        with pytest.raises(ModelLoadError):
            RemoteBackend(ModelDef("plain", url), timeout=30)   # no key: refused at open

        monkeypatch.setenv(ENV, KEY)
        _keyed_workflow(conn, 63, f"{url}#parallel=1")
        add_items(conn, 2, title="Data engineer {i}")
        run = cli("-v", "run", "--workflow", "63", "--until-idle", "--quiet")
        done = conn.execute("SELECT count(*) AS n FROM interp.checkpoints WHERE workflow_id = 63 "
                            "AND step = 1 AND outcome = 'DONE' AND completion_tokens > 0"
                            ).fetchone()["n"]
        assert done == 2, run.stderr[-3000:]
        listed = cli("models", "list") .stdout + cli("models", "list", "--json").stdout
        assert ENV in listed
        exported = cli("workflow", "export", "63").stdout
        assert f"'{ENV}'" in exported
        checked = cli("models", "check", "keyed", "--json", "--max-tokens", "2")
        seen = {"the worker's log": run.stdout + run.stderr, "models list": listed,
                "export": exported, "models check": checked.stdout + checked.stderr,
                "the interp tables": _dump_interp(conn)}
        assert {where: KEY in text for where, text in seen.items()} == \
            {where: False for where in seen}
    finally:
        stop_process(proc)
        log.close()


def _status(url: str, body: dict | None = None, key: str | None = None) -> int | None:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None
                                 else None, headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _dump_interp(conn) -> str:
    """Every row of every table in the interp schema, as text."""
    tables = [r["t"] for r in conn.execute(
        "SELECT format('%I.%I', table_schema, table_name) AS t FROM information_schema.tables "
        "WHERE table_schema = 'interp'")]
    assert "interp.checkpoints" in tables and "interp.models" in tables
    return "\n".join(str(r["row"]) for t in tables
                     for r in conn.execute(f"SELECT x::text AS row FROM {t} x"))


def _keyed_workflow(conn, wf: int, source: str) -> None:
    conn.execute("INSERT INTO interp.models (name, source, n_ctx, api_key_env) "
                 "VALUES ('keyed', %s, 512, %s)", (source, ENV))
    conn.execute("INSERT INTO interp.actors (name, kind, target, params) VALUES "
                 "('keyed_actor', 'model', 'keyed', '{\"max_tokens\": 8, \"reask\": 0}')")
    conn.execute("INSERT INTO interp.prompt_templates (name, body) VALUES ('kt', "
                 "'Say one word about: {{ title }}')")
    make_workflow(conn, wf, steps=[{"number": 1, "actor": "keyed_actor", "template": "kt"}],
                  transitions=[(1, "*", None)])
