"""The rollout controller: always-valid sequential tests, a stage's gates, the controller that
moves a candidate through stages per slice, and the savings ledger.

The decision core (sequential.py, gates.py, controller.py, ledger.py) is pure: no I/O, no
gateway; it acts only through the `controller.Actions` the gateway implements and keeps its
state through a `controller.RolloutStore`. runner.py ties it to the capture database (the store
and the lease: one deciding replica). The statistics look at the evidence as often as they like
(the controller looks every few seconds) and keep their error guarantees; `python -m
autopilot.simulate` proves it on thousands of simulated rollouts with known truth.
"""
