"""Other SNN libraries in and out of the suite: their networks as rows, their metrics, NIR.

- `adapters`: a SpikingJelly or snnTorch network as a `SpikingModel` the harness simulates
  (`from_spikingjelly`, `from_snntorch`);
- `neurobench`: NeuroBench's own metric code on a row's model, beside the suite's counters;
- `nir`: a row's spiking network written as a NIR graph, and read back to check it is exact.

Each library is an optional extra (`pip install -e ".[ecosystem]"`), imported only when used.
"""
