"""``python -m jaxdistill.diagnose``: see ``jaxdistill.diagnose.run``."""

import sys

from jaxdistill.diagnose.run import main

if __name__ == "__main__":
    sys.exit(main())
