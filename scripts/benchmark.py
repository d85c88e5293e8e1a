"""Time and peak memory of the attention variants against sequence length: ``hf-lln bench`` as a script.

Arguments and methodology: ``python scripts/benchmark.py --help`` and docs/benchmark.md. Tiny CPU run::

    python scripts/benchmark.py --device cpu --seq_lengths 32 64 --tokens_per_batch 128 --model_sizes tiny \\
        --repeats 2 --output_dir runs/bench
"""

import sys

from hf_lln.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
