#!/usr/bin/env python3
"""Checks that other tools load what `charter model convert` writes.

Usage: check_exports.py --hf DIR [--gguf FILE ...] [--reference ../shared/reference/smollm2]
       check_exports.py --peft DIR --base M     (DIR from `charter sft --lora-rank R --model M`)

For the Hugging Face folder: transformers' AutoTokenizer gives the reference token ids for every
case, and AutoModelForCausalLM's last-position logits match the reference (llama.cpp, F32).
For each GGUF file: llama.cpp (llama-cpp-python) loads it and its last-position logits match.
For a LoRA run's folder: PEFT loads its adapters (DIR/adapter) onto the base model (a Hugging Face
folder) and the logits equal those of the merged model in DIR.
Prints one line per check with the max |logit difference|; exits non-zero on a failure.
"""
import argparse, json, os, sys
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--hf")
p.add_argument("--gguf", nargs="*", default=[])
p.add_argument("--peft")
p.add_argument("--base")
p.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "../../shared/reference/smollm2"))
p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference| (F16 files get 0.5)")
a = p.parse_args()
index = json.load(open(os.path.join(a.reference, "index.json")))
cases = [json.load(open(os.path.join(a.reference, c + ".json"))) for c in index["cases"]]
last = {c["name"]: np.fromfile(os.path.join(a.reference, c["name"] + ".last_logits.f32"), dtype="<f4") for c in cases}
failed = False

def report(what, ok, detail):
    global failed
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")

if a.hf:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.hf)
    model = AutoModelForCausalLM.from_pretrained(a.hf, dtype=torch.float32)
    for c in cases:
        ids = tok(c["text"], add_special_tokens=False)["input_ids"]
        report(f"transformers tokenizer {c['name']}", ids == c["ids"], f"{len(ids)} ids")
        with torch.no_grad():
            logits = model(torch.tensor([c["ids"]])).logits[0, -1].numpy()
        diff = float(np.abs(logits - last[c["name"]]).max())
        report(f"transformers model {c['name']}", diff <= a.tolerance, f"max |logit diff| {diff:.2e}")

for path in a.gguf:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=False, verbose=False,
                          type_k=0, type_v=0, flash_attn=False)
    tol = 0.5 if "f16" in os.path.basename(path) else a.tolerance
    for c in cases:
        llm.reset()
        llm.eval(c["ids"])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(len(last[c["name"]]),))
        diff = float(np.abs(logits - last[c["name"]]).max())
        report(f"llama.cpp {os.path.basename(path)} {c['name']}", diff <= tol, f"max |logit diff| {diff:.2e}")

if a.peft:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, os.path.join(a.peft, "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(a.peft, dtype=torch.float32).eval()
    for c in cases:
        with torch.no_grad():
            x = adapted(torch.tensor([c["ids"]])).logits[0, -1].numpy()
            y = merged(torch.tensor([c["ids"]])).logits[0, -1].numpy()
        diff = float(np.abs(x - y).max())
        report(f"peft adapters {c['name']}", diff <= a.tolerance, f"max |logit diff| to the merged model {diff:.2e}")

sys.exit(1 if failed else 0)
