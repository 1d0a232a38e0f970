"""Test power (SPEC §12): how many realistic ML bugs a suite catches, and how often it cries wolf.

- ``mutants``: the catalogue of ML mutants, each a small documented patch of a torch or
  transformers entry point, applied inside the test process only (``activate`` is the pytest
  plugin that applies one, named by ``$MLCHECK_MUTANT``).
- ``runner``: the unmutated run, then one run per mutant (in parallel processes), classified
  killed / survived / not reached.
- ``calibrate``: each test under N seeds, failures with an exact 95% upper bound.
- ``report``: ``mutation.json`` / ``calibration.json``, the terminal and the Markdown section.
"""
