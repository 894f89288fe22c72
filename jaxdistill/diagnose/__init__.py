"""Why does a student fail to learn from a teacher? ``python -m jaxdistill.diagnose``.

- ``metrics``: the trap and symptom measurements as pure functions (arrays and strings in, numbers out);
- ``run``: the config, the models sampling and scoring each other's text, the CLI;
- ``report``: diagnostics.json / .md and the plots, and the numbers read back from them.
"""

from jaxdistill.diagnose.report import load_diagnostics, summary_numbers, write_report
from jaxdistill.diagnose.run import DiagnoseConfig, diagnose, main

__all__ = ["DiagnoseConfig", "diagnose", "load_diagnostics", "main", "summary_numbers",
           "write_report"]
