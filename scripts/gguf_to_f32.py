#!/usr/bin/env python3
"""Convert a GGUF model to an all-F32 GGUF and check it against the original.

Usage: gguf_to_f32.py IN OUT [REFERENCE_DIR]

Purpose: gives the llama.cpp benchmark an unquantized model, so the engine can be
compared with llama.cpp on plain f32 matmuls as well as on quantized ones.
Uses the pip `gguf` package and `llama_cpp` (llama-cpp-python) for the check.
The check: OUT holds IN's keys and, bit for bit, IN's tensors dequantized; and llama.cpp
running OUT reproduces the last-position logits of the reference cases (REFERENCE_DIR,
default ../shared/reference/smollm2, made by llama.cpp from this same conversion) within
LOGIT_TOLERANCE. Prints one summary line on success; exits non-zero on any mismatch.
"""
import json
import logging
import os
import sys

import numpy as np
import gguf

logging.getLogger("gguf").setLevel(logging.ERROR)  # keep stdout/stderr to the one summary line


def convert(src, dst):
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)  # this already writes general.architecture
    for name, f in r.fields.items():
        # GGUF.version / tensor_count / kv_count are header fields the reader shows
        # as if they were keys; the writer writes its own header.
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = f.types[0]
        if name == "general.file_type":
            # Every tensor is now F32, so say so; llama.cpp prints this as the model's type.
            w.add_key_value(name, int(gguf.LlamaFileType.ALL_F32), vtype)
        elif name == "general.alignment":
            w.add_custom_alignment(f.contents())  # also sets the padding the writer uses
        elif vtype == gguf.GGUFValueType.ARRAY:
            if len(f.types) != 2:
                raise SystemExit(f"nested array in key {name}: not supported")
            # Give the element type: otherwise the writer guesses it from Python
            # values (e.g. an INT32 token_type array would turn into INT64 or UINT8).
            w.add_key_value(name, f.contents(), vtype, sub_type=f.types[1])
        else:
            w.add_key_value(name, f.contents(), vtype)

    arrays = []
    for t in r.tensors:
        # t.shape is in ggml order (fastest-varying dimension first); the writer
        # expects numpy/PyTorch order and reverses it when writing.
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        a = a.reshape(tuple(reversed([int(d) for d in t.shape])))
        w.add_tensor(t.name, a)
        arrays.append(a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return r, arrays


def check_file(r, arrays, dst):
    """Read OUT back: same keys, key types and values, and the same tensors in the same order."""
    o = gguf.GGUFReader(dst)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.file_type":
            continue
        g = o.fields.get(name)
        assert g is not None and g.types == f.types and g.contents() == f.contents(), name
    assert [t.name for t in o.tensors] == [t.name for t in r.tensors]
    for t, u, a in zip(r.tensors, o.tensors, arrays):
        assert u.tensor_type == gguf.GGMLQuantizationType.F32 and list(u.shape) == list(t.shape), t.name
        assert np.array_equal(u.data.reshape(a.shape), a), t.name


LOGIT_TOLERANCE = 1e-3  # llama.cpp F32 on another CPU sums in another order: ~1e-4 seen


def last_logits(path, cases):
    """llama.cpp's raw logits at the last position of each case's token ids, on model `path`."""
    import llama_cpp
    # F32 KV cache (llama.cpp defaults to F16) and no flash attention, as the reference was made.
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=False, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    out = []
    for ids in cases:
        llm.reset()
        llm.eval(ids)
        # With logits_all=False llama-cpp-python 0.3.x no longer fills llm.scores, so read
        # the context's last output row directly (copy: llama.cpp reuses the buffer).
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        out.append(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy())
    return out


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    src, dst = sys.argv[1:3]
    here = os.path.dirname(os.path.abspath(__file__))
    ref = sys.argv[3] if len(sys.argv) == 4 else os.path.join(here, "..", "..", "shared", "reference", "smollm2")
    r, arrays = convert(src, dst)
    check_file(r, arrays, dst)
    n_params = sum(a.size for a in arrays)
    del arrays

    # Not a comparison of greedy tokens with the quantized file: llama.cpp's Q4_1 matmuls quantize
    # the activations to 8 bits, so the two models differ by ~0.5-1.0 in the logits and their
    # greedy continuations can part at a near tie, which says nothing about the conversion. The
    # reference logits come from llama.cpp on this very conversion, so they must agree closely.
    names = json.load(open(os.path.join(ref, "index.json")))["cases"]
    cases = [json.load(open(os.path.join(ref, f"{n}.json"))) for n in names]
    got = last_logits(dst, [c["ids"] for c in cases])
    worst = 0.0
    for c, z in zip(cases, got):
        want = np.fromfile(os.path.join(ref, c["last_logits_file"]), dtype="<f4")
        diff = float(np.abs(z - want).max())
        worst = max(worst, diff)
        if diff > LOGIT_TOLERANCE:
            raise SystemExit(f"{dst}: case {c['name']}: last-position logits differ from the reference by {diff:.2e} "
                             f"(tolerance {LOGIT_TOLERANCE:.0e})")
    print(f"wrote {dst}: {len(r.tensors)} tensors ({n_params} params) as F32, "
          f"{len([k for k in r.fields if not k.startswith('GGUF.')])} keys; "
          f"llama.cpp on it matches the reference logits of {len(cases)} cases, max |diff| {worst:.2e}")


if __name__ == "__main__":
    main()
