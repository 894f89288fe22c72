"""Experiments: the tiny world and its default run, the scorecard, the knob sweep, the undistillable
sweep and the job graph they run on. They sit above calibration (``jaxdistill.rl``), distillation
(``jaxdistill.distill``) and evaluation (``jaxdistill.evaluate``) and add no training code of their own.

    world.py          the tiny world and the default run of ``python -m jaxdistill.calibrate``
    scorecard.py      every student distilled from every teacher, evaluated (``python -m jaxdistill.experiments.scorecard``)
    sweep.py          the knob curve: accuracy against eta (``python -m jaxdistill.experiments.sweep``)
    undistillable.py  the undistillable arm under other calibration settings
    jobs.py           a graph of runs on worker processes
    selection.py      the selection test: which scores pick correct text students learn less from
    rft_control.py, student_probe.py   one-off experiment scripts (``python -m jaxdistill.experiments.<name>``)
"""
