#!/usr/bin/env python3
"""Token ids from llama.cpp (llama-cpp-python's bindings) for tests/test-tokenizer-bpe.c.

  tokenizer-oracle.py MODEL.gguf STRINGS.txt [WIKITEXT.txt]

For each byte-level pre-tokenizer name it writes a vocab-only copy of MODEL
(every key, tokenizer.ggml.pre replaced, no tensors) to a temporary
directory, loads it with llama.cpp (vocab_only) and prints, as C, the ids of
each line of STRINGS.txt (a line is a Python string literal, so escapes
work).  With WIKITEXT it also prints the count and FNV-1a 64 digest (of the
ids as little-endian int32) of the whole file tokenized with MODEL as it is.
"""
import ast
import os
import struct
import sys
import tempfile

import ctypes

import gguf
import llama_cpp.llama_cpp as L

NAMES = ["smollm", "gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "falcon",
         "starcoder", "refact", "command-r", "olmo", "dbrx", "tekken", "default"]


def c_string(t):
    out = ""
    for b in t.encode():
        if b in (0x22, 0x5c):
            out += "\\" + chr(b)
        elif 0x20 <= b < 0x7f:
            out += chr(b)
        else:
            out += "\\%03o" % b
    return '"' + out + '"'


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for b in struct.pack("<%di" % len(ids), *ids):
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def vocab_copy(src, dst, pre):
    r = gguf.GGUFReader(src)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        val = pre if key == "tokenizer.ggml.pre" else f.contents()
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, val, vtype, sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class Vocab:
    """llama.cpp's tokenizer of a GGUF (vocab_only), as Llama.tokenize
    calls it: llama_tokenize(vocab, text, add_special, parse_special)."""

    def __init__(self, path):
        params = L.llama_model_default_params()
        params.vocab_only = True
        self.model = L.llama_model_load_from_file(path.encode(), params)
        if not self.model:
            raise RuntimeError("llama.cpp cannot load " + path)
        self.vocab = L.llama_model_get_vocab(self.model)

    def tokenize(self, text, add_bos=False, special=False):
        cap = len(text) + 16
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, text, len(text), buf, cap, add_bos, special)
        return list(buf[:n])


def load(path):
    return Vocab(path)


_quiet = L.llama_log_callback(lambda level, text, user: None)
L.llama_log_set(_quiet, ctypes.c_void_p(0))
L.llama_backend_init()


def main():
    model, strings = sys.argv[1], sys.argv[2]
    texts = [ast.literal_eval(l) for l in open(strings, encoding="utf-8") if l.strip()]
    print("static const char *const hard[] = {")
    for t in texts:
        print("  %s," % c_string(t))
    print("};")
    print("static const Expected expected[] = {")
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            path = os.path.join(tmp, name + ".gguf")
            vocab_copy(model, path, name)
            llm = load(path)
            print("  /* %s */" % name)
            for k, t in enumerate(texts):
                ids = llm.tokenize(t.encode(), add_bos=False, special=False)
                print("  { \"%s\", %d, %d, (const gint32[]) { %s } }," % (name, k, len(ids), ", ".join(map(str, ids))))
    print("};")
    if len(sys.argv) > 3:
        llm = load(model)
        ids = llm.tokenize(open(sys.argv[3], "rb").read(), add_bos=False, special=False)
        print("#define WIKITEXT_N_TOKENS %d" % len(ids))
        print("#define WIKITEXT_FNV1A64 G_GUINT64_CONSTANT (0x%016x)" % fnv1a64(ids))


if __name__ == "__main__":
    main()
