"""Experiments: datasets, training, the evaluation protocol, reports, workflows and the command line.

The top layer: builds on :mod:`corel.detection` and :mod:`corel.topology`, never the other way round.
"""
