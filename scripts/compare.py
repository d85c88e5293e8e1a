"""Compare the quality of the attentions: pretrain (run_mlm) and fine-tune (run_glue) each the same way.

``python -m hf_lln.experiments.compare`` as a script of a checkout (the same arguments; ``--help``).

A CPU smoke test (a few steps, numbers meaningless) on the bundled corpus and the GLUE test fixtures::

    python scripts/compare.py --scale tiny --attentions sdpa lln --tracks scratch --tasks sst2 \\
        --glue_dir tests/fixtures/glue --output_dir runs/compare-tiny

The measurement of docs/quality.md on one GPU (the project's data folder; about 6 minutes on an H100)::

    python scripts/compare.py --scale gpu-minutes --tracks scratch --data_dir ../shared/data --jobs 7 \\
        --output_dir runs/compare

Writes ``comparison.md``, ``comparison.json`` and ``mlm_loss.png`` into ``--output_dir``; runs already finished
there are skipped, so the same command resumes. Method and the choice of defaults: docs/quality.md.
"""

from hf_lln.experiments.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
