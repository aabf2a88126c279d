#!/usr/bin/env python3
"""A stand-in OpenAI-compatible server (/v1/completions, /v1/chat/completions) for tests of
`charter label --judge-url`.

Answers with top_logprobs for the tokens "A" and "B" (and one other), derived from a hash of the
prompt (a chat request: of its messages), so the same request always gets the same answer; a chat
answer is "(A)" or "(B)", the letter at its second token. With --faults, the first request for each
prompt fails in one of six ways picked by the hash (429, 500, an answer later than the client's
time-out, an answer trickled a byte at a time so the connection is never idle yet never done, a
connection closed without an answer, a body that is not JSON) or succeeds; later requests succeed.
With --delay S every answer waits S seconds. Each request appends a line "HASH asked" to --log
when it arrives and "HASH OUTCOME" when it is done, so a test can count the requests and what was
answered (outcome "ok") per prompt.

  python3 scripts/fake-openai-server.py --log FILE [--faults] [--delay S] [--key K]

It listens on 127.0.0.1 on a free port and prints "port N" once it does.
"""
import argparse
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ["429", "500", "slow", "trickle", "drop", "malformed", "none"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--faults", action="store_true")
    ap.add_argument("--delay", type=float, default=0)
    ap.add_argument("--key")
    args = ap.parse_args()
    seen = set()
    lock = threading.Lock()

    def record(digest, outcome):
        with lock, open(args.log, "a") as f:
            f.write(f"{digest} {outcome}\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not body:  # the client gave up (timed out) before it sent the body
                record("-", "cut")
                self.close_connection = True
                return
            chat = self.path == "/v1/chat/completions"
            if self.path != "/v1/completions" and not chat:
                return self.reply(404, b'{"error": "not found"}')
            if args.key and self.headers.get("Authorization") != f"Bearer {args.key}":
                return self.reply(401, b'{"error": "bad key"}')
            request = json.loads(body)
            asked = json.dumps(request["messages"], sort_keys=True) if chat else request["prompt"]
            h = hashlib.sha256(asked.encode()).digest()
            digest = h.hex()[:16]
            record(digest, "asked")
            with lock:
                first = digest not in seen
                seen.add(digest)
            fault = FAULTS[h[0] % len(FAULTS)] if args.faults and first else "none"
            if fault == "429":
                record(digest, "429")
                return self.reply(429, b'{"error": "rate limited"}')
            if fault == "500":
                record(digest, "500")
                return self.reply(500, b'{"error": "server error"}')
            if fault == "drop":
                record(digest, "drop")
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "trickle":
                record(digest, "trickle")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                try:
                    for _ in range(100):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            if fault == "slow":
                record(digest, "slow")
                time.sleep(5)
            if args.delay:
                time.sleep(args.delay)
            top = {"A": -h[1] / 64, "B": -h[2] / 64, "The": -6.0}
            answer = {"object": "text_completion", "model": request.get("model"),
                      "choices": [{"index": 0, "text": "A", "finish_reason": "length",
                                   "logprobs": {"tokens": ["A"], "token_logprobs": [top["A"]], "top_logprobs": [top]}}]}
            if chat:
                letter = "A" if top["A"] > top["B"] else "B"
                tops = [[{"token": "(", "logprob": -0.01}, {"token": "The", "logprob": -5.0}],
                        [{"token": t, "logprob": v} for t, v in top.items()],
                        [{"token": ")", "logprob": -0.01}]]
                answer = {"object": "chat.completion", "model": request.get("model"),
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": f"({letter})"}, "finish_reason": "stop",
                                       "logprobs": {"content": [{"token": t, "logprob": l[0]["logprob"], "top_logprobs": l}
                                                                for t, l in zip(["(", letter, ")"], tops)]}}]}
            if fault == "malformed":
                record(digest, "malformed")
                return self.reply(200, b'{"choices": [{"text": "A", "logprobs": ')
            try:
                self.reply(200, json.dumps(answer).encode())
                record(digest, "ok" if fault != "slow" else "late")
            except (BrokenPipeError, ConnectionResetError):
                record(digest, "lost")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
