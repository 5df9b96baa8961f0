"""The model runtime's wing: everything that loads a model and generates with it.

- `backend`: the `Backend` protocol every kind implements, the `GenerationRequest`
  it takes, the `Generation` it gives back, and the wing's errors;
- `files`: where a source's GGUF is, and its digest;
- `llama_backend`: llama.cpp in this process (one sequence, or batched), and its
  threads; `decode` (the sequential decode loop), `token_sampling` (the model's
  pick first, the grammar only to check it), `drafting` (prompt-lookup drafts),
  `batched` (continuous batching), `chat_format`, `llama_build` (what the build
  does here), `cpu_share` (free CPUs per prompt), `native_log` (llama.cpp's log);
- `remote`: OpenAI-compatible servers; `remote_checks`: what `validate` checks
  of their rows (asked through the pool's table);
- `pool`: the only place that knows the backend kinds (one table keyed by the
  source's scheme, `register_backend_kind`), and the `ModelPool`.

The engine's rooms (the model lane, the model actor) use the pool and the
protocol; none of them names a backend kind.
"""
