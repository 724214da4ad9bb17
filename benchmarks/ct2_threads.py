"""Why is CTranslate2 slower with 2 threads than with 1 on small machines? Times one converted
model under several thread settings, each in its own process (OpenMP reads its settings when
the library loads), interleaving nothing: run it on a quiet machine.

Settings: intra_threads 1 and N (N = cores), with OMP_WAIT_POLICY unset / PASSIVE / ACTIVE,
and throughput with inter_threads = N (N requests in flight, one thread each) against one
replica answering them in turn.

    .venv/bin/python benchmarks/ct2_threads.py                       # demo-shaped T5, int8
    .venv/bin/python benchmarks/ct2_threads.py --shape t5-base --new-tokens 32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # (d_model, d_ff, d_kv, heads, encoder layers, decoder layers, vocab)
    "demo": (256, 1024, 64, 4, 4, 6, 1000),
    "t5-small": (512, 2048, 64, 8, 6, 6, 32128),
    "t5-base": (768, 3072, 64, 12, 12, 12, 32128),
}

CHILD = r"""
import json, sys, time, concurrent.futures as cf
import ctranslate2
d, intra, inter, bs, n_new, repeats, src_len, vocab = json.loads(sys.argv[1])
tr = ctranslate2.Translator(d, device="cpu", compute_type="int8", intra_threads=intra,
                            inter_threads=inter)
src = [[f"w{(7 * i + j) % (vocab - 10) + 4}" for j in range(src_len)] + ["</s>"]
       for i in range(bs)]
kw = dict(beam_size=1, max_decoding_length=n_new, min_decoding_length=n_new)
def one():
    tr.translate_batch(src, **kw)
one()
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    if inter > 1:  # `inter` requests in flight at once
        with cf.ThreadPoolExecutor(inter) as ex:
            list(ex.map(lambda _: one(), range(inter)))
    else:
        one()
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2], "requests": max(inter, 1)}))
"""


def build(shape: str, out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from nash_core.runtimes.ct2 import convert

    d, ff, kv, h, enc, dec, vocab = SHAPES[shape]
    words = ["<pad>", "</s>", "<unk>", "<s>"] + [f"w{i}" for i in range(4, vocab)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=vocab, d_model=d, d_ff=ff, d_kv=kv, num_heads=h, num_layers=enc,
        num_decoder_layers=dec, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    T5ForConditionalGeneration(cfg).save_pretrained(out / "hf")
    fast.save_pretrained(out / "hf")
    return convert(out / "hf", out / "ct2", "int8")


def run(ct2: Path, intra, inter, bs, args, env_extra) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra)
    vocab = SHAPES[args.shape][-1]
    payload = json.dumps(
        [str(ct2), intra, inter, bs, args.new_tokens, args.repeats, args.source_len, vocab]
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD, payload], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="demo")
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--source-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ct2 = build(args.shape, Path(tmp))
        print(f"converted in {time.perf_counter() - t0:.1f} s")
        for bs in (1, 8):
            for intra, wait in [(1, None), (cores, None), (cores, "PASSIVE"), (cores, "ACTIVE")]:
                env = {"OMP_WAIT_POLICY": wait} if wait else {}
                ms = run(ct2, intra, 1, bs, args, env)
                rows.append({"batch": bs, "intra": intra, "inter": 1, "omp_wait": wait, "ms": ms})
            if cores > 1:  # throughput: `cores` requests at once, one thread each
                ms = run(ct2, 1, cores, bs, args, {})
                rows.append({"batch": bs, "intra": 1, "inter": cores, "omp_wait": None, "ms": ms})
    print("| batch | intra_threads | inter_threads (requests in flight) | OMP_WAIT_POLICY | ms |")
    print("|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['intra']} | {r['inter']} | {r['omp_wait'] or '(unset)'} "
            f"| {r['ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
