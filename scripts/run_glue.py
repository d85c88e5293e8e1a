"""``hf_lln.recipes.run_glue`` as a script of a checkout (usage: that module's docstring, or ``--help``)."""

from hf_lln.recipes.run_glue import main

if __name__ == "__main__":
    raise SystemExit(main())
