"""Token sampling on a loaded ``llama_cpp.Llama`` with llama.cpp's low-level
sampler API, so that constrained decoding costs about what unconstrained does.

llama-cpp-python builds its sampler chain with the grammar *before* top-k and
greedy, so for every token the grammar checks the whole vocabulary (262,144
entries for Gemma 3): one such pass costs more than a decode step on a small
model. Here each token is sampled from the model's own distribution first
(``chain``: penalties, then greedy or top-k/typical/top-p/min-p/temperature/dist,
the same order as llama-cpp-python's), and only the chosen token is checked
against the grammar (a one-entry candidate array). When the grammar rejects it,
the grammar is applied to the 64 most likely tokens and the chain samples among
those it allows; when none of them is allowed, to the top 1,024, 16,384, then
65,536 (`TOP_TIERS`); only when none of those is allowed does the grammar mask
the whole vocabulary. The accepted token then advances the grammar and the chain.
With a greedy chain and no penalties, the model's pick is the arg-max of the
logits, read without filling a candidate array.

At temperature 0 this picks exactly the token the grammar-first chain picks: the
most likely token that the grammar allows (if any of the k most likely tokens
is allowed, the best allowed token is among them). At temperature > 0 it follows
llama.cpp's common sampler (sample, check, resample on rejection), seeded per
call so that a rerun with the same seed repeats; the one difference is that a
resample first draws among the allowed tokens of the top 64, whose probabilities
are then normalised over those tokens only (the chain's top_k is 40 by default,
so the candidates rarely differ).

Jump-forward (`forced`, on unless the sampling's ``jump_forward`` is false): a
sampler with a grammar also follows it in Python over the accepted tokens, and
says which tokens the grammar forces next (`forced`), for the decoders to add
without sampling; each is checked by llama.cpp's grammar (`allows`) and then
accepted like a sampled one.

Not thread-safe: one `TokenSampler` per generation; the samplers of one model share
its `SamplerBuffers` and sample one at a time (the sequential decoder, `decode`, and
the batching engine, `batched`, each sample on one thread).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from ..errors import InvalidValue
from .backend import EngineError
from .forced import Recognizer, TokenPieces, forced_tokens
from .gbnf import Grammar, GrammarError

# llama_token_data: {int32 id; float logit; float p;}
TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
# How many of the most likely tokens the grammar sees, tier by tier, when it rejects
# the sampled token, before it masks the whole vocabulary: a rejection usually has
# an allowed token among the top 64 (a quote, a brace, a digit). When it has not,
# the allowed token can rank far down the vocabulary (after "{ " Gemma 3 wants a
# newline and the grammar a '"'). Checking k candidates costs about k/n_vocab of a
# full pass, which on a small model costs more than a decode step: the tiers keep
# full passes rare without changing any output (docs/benchmarks.md, Figures behind
# the model runtime's constants).
TOP_TIERS = (64, 1024, 16384, 65536)


class SamplerBuffers:
    """The candidate arrays a sampler fills for every token, allocated once per loaded
    model instead of once per generation (for Gemma 3 the full array is 3 MB).

    Shared by every `TokenSampler` of one model; they must sample one at a time
    (one decode loop per model), which both decoders here guarantee.
    """

    def __init__(self, n_vocab: int):
        self.n_vocab = n_vocab
        self.full = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self.ids = np.arange(n_vocab, dtype=np.intc)
        self.top = np.zeros(min(max(TOP_TIERS), n_vocab), dtype=TOKEN_DATA)
        self.one = np.zeros(1, dtype=TOKEN_DATA)
        # For jump-forward decoding (`forced`): the model's token texts, and each
        # grammar parsed once (None: this recognizer cannot follow it).
        self.pieces: TokenPieces | None = None
        self.grammars: dict[str, Grammar | None] = {}

    def grammar(self, gbnf: str) -> Grammar | None:
        known = self.grammars.get(gbnf)
        if known is not None and known.full:
            # Its stack tables filled up over many generations (long answers of
            # bounded arrays of bounded strings): start afresh, so that jumping is
            # off only for the generation that filled them, not for the rest of
            # the model's life. Recognizers still running keep the old tables.
            # (pop: callers of the batch engine get here on their own threads.)
            self.grammars.pop(gbnf, None)
        if gbnf not in self.grammars:
            try:
                self.grammars[gbnf] = Grammar(gbnf)
            except (GrammarError, IndexError, ValueError):
                self.grammars[gbnf] = None
        return self.grammars[gbnf]


class TokenSampler:
    """The model's distribution first; the grammar only to check and, on rejection, mask."""

    def __init__(self, llama: Any, sampling: dict[str, Any], seed: int,
                 grammar_gbnf: str | None, buffers: SamplerBuffers | None = None):
        import llama_cpp.llama_cpp as lc

        self.lc = lc
        self.n_vocab = int(llama.n_vocab())
        vocab = lc.llama_model_get_vocab(llama.model)
        self.vocab = vocab
        self.chain = build_chain(lc, sampling, seed, self.n_vocab)
        self.argmax_only = is_plain_greedy(sampling)
        self.grammar = None
        self.grammar_key = grammar_gbnf or ""     # which answers are alike (for drafting)
        if grammar_gbnf is not None:
            self.grammar = lc.llama_sampler_init_grammar(vocab, grammar_gbnf.encode("utf-8"),
                                                         b"root")
            if not self.grammar:
                self.close()
                raise InvalidValue("llama.cpp could not parse the grammar for the output schema")
        self.buf = buffers if buffers is not None else SamplerBuffers(self.n_vocab)
        self.rejections = 0
        self.full_masks = 0
        # Jump-forward: a recognizer that follows the grammar over the accepted
        # tokens and says which tokens it forces next (None: no grammar, or off).
        self.follow: Recognizer | None = None
        if grammar_gbnf is not None and jump_forward(sampling):
            grammar = self.buf.grammar(grammar_gbnf)
            if grammar is not None:
                try:
                    self.follow = Recognizer(grammar)
                except GrammarError:
                    self.follow = None
            if self.follow is not None and self.buf.pieces is None:
                self.buf.pieces = TokenPieces(llama)

    def close(self) -> None:
        for name in ("chain", "grammar"):
            sampler = getattr(self, name, None)
            if sampler:
                self.lc.llama_sampler_free(sampler)
            setattr(self, name, None)

    # -------------------------------------------------------------- sampling

    def sample(self, ctx: Any, index: int = -1) -> int:
        """The next token from the logits of batch row `index` (-1: the last row)."""
        logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, index),
                                       shape=(self.n_vocab,))
        if self.argmax_only:
            token = int(np.argmax(logits))    # what the greedy sampler picks (first of ties)
        else:
            token = self._choose(self.chain, self._fill_full(logits), self.n_vocab)
        if self.grammar is None or self._grammar_allows(token):
            return token
        self.rejections += 1
        for k in TOP_TIERS:
            if k >= self.n_vocab:
                break
            allowed = self._sample_allowed_top(logits, k)
            if allowed is not None:
                return allowed
        self.full_masks += 1
        return self._sample_masked_full(logits)

    def accept(self, token: int) -> None:
        self.lc.llama_sampler_accept(self.chain, token)
        if self.grammar is not None:
            self.lc.llama_sampler_accept(self.grammar, token)
        if self.follow is not None and self.buf.pieces is not None:
            self.follow.accept_bytes(self.buf.pieces.piece(token))

    # -------------------------------------------------------------- jump-forward

    def forced(self, limit: int) -> list[int]:
        """Up to limit tokens the grammar forces next (`forced.forced_tokens`): to be
        added without sampling, each checked with `allows` and then `accept`ed."""
        if self.follow is None or self.buf.pieces is None or limit <= 0:
            return []
        return forced_tokens(self.buf.pieces, self.follow, limit)

    def allows(self, token: int) -> bool:
        """Whether llama.cpp's grammar takes this forced token now. It always should;
        if it does not, this recognizer misread the grammar, and jumping stops for
        this generation (the grammar alone then decides, as without jumping)."""
        if self.grammar is None or self._grammar_allows(token):
            return True
        if self.follow is not None:
            self.follow.lost = True
        return False

    def must_end(self) -> bool:
        """Whether the grammar admits nothing after the answer so far: it is complete
        (without jumping the sampler would pick an end-of-generation token next)."""
        if self.follow is None or not self.follow.must_end():
            return False
        # llama.cpp's grammar must agree that the answer may end here.
        eos = int(self.lc.llama_vocab_eos(self.vocab))
        if eos >= 0 and self.grammar is not None and not self._grammar_allows(eos):
            self.follow.lost = True
            return False
        return True

    def _fill_full(self, logits: np.ndarray) -> np.ndarray:
        full = self.buf.full
        full["id"] = self.buf.ids
        full["logit"] = logits
        full["p"] = 0.0
        return full

    def _grammar_allows(self, token: int) -> bool:
        one = self.buf.one
        one[0] = (token, 1.0, 0.0)
        self._apply(self.grammar, one, 1)
        return bool(np.isfinite(one[0]["logit"]))

    def _sample_masked_full(self, logits: np.ndarray) -> int:
        """The chain's pick after the grammar has masked the whole vocabulary."""
        size = self._apply(self.grammar, self._fill_full(logits), self.n_vocab)[0]
        if size == 0:   # pragma: no cover - llama.cpp keeps the array size
            raise EngineError("the grammar allows no token")
        return self._choose(self.chain, self.buf.full, self.n_vocab)

    def _sample_allowed_top(self, logits: np.ndarray, k: int) -> int | None:
        """The chain's pick among the k most likely tokens that the grammar allows; None
        when the grammar allows none of them."""
        best = np.argpartition(logits, -k)[-k:]
        top = self.buf.top[:k]
        top["id"] = best
        top["logit"] = logits[best]
        top["p"] = 0.0
        self._apply(self.grammar, top, k)
        allowed = top[np.isfinite(top["logit"])]
        if len(allowed) == 0:
            return None
        n = len(allowed)
        self.buf.top[:n] = allowed
        return self._choose(self.chain, self.buf.top, n)

    def _apply(self, sampler: Any, buf: np.ndarray, size: int) -> tuple[int, int]:
        """Applies a sampler in place to buf[:size]; (size, selected) afterwards."""
        lc = self.lc
        array = lc.llama_token_data_array(
            data=buf.ctypes.data_as(lc.llama_token_data_p), size=size, selected=-1,
            sorted=False)
        lc.llama_sampler_apply(sampler, ctypes.byref(array))
        self._last = array
        return int(array.size), int(array.selected)

    def _choose(self, chain: Any, buf: np.ndarray, size: int) -> int:
        _, selected = self._apply(chain, buf, size)
        # Read through the array's own pointer: a sampler may point it elsewhere.
        return int(self._last.data[selected].id)


def jump_forward(sampling: dict[str, Any]) -> bool:
    """Whether a local model adds the tokens a grammar forces without sampling them
    (the sampling's ``jump_forward``; on unless it is false)."""
    return sampling.get("jump_forward", True) is not False


def is_plain_greedy(sampling: dict[str, Any]) -> bool:
    """Whether the chain is the greedy sampler alone (temperature 0, no penalties)."""
    return (float(sampling.get("temperature", 0.0)) <= 0.0
            and float(sampling.get("repeat_penalty", 1.0)) == 1.0
            and float(sampling.get("frequency_penalty", 0.0)) == 0.0
            and float(sampling.get("presence_penalty", 0.0)) == 0.0)


def build_chain(lc: Any, sampling: dict[str, Any], seed: int, n_vocab: int) -> Any:
    """llama-cpp-python's sampler chain without the grammar, in the same order."""
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        lc.llama_sampler_chain_add(chain, sampler)

    repeat = float(sampling.get("repeat_penalty", 1.0))
    freq = float(sampling.get("frequency_penalty", 0.0))
    present = float(sampling.get("presence_penalty", 0.0))
    if (repeat, freq, present) != (1.0, 0.0, 0.0):
        add(lc.llama_sampler_init_penalties(n_vocab, 64, repeat, freq, present))
    temp = float(sampling.get("temperature", 0.0))
    if temp <= 0.0:
        add(lc.llama_sampler_init_greedy())
        return chain
    add(lc.llama_sampler_init_top_k(int(sampling.get("top_k", 40))))
    add(lc.llama_sampler_init_typical(float(sampling.get("typical_p", 1.0)), 1))
    add(lc.llama_sampler_init_top_p(float(sampling.get("top_p", 0.95)), 1))
    add(lc.llama_sampler_init_min_p(float(sampling.get("min_p", 0.05)), 1))
    add(lc.llama_sampler_init_temp(temp))
    add(lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
