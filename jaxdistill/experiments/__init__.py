"""Experiments behind the figures in docs/results (each runnable as python -m jaxdistill.experiments.<name>)."""
