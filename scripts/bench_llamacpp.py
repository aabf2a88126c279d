#!/usr/bin/env python3
"""Batched-generation benchmark of llama.cpp (peer for the engine's own benchmark).

Usage: bench_llamacpp.py --model PATH [--batches 1,8,32] [--new-tokens 128]
                         [--prompt-tokens 64] [--threads 2] [--flash-attn off|on|auto] [--json]

Uses llama-cpp-python's low-level bindings (not the Llama class, which only runs one
sequence) so that B sequences advance together: one llama_decode per step, one sequence id
per row, greedy argmax in numpy, no stop tokens.  The KV cache is F32 to match the engine.
Peak RSS is ru_maxrss, i.e. the peak of the whole process so far (it only grows across
batch sizes); run one batch size per invocation for a clean per-batch figure.
"""
import argparse
import ctypes
import json
import os
import resource
import time

import numpy as np
import llama_cpp as L

PARAGRAPH = (
    "The history of the lighthouse is a story of human ingenuity and the sea. Long before "
    "electric lamps, keepers climbed narrow stairs every evening to light oil wicks and polish "
    "the great lenses that threw a beam across the water. Ships depended on these lights to "
    "find safe harbor, to avoid rocks hidden beneath the waves, and to know where the coast "
    "began. Today most lighthouses run on their own, yet many still stand as reminders of the "
    "people who kept them burning through storms, fog and long winter nights. "
)

_log = []  # llama.cpp log lines: kept quiet, but searched to confirm the KV type it used


@L.llama_log_callback
def _log_cb(level, text, user_data):
    _log.append(text.decode(errors="replace"))


def tokenize(vocab, text):
    buf = (L.llama_token * (len(text) + 16))()
    n = L.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, len(buf), False, False)
    assert n >= 0
    return list(buf[:n])


def fill(batch, rows):
    """rows: (token, pos, seq, want_logits) tuples."""
    for i, (tok, pos, seq, out) in enumerate(rows):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, out
    batch.n_tokens = len(rows)


def decode(ctx, batch):
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        raise SystemExit(f"llama_decode failed: {rc}")


def argmax_rows(ctx, idx, n_vocab):
    return [int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).argmax())
            for i in idx]


def run(model, vocab, n_vocab, text_toks, B, args):
    P, N = args.prompt_tokens, args.new_tokens
    cp = L.llama_context_default_params()
    cp.n_ctx = B * (P + N)            # KV is per sequence (n_ctx/n_seq_max each; llama.cpp pads to 256)
    cp.n_batch = cp.n_ubatch = B * P  # whole prefill in one llama_decode and one ubatch
    cp.n_seq_max = B
    cp.n_threads = cp.n_threads_batch = args.threads
    cp.type_k = cp.type_v = L.GGML_TYPE_F32  # llama.cpp defaults to F16
    cp.flash_attn_type = {"off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED, "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                          "auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO}[args.flash_attn]
    del _log[:]
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise SystemExit(f"llama_init_from_model failed for batch {B}")
    log = "".join(_log)
    kv = "F32" if "K (f32)" in log and "V (f32)" in log else "?? (not f32, see llama.cpp log)"
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(B * P, 0, 1)

    # Different offsets per sequence, so the B prompts differ (and share no prefix).
    prompts = [text_toks[7 * s: 7 * s + P] for s in range(B)]
    prefill = [(t, p, s, p == P - 1) for s in range(B) for p, t in enumerate(prompts[s])]
    last = [s * P + P - 1 for s in range(B)]  # batch rows whose logits we asked for

    fill(batch, prefill)
    decode(ctx, batch)              # warm-up: touches all (mmapped) weights and compute buffers
    L.llama_memory_clear(mem, True)

    fill(batch, prefill)
    t0 = time.perf_counter()
    decode(ctx, batch)
    toks = argmax_rows(ctx, last, n_vocab)
    t_prefill = time.perf_counter() - t0

    t0 = time.perf_counter()
    for step in range(N - 1):
        fill(batch, [(toks[s], P + step, s, True) for s in range(B)])
        decode(ctx, batch)
        toks = argmax_rows(ctx, range(B), n_vocab)
    t_decode = time.perf_counter() - t0

    L.llama_memory_clear(mem, True)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return dict(prefill_tok_s=B * P / t_prefill,
                decode_tok_s=B * (N - 1) / t_decode if N > 1 else float("nan"),
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KB on Linux
                kv_type=kv, prefill_s=t_prefill, decode_s=t_decode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    # Off by default: with it, llama.cpp's CPU attention is no longer plain f32 math.
    ap.add_argument("--flash-attn", choices=["off", "on", "auto"], default="off")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    L.llama_log_set(_log_cb, ctypes.c_void_p(0))
    L.llama_backend_init()
    model = L.llama_model_load_from_file(args.model.encode(), L.llama_model_default_params())
    if not model:
        raise SystemExit(f"cannot load {args.model}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    text_toks = tokenize(vocab, PARAGRAPH)
    need = 7 * (max(batches) - 1) + args.prompt_tokens
    text_toks = text_toks * (need // len(text_toks) + 1)

    name = os.path.basename(args.model)
    system = L.llama_print_system_info().decode().strip()
    # llama.cpp's OpenMP threads spin at barriers: if anything else is busy on the same cores
    # (e.g. the engine's own benchmark) its speed can collapse by 10-100x.  Record the load.
    load = os.getloadavg()[0]
    info = dict(llama_cpp_python=L.__version__, system_info=system, threads=args.threads, load_avg_1m=load,
                flash_attn=args.flash_attn, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens)
    if not args.json:
        print(f"llama.cpp via llama-cpp-python {L.__version__} | {system} | threads {args.threads}, "
              f"flash-attn {args.flash_attn}, prompt {args.prompt_tokens} + new {args.new_tokens} tokens, "
              f"load avg {load:.2f} at start")
    for B in batches:
        r = run(model, vocab, n_vocab, text_toks, B, args)
        if args.json:
            print(json.dumps(dict(engine="llama.cpp", model=name, batch=B, **r, **info)), flush=True)
        else:
            print(f"llama.cpp {name} batch {B}: prefill {r['prefill_tok_s']:.1f} tok/s, "
                  f"decode {r['decode_tok_s']:.1f} tok/s, peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(KV {r['kv_type']})", flush=True)
    L.llama_model_free(model)
    L.llama_backend_free()


if __name__ == "__main__":
    main()
