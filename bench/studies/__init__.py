"""Studies of the suite itself, each a command with a report regenerated from its records.

- `python -m bench.studies.gradients`: gradient flow through depth and time for
  surrogate-gradient training (report: `gradient_report`).
- `python -m bench.studies.speed`: what a spiking network costs next to its own ANN on this
  machine (report: `speed_report`).
"""
