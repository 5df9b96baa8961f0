"""`interp models ...`: the models known to the database, and whether each loads."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click
from tabulate import tabulate

from ..admin import read_models, record_model_file
from ..definitions import ModelDef
from ..errors import NotFound
from ..ops.figures import tokens_per_s
from .context import emit_json

if TYPE_CHECKING:
    from ..db import Database


def _read_models(db: Database, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    rows = db.run(lambda conn: read_models(conn, names))
    missing = sorted(set(names) - {r["name"] for r in rows})
    if missing:
        raise NotFound(f"no such model in interp.models: {', '.join(missing)} "
                       f"(see `interp models list`)")
    return rows


def _record_file(db: Database, name: str, report: dict[str, Any]) -> None:
    db.run(lambda conn: record_model_file(conn, name, report["sha256"], report["size_bytes"]))


def _where(source: str) -> tuple[str, str]:
    """(path, state) for a source, without loading or assembling anything."""
    from ..llm.backend import ModelLoadError
    from ..llm.files import locate, names_server
    from ..llm.remote import redact_source

    if names_server(source):
        return redact_source(source), "remote"
    try:
        path = locate(source)
    except ModelLoadError as exc:
        return "", f"unresolvable: {exc}"
    assert path is not None
    if path.is_file():
        return str(path), "present"
    if source == "gemma3-270m":
        return str(path), "assembled on first use"
    return str(path), "missing"


@click.group()
def models() -> None:
    """Models known to the database (interp.models), and whether each loads.

    Example:

        interp models list
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def models_list(obj: Any, as_json: bool) -> None:
    """List interp.models with each source's resolved file and whether it exists.

    A source is a file path, pkg:<module>/<file> (a file inside an installed
    Python package), gemma3-270m, or http(s)://host:port (a llama.cpp server).
    A server's key is shown by the name of its environment variable
    (api_key_env), never by value.

    Example:

        interp models list --json
    """
    rows = _read_models(obj.db)
    out = []
    for r in rows:
        path, state = _where(r["source"])
        source = path if state == "remote" else r["source"]    # secrets in a URL masked
        out.append({"name": r["name"], "source": source, "path": path, "file": state,
                    "n_gpu_layers": r["n_gpu_layers"], "n_ctx": r["n_ctx"],
                    "n_threads": r["n_threads"], "chat_format": r["chat_format"],
                    "sampling": r["sampling"], "sha256": r["sha256"],
                    "size_bytes": r["size_bytes"], "api_key_env": r.get("api_key_env"),
                    "ca_bundle": r.get("ca_bundle"), "prefix_cache_mb": r.get("prefix_cache_mb")})
    if as_json:
        emit_json(out)
        return
    if not out:
        click.echo("no models in interp.models", err=True)
        return
    table = [{k: (v[:12] if k == "sha256" and v else v) for k, v in row.items()
              if k not in ("sampling", "n_threads", "chat_format", "size_bytes", "ca_bundle",
                           "prefix_cache_mb")}
             for row in out]
    click.echo(tabulate(table, headers="keys"))


def off_main_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs fn on a worker thread and waits. On a busy machine llama.cpp generates
    much slower on the main thread than on any other (docs/benchmarks.md, "Model
    overhead and switches"); the run loop's model lane is a thread of its own, so
    `models check` is too."""
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="models-check") as pool:
        return pool.submit(fn, *args, **kwargs).result()


def check_model(model: ModelDef, *, max_tokens: int = 16, n_threads: int | None = None,
                prompt: str = "Say hello in five words.") -> dict[str, Any]:
    """Load one model, generate a few tokens; a report dict (ok False with error on failure)."""
    from ..llm.backend import GenerationError, GenerationRequest, ModelLoadError, OpenSettings
    from ..llm.pool import open_backend
    from ..llm.remote import redact_source

    report: dict[str, Any] = {"name": model.name, "source": redact_source(model.source),
                              "ok": False}
    started = time.perf_counter()
    try:
        backend = open_backend(model, OpenSettings(n_threads=n_threads))
    except ModelLoadError as exc:
        report["error"] = str(exc)
        return report
    report["load_ms"] = round((time.perf_counter() - started) * 1000, 1)
    report["sha256"] = backend.sha256
    report["size_bytes"] = backend.size_bytes
    # How it runs here (chat format and threads, and what chose them), so a wrong
    # turn format or a spinning thread pool is visible before a night run.
    report.update(backend.describe())
    try:
        gen = backend.generate(GenerationRequest(prompt, sampling={"temperature": 0.0},
                                                 seed=0, max_tokens=max_tokens,
                                                 deadline=time.monotonic() + 120))
        # The prefix cache after the check's prompt (a local model's; its budget
        # is the row's prefix_cache_mb).
        cache = backend.describe().get("prefix_cache")
        if cache is not None:
            report["prefix_cache"] = cache
    except GenerationError as exc:
        report["error"] = f"generation failed: {exc}"
        return report
    finally:
        backend.close()
    report.update(ok=True, prompt_tokens=gen.prompt_tokens,
                  completion_tokens=gen.completion_tokens, gen_ms=round(gen.gen_ms, 1),
                  tokens_per_s=tokens_per_s(gen.completion_tokens, gen.gen_ms / 1000),
                  sample=gen.text[:80])
    return report


def _prefix_cache(report: dict[str, Any]) -> str:
    """e.g. `1 entries 0.4/256 MiB, 0 hits, 0 reused`; `off` for a budget of 0."""
    cache = report.get("prefix_cache")
    if not cache:
        return ""
    if not cache["budget_bytes"]:
        return "off"
    mib = 1 << 20
    return (f"{cache['entries']} entries {cache['used_bytes'] / mib:.1f}/"
            f"{cache['budget_bytes'] / mib:g} MiB, {cache['hits']} hits, "
            f"{cache['tokens_reused']} reused")


def _chosen(value: Any, chosen_by: Any) -> str:
    return f"{value} ({chosen_by})" if value is not None and chosen_by else str(value or "")


def _threads(report: dict[str, Any]) -> str:
    """e.g. `1/1 (rule) omp=passive`: generation/batch threads, what chose them, wait policy
    (and `extra-buffers=off` when the AMX guard of llama_build.py is on)."""
    if report.get("n_threads") is None:
        return ""
    policy = report.get("omp_wait_policy")
    return (f"{report['n_threads']}/{report.get('n_threads_batch')} "
            f"({report.get('threads_chosen_by')})" + (f" omp={policy}" if policy else "")
            + (" extra-buffers=off" if report.get("extra_buffers") is False else ""))


@models.command("check")
@click.argument("names", nargs=-1)
@click.option("--max-tokens", default=16, show_default=True, type=click.IntRange(1, 4096),
              help="Tokens to generate per model.")
@click.option("--record/--no-record", default=True, show_default=True,
              help="Store the sha256 and size of files whose row has none yet.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def models_check(obj: Any, names: tuple[str, ...], max_tokens: int, record: bool,
                 as_json: bool) -> None:
    """Load each model (or the NAMES given), generate a few tokens, report load time and tokens/s.

    A local model's prefix cache is shown after the check's prompt: entries,
    MiB used of the budget (interp.models.prefix_cache_mb), hits and prompt
    tokens reused.

    Exits non-zero when any model fails to load or generate. With --record
    (the default), the first successful check stores each file's sha256 and
    size in interp.models where the row has none; later loads then refuse a
    file whose sha256 differs.

    Example:

        interp models check smollm2 --max-tokens 32 --json
    """
    rows = _read_models(obj.db, names)
    reports = []
    for row in rows:
        report = off_main_thread(check_model, ModelDef.from_row(row), max_tokens=max_tokens)
        reports.append(report)
        if record and report["ok"] and report.get("sha256") and not row["sha256"]:
            _record_file(obj.db, row["name"], report)
            report["recorded_sha256"] = True
    if as_json:
        emit_json(reports)
    else:
        table = [{"name": r["name"], "ok": r["ok"], "load_ms": r.get("load_ms"),
                  "tokens": r.get("completion_tokens"), "tokens/s": r.get("tokens_per_s"),
                  "chat format": _chosen(r.get("chat_format"), r.get("chat_format_chosen_by")),
                  "threads": _threads(r), "prefix cache": _prefix_cache(r),
                  "error": r.get("error", "")} for r in reports]
        click.echo(tabulate(table, headers="keys") if table else "no models in interp.models")
    failed = [r["name"] for r in reports if not r["ok"]]
    if failed:
        click.echo(f"error: {len(failed)} model(s) failed: {', '.join(failed)}", err=True)
        raise SystemExit(1)
