"""The rollout controller's decision core: always-valid sequential tests and a stage's gates.

Pure: no I/O, no gateway. The statistics look at the evidence as often as they like (the
controller looks every few seconds) and keep their error guarantees; `python -m
autopilot.simulate` proves it on thousands of simulated rollouts with known truth.
"""
