"""Experiments: the tiny world and its default run, the scorecard, the knob sweep and the undistillable
sweep, all built from one runner on one job graph (docs/experiments.md). They sit above calibration
(``jaxdistill.rl``), distillation (``jaxdistill.distill``) and evaluation (``jaxdistill.evaluate``) and add
no training code of their own.

    world.py          the tiny world and the default run of ``python -m jaxdistill.calibrate``
    scorecard.py      every student distilled from every teacher, evaluated
    sweep.py          the knob curve: accuracy against eta
    undistillable.py  the undistillable arm under other calibration settings
    knob_grid.py      the knob over calibration modes x eta x KL anchor (x calibration seeds), with the targets
    runner.py         the one runner: calibrate at eta, distill a student, evaluate; reuse what is finished
    knob.py           the knob eta in one place: the teachers' names and the one knob curve (table, plot)
    jobs.py           a graph of runs on worker processes
    selection.py      the selection test: which scores pick correct text students learn less from
    rft_control.py, student_probe.py   one-off experiment scripts

Each command is ``python -m jaxdistill.experiments.<module>`` (the default run: ``python -m jaxdistill.calibrate``).
"""
