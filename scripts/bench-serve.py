#!/usr/bin/env python3
"""Tokens/s of `charter serve` with one request at a time beside 8 at once (BENCHMARKS.md,
"charter serve"): 16 chat requests of 64 sampled tokens each, in alternating rounds.
Usage: .build/release/charter serve --bind 127.0.0.1:8000 &  then  scripts/bench-serve.py http://127.0.0.1:8000"""
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

url = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000") + "/v1/chat/completions"


def ask(seed):
    body = {"messages": [{"role": "user", "content": "Write a short story about a cat."}],
            "max_tokens": 64, "temperature": 0.8, "seed": seed}
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request).read())["usage"]["completion_tokens"]


for concurrency in (1, 8, 1, 8):
    began = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(ask, range(16)))
    seconds = time.time() - began
    print(f"concurrency {concurrency}: 16 requests, {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s")
