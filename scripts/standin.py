"""Write an offline stand-in for a hub base model (exact architecture, random weights, a real
subword tokenizer trained on the demo corpus); see nash_core/standin.py and the README.

    python scripts/standin.py t5-base /tmp/standins/t5-base
    nash run configs/samsum-t5-base.yaml --set model.base=/tmp/standins/t5-base \
        --set data.kind=demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nash_core.standin import HUB_IDS, SHAPES, write_standin


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shape", choices=sorted(SHAPES), help="architecture to copy")
    p.add_argument("out_dir", help="directory to write (save_pretrained layout)")
    p.add_argument("--encoder-layers", type=int, help="fewer encoder layers (tests)")
    p.add_argument("--decoder-layers", type=int, help="fewer decoder layers (tests)")
    p.add_argument("--num-dialogues", type=int, default=4000, help="tokenizer training corpus")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = write_standin(
        a.shape,
        a.out_dir,
        encoder_layers=a.encoder_layers,
        decoder_layers=a.decoder_layers,
        num_dialogues=a.num_dialogues,
        seed=a.seed,
    )
    print(f"{out}: stand-in for {HUB_IDS[a.shape]} (random weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
