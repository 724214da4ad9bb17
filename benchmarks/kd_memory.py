"""Peak memory per target token of the distillation loss over a large vocabulary.

    python benchmarks/kd_memory.py [--vocab 250112] [--tokens 128,256]

The stage and fine-tune steps compute, per micro-batch, the student's cross-entropy and
``nash_core.distill.kd_loss`` (KL between temperature-softened student and teacher
distributions) over the whole vocabulary, then backpropagate. Every (tokens x vocab) tensor
involved -- the student's and the teacher's logits, the gathered / fp32 / scaled copies, both
log-softmaxes, the gradients -- scales with the number of target tokens in the micro-batch.
This measures the peak RSS growth of forward + backward of exactly that loss in a fresh process
for two token counts on the CPU (fp32) and reports the slope: bytes per target token. Multiply
by batch_size x max_target_length of a recipe for the loss's share of the memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
import torch
import torch.nn.functional as F
torch.set_num_threads(1)
from nash_core.distill import kd_loss

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    return 0

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0

n, vocab = int(sys.argv[1]), int(sys.argv[2])
labels = torch.randint(0, vocab, (1, n))
x = torch.zeros(1)  # warm the allocator
before = hwm()
assert before - rss() < 64 * 1024**2, "run in a fresh process"
student = torch.randn(1, n, vocab, requires_grad=True)
with torch.no_grad():
    teacher = torch.randn(1, n, vocab) if sys.argv[4] == "kd" else None
ce = F.cross_entropy(student.view(-1, vocab), labels.view(-1))
loss = ce if sys.argv[4] == "ce" else ce + 0.5 * kd_loss(student, teacher, labels, 2.0)
loss.backward()
print(json.dumps({"tokens": n, "vocab": vocab, "peak_growth": hwm() - before}))
"""


def measure(tokens: int, vocab: int, loss: str = "kd") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tokens), str(vocab), str(REPO), loss],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=250112)
    p.add_argument("--tokens", default="128,256")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--loss", default="kd", choices=["kd", "ce"], help="ce: the teacher's (no distillation)"
    )
    a = p.parse_args(argv)
    n1, n2 = (int(x) for x in a.tokens.split(","))
    m1, m2 = measure(n1, a.vocab, a.loss), measure(n2, a.vocab, a.loss)
    per_token = (m2["peak_growth"] - m1["peak_growth"]) / (n2 - n1)
    result = {
        "loss": "cross-entropy + kd_loss" if a.loss == "kd" else "cross-entropy only",
        "vocab": a.vocab,
        "measurements": [m1, m2],
        "bytes_per_token": per_token,
        "bytes_per_token_per_vocab_entry": per_token / a.vocab,
        "mib_per_token": per_token / 1024**2,
    }
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
