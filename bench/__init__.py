"""spikebench: accuracy-latency benchmarks for spiking neural networks.

The pipeline, one module per arrow:

    config -> dataset + architecture -> method.build(...) -> spiking model
           -> simulate once over T_max, read every T of the grid -> records -> leaderboard
"""

__version__ = "0.1.0"
