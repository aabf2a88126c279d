#!/usr/bin/env python3
"""How well the direct judge's rating (reward.judge, docs/labeler.md) tells the better answer.

Turns pairs with a known better answer (`better`: "a" or "b", as examples/polite-pairs.jsonl)
into score-stage items, one per answer, runs `charter stage score` with a configuration whose
reward is only `reward.judge`, and prints: the pairs whose better answer got the higher expected
rating, the mean rating of the better and of the worse answers, and the stage's items per second.

  python3 scripts/rating-eval.py [--pairs P.jsonl] [--principle TEXT] [--feedback MODEL] [--out DIR] [-- STAGE OPTIONS]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--pairs", default=os.path.join(root, "examples/polite-pairs.jsonl"))
ap.add_argument("--principle", default="How polite is the answer, with no insults or rude words?")
ap.add_argument("--feedback", help="the judge (default: the default model)")
ap.add_argument("--out", default=os.path.join(root, "runs/rating-eval"))
ap.add_argument("stage", nargs="*", help="more options for charter stage score (default: --in-process)")
args = ap.parse_args()

work = tempfile.mkdtemp(prefix="rating-eval-")  # not in --out: the stage's --overwrite empties that
pairs = [json.loads(line) for line in open(args.pairs) if line.strip()]
items = os.path.join(work, "items.jsonl")
with open(items, "w") as f:
    for n, p in enumerate(pairs):
        for k in "ab":
            f.write(json.dumps({"id": f"{p.get('id', n)}/{k}", "prompt": p["prompt"], "response": p[k]}) + "\n")
config = os.path.join(work, "judge.yaml")
with open(config, "w") as f:
    if args.feedback:
        # the file lives in a temporary folder, which its relative paths would be read against
        feedback = args.feedback if args.feedback.startswith("tiny") else os.path.abspath(args.feedback)
        f.write(f"model: {{feedback: {json.dumps(feedback)}}}\n")
    f.write(f"reward:\n  judge: {{principle: {json.dumps(args.principle)}}}\n")
charter = os.path.join(root, ".build/release/charter")
run = subprocess.run([charter, "stage", "score", "--config", config, "--items", items, "--out", args.out,
                      "--overwrite"] + (args.stage or ["--in-process"]), cwd=root, capture_output=True, text=True)
sys.stderr.write(run.stderr)
if run.returncode != 0:
    sys.exit(run.returncode)
rating = {}
for line in open(os.path.join(args.out, "score.jsonl")):
    o = json.loads(line)
    rating[o["id"]] = o["judge_rating"]
better, worse = [], []
for n, p in enumerate(pairs):
    good, bad = ("a", "b") if p["better"] == "a" else ("b", "a")
    better.append(rating[f"{p.get('id', n)}/{good}"])
    worse.append(rating[f"{p.get('id', n)}/{bad}"])
agree = sum(b > w for b, w in zip(better, worse))
speed = json.load(open(os.path.join(args.out, "score.metrics.json"))).get("items_per_second")
print(f"rating-eval: better answer rated higher on {agree}/{len(pairs)} pairs; mean rating better "
      f"{sum(better) / len(better):.3f}, worse {sum(worse) / len(worse):.3f}; {speed} items/s")
