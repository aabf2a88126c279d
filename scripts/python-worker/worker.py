#!/usr/bin/python3
"""A Charter worker in Python: registers with a coordinator, heartbeats, pulls `generate` tasks
and answers them, speaking protocol/PROTOCOL.md with pyzmq and the classes protoc generates from
protocol/charter.proto (charter_pb2.py beside this file; scripts/gen-protocol.sh rewrites it).

Answers come from llama-cpp-python when --model names a GGUF file and the package is installed,
else they are synthetic: "synthetic answer: " and the last user turn (or the raw prompt), which
shows the worker read the item and lets a test check every answer.

    /usr/bin/python3 scripts/python-worker/worker.py --connect tcp://127.0.0.1:5555 [--id NAME] [--model M.gguf]

Needs python3-zmq and python3-protobuf (Debian) or pyzmq and protobuf (PyPI). It takes only
generate tasks: other stage kinds get an error per item, and since it cannot fetch weights it
leaves a run (rollout tasks) with a Goodbye.
"""
import argparse
import os
import socket
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import charter_pb2 as pb  # noqa: E402

PROTOCOL_VERSION = 4
REGISTER_RETRY_S = 1.0


class Answerer:
    """Text for one generate item: llama-cpp-python's, or a synthetic one."""

    def __init__(self, model):
        self.llm = None
        if model:
            try:
                from llama_cpp import Llama
            except ImportError:
                log("llama-cpp-python is not installed; answering with synthetic text")
                return
            self.llm = Llama(model_path=model, verbose=False)

    def answer(self, item, sampling):
        if self.llm is None:
            if item.messages:
                users = [m.content for m in item.messages if m.role == "user"]
                return "synthetic answer: " + (users[-1] if users else ""), False
            return "synthetic answer: " + item.prompt, False
        limits = dict(temperature=sampling.temperature, top_p=sampling.top_p or 1.0, top_k=sampling.top_k,
                      max_tokens=sampling.max_new_tokens, seed=item.seed % (1 << 31))
        if item.messages:
            out = self.llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in item.messages], **limits)
            choice = out["choices"][0]
            return choice["message"]["content"], choice["finish_reason"] == "length"
        choice = self.llm(item.prompt, **limits)["choices"][0]
        return choice["text"], choice["finish_reason"] == "length"


def log(line):
    print(f"python-worker: {line}", file=sys.stderr, flush=True)


class Worker:
    def __init__(self, connect, worker_id, answerer):
        self.id, self.answerer = worker_id, answerer
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, worker_id.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        self.socket.connect(connect)
        self.registered = False
        self.heartbeat_s = 1.0
        self.last_heartbeat = self.last_register = 0.0
        self.waiting = False
        self.retry_at = 0.0
        self.tasks_done = 0

    def send(self, **body):
        envelope = pb.Envelope(protocol_version=PROTOCOL_VERSION, **body)
        self.socket.send(envelope.SerializeToString())

    def register(self):
        self.send(register=pb.Register(worker_id=self.id, threads=os.cpu_count() or 1, capabilities=["generate"]))
        self.last_register = time.monotonic()

    def run(self):
        self.register()
        while True:
            if self.socket.poll(50):
                if not self.handle(self.socket.recv_multipart()):
                    return 0
            now = time.monotonic()
            if not self.registered:
                if now - self.last_register >= REGISTER_RETRY_S:
                    self.register()
                continue
            if now - self.last_heartbeat >= self.heartbeat_s:
                self.send(heartbeat=pb.Heartbeat())
                self.last_heartbeat = now
            if not self.waiting and now >= self.retry_at:
                self.send(task_request=pb.TaskRequest(slots=1))
                self.waiting = True

    def handle(self, frames):
        """False when the worker should stop."""
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(frames[0])
        except Exception as e:  # a bad frame is dropped; the worker keeps serving
            log(f"dropped a message that does not parse: {e}")
            return True
        if envelope.protocol_version != PROTOCOL_VERSION:
            log(f"the coordinator speaks protocol {envelope.protocol_version}, this worker {PROTOCOL_VERSION}")
            sys.exit(1)
        body = envelope.WhichOneof("body")
        if body == "welcome":
            self.registered, self.waiting = True, False
            self.heartbeat_s = max(envelope.welcome.heartbeat_interval_ms, 10) / 1000
            log(f"registered with run {envelope.welcome.run_id}")
        elif body == "task":
            self.waiting = False
            return self.work(envelope.task)
        elif body == "no_task":
            self.waiting = False
            self.retry_at = time.monotonic() + envelope.no_task.retry_after_ms / 1000
        elif body == "goodbye":
            log(f"coordinator said goodbye ({envelope.goodbye.reason}); {self.tasks_done} tasks done")
            return False
        elif body == "error":
            if envelope.error.code == pb.Error.VERSION_MISMATCH:
                log(f"coordinator refused us: {envelope.error.message}")
                sys.exit(1)
            if envelope.error.code == pb.Error.NOT_REGISTERED:
                self.registered = False
            log(f"coordinator error {pb.Error.Code.Name(envelope.error.code)}: {envelope.error.message}")
        elif body == "model_announce":
            a = envelope.model_announce
            log(f"cannot fetch {a.model} version {a.version}: this worker holds no weights")
        return True

    def work(self, task):
        if task.kind == pb.ROLLOUT:
            self.send(goodbye=pb.Goodbye(reason="the Python worker does no rollouts"))
            log("a rollout task arrived; this worker takes stage tasks only, so it leaves")
            return False
        result = pb.TaskResult(task_id=task.task_id, iteration=task.iteration, policy_version=task.policy_version)
        for item in task.items:
            r = result.items.add(item_id=item.item_id)
            if task.kind != pb.GENERATE:
                r.error = f"the Python worker answers generate tasks only, not {pb.TaskKind.Name(task.kind)}"
                continue
            try:
                text, truncated = self.answerer.answer(item, task.sampling)
            except Exception as e:  # one item's failure is that item's error
                r.error = f"python worker: {e}"
                continue
            r.texts.append(text)
            r.truncated.append(truncated)
        self.send(task_result=result)
        self.tasks_done += 1
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", required=True, help="the coordinator's control endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--id", default=f"py-{socket.gethostname()}-{os.getpid()}", help="worker id")
    parser.add_argument("--model", help="a GGUF file for llama-cpp-python (default: synthetic answers)")
    args = parser.parse_args()
    if "://" not in args.connect:
        parser.error(f"--connect {args.connect}: give a ZeroMQ address such as tcp://127.0.0.1:5555")
    return Worker(args.connect, args.id, Answerer(args.model)).run()


if __name__ == "__main__":
    sys.exit(main())
