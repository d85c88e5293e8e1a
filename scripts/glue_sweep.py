"""``hf_lln.recipes.glue_sweep`` as a script of a checkout (usage: that module's docstring, or ``--help``)."""

from hf_lln.recipes.glue_sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
