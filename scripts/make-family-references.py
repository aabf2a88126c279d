#!/usr/bin/env python3
"""The reference models of the families Charter runs beside SmolLM2's Llama, made without any
download: transformers builds each from a config with random weights.

  llama3  LlamaForCausalLM, rope scaling of type llama3, untied embeddings
  qwen2   Qwen2ForCausalLM, biases on the q, k and v projections, tied embeddings

Each folder gets config.json and model.safetensors (float32 weights, so Charter loads exactly the
model measured), batch.json (a right-padded batch of 3 with a loss mask, and the loss), and
transformers' logits (logits.safetensors) and the gradient of every parameter (grads.safetensors),
computed in float64: the same files as ../shared/reference/tiny-llama.

Run by hand (the fixtures are committed):
  python3 -m venv .ref/venv && .ref/venv/bin/pip install torch transformers safetensors
  .ref/venv/bin/python scripts/make-family-references.py Tests/Fixtures/families
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SHAPE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5)


def families():
    # These put the 8 frequencies of a 16-wide head in all three bands of llama3 scaling: wavelength
    # 6.3 is kept (below 32 / 4), 32.4 blended (below 32 / 0.5), the longer ones divided by 8.
    yield "llama3", LlamaForCausalLM, LlamaConfig(
        **SHAPE, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 0.5,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    yield "qwen2", Qwen2ForCausalLM, Qwen2Config(
        **SHAPE, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def randomize(model, seed):
    """Weights and biases normal(0, 0.08), norm gains 1 + normal(0, 0.1): transformers starts
    biases at zero, which would leave their path untested. Rounded to float32 values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            value = 1 + 0.1 * noise if name.endswith("norm.weight") else 0.08 * noise
            p.copy_(value.float().double())


def batch(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    lengths, T = [12, 9, 5], 12
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.float64)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(0, vocab, (n,), generator=g)
        mask[b, 2:n] = 1  # the first two tokens are prompt
    return ids, lengths, mask


def main(out):
    for i, (name, cls, config) in enumerate(families()):
        torch.manual_seed(i)
        config.dtype = torch.float64
        model = cls(config).double()
        randomize(model, seed=100 + i)
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        model.config.dtype = torch.float32
        model.config.save_pretrained(folder)
        save_file({k: v.detach().float().contiguous() for k, v in model.named_parameters()},
                  os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

        ids, lengths, mask = batch(config.vocab_size, seed=200 + i)
        attention = (torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()
        logits = model(input_ids=ids, attention_mask=attention).logits
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
        loss.backward()
        save_file({"logits": logits.detach().contiguous()}, os.path.join(folder, "logits.safetensors"))
        save_file({k: p.grad.detach().contiguous() for k, p in model.named_parameters()}, os.path.join(folder, "grads.safetensors"))
        with open(os.path.join(folder, "batch.json"), "w") as f:
            json.dump({"input_ids": ids.tolist(), "lengths": lengths, "loss_mask": mask.tolist(), "loss": loss.item()}, f)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Tests/Fixtures/families")
