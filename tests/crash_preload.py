"""Imported once by the crash test's fork server (``set_forkserver_preload``): jaxdistill, and the arith
splits every launch's calibration reads, drawn here once (``arith.generated_examples`` keeps them) so that
every forked launch inherits them instead of each drawing the 20,000 training examples again."""
from jaxdistill.calibrate import main  # noqa: F401
from jaxdistill.evaluate import make_task

_task = make_task("arith")
_task.load("train")
_task.load("test", limit=4)
