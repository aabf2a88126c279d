#!/usr/bin/env python3
"""Training-step benchmark of PyTorch (peer for `charter bench train`).

Usage: bench_torch_train.py --model PATH [--mode full|lora] [--batch 8] [--length 256] [--steps 3] [--threads 2]

PATH is a GGUF file (loaded with transformers' gguf_file=, dequantized to float32) or a Hugging Face
folder. One step = forward, backward and AdamW on random tokens, loss on every position; LoRA
(rank 16 on q,k,v,o,gate,up,down, hand-written to avoid the peft dependency) trains only adapters.
Prints tokens/s and the process's peak RSS.
"""
import argparse, os, resource, time
import torch
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--mode", default="full", choices=["full", "lora"])
p.add_argument("--batch", type=int, default=8)
p.add_argument("--length", type=int, default=256)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--rank", type=int, default=16)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
if a.model.endswith(".gguf"):
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(a.model) or ".", gguf_file=os.path.basename(a.model), dtype=torch.float32)
else:
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
model.train()

class LoRA(torch.nn.Module):
    def __init__(self, base, r):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.randn(r, base.in_features) / base.in_features ** 0.5)
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = 2.0
    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.a.t()) @ self.b.t()

if a.mode == "lora":
    for p_ in model.parameters():
        p_.requires_grad_(False)
    for layer in model.model.layers:
        for owner, names in ((layer.self_attn, ["q_proj", "k_proj", "v_proj", "o_proj"]), (layer.mlp, ["gate_proj", "up_proj", "down_proj"])):
            for n in names:
                setattr(owner, n, LoRA(getattr(owner, n), a.rank))
params = [p_ for p_ in model.parameters() if p_.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5)
ids = torch.randint(0, model.config.vocab_size, (a.batch, a.length))

def step():
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

step()
start = time.perf_counter()
for _ in range(a.steps):
    step()
seconds = (time.perf_counter() - start) / a.steps
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
label = "full" if a.mode == "full" else f"lora r{a.rank}"
print(f"pytorch {torch.__version__} train {label} batch {a.batch}x{a.length}: {a.batch * a.length / seconds:.1f} tokens/s "
      f"({seconds:.2f} s/step), peak RSS {rss:.0f} MB, {torch.get_num_threads()} threads")
