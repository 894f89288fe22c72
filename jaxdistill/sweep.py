"""``python -m jaxdistill.sweep``: the knob sweep's command, kept under its first name
(the sweep is ``jaxdistill.experiments.sweep``)."""

import sys

from jaxdistill.experiments.sweep import main

if __name__ == "__main__":
    sys.exit(main())
