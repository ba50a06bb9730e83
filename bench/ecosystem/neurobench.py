"""NeuroBench's own metric code on a row's model, beside the suite's counters, with the convention
differences named layer by layer.

    comparison = compare(model, images, labels, time_steps=32)

NeuroBench (`neurobench.benchmarks.Benchmark` with `SynapticOperations` and `ActivationSparsity`)
measures the model through `NeuroBenchView`: images in, outputs `[B, T, K]` out, with the
constant-input prefix off so that every layer is called for every step, as the suite counts.
The suite's numbers come from the harness (`bench.harness.evaluate`) on the same images.

The conventions (per sample, summed over T steps and layers):
- spikebench: a layer fed events (spikes, pooled spikes, Poisson input) counts SOPs, events times
  the synapses each reaches (zero weights included); a layer fed analog values counts dense MACs
  (padded border included).
- NeuroBench: a layer call whose input lies in {-1, 0, 1} counts ACs, any other MACs, and only
  non-zero input times non-zero weight products (no padding).
Both totals agree where a layer's label and count agree; `differences` names each layer where not.
Activation sparsity is the same quantity in both (the share of neuron outputs that are 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bench.checkpoints import random_states, restore_random_states
from bench.efficiency import OperationCounter, SpikeRecorder, synaptic_layers
from bench.errors import UserError
from bench.harness import evaluate
from bench.spiking import SpikingModel
from bench.spiking.neurons import SpikingNeuron


def _neurobench():
    try:
        import neurobench  # noqa: F401
    except ImportError:
        raise UserError('NeuroBench metrics need the `neurobench` package: pip install -e ".[ecosystem]"') from None


@dataclass
class Comparison:
    """One row's numbers per sample at `time_steps`: ours, NeuroBench's, and the named differences."""

    time_steps: int
    sops: float
    macs: float
    sparsity: float | None  # None: no spiking layer (an ANN), whose ReLUs the suite does not count
    neurobench_acs: float
    neurobench_macs: float
    neurobench_dense: float
    neurobench_sparsity: float
    differences: list[str] = field(default_factory=list)

    @property
    def totals_agree(self) -> bool:
        ours, theirs = self.sops + self.macs, self.neurobench_acs + self.neurobench_macs
        return abs(ours - theirs) <= 1e-6 * max(ours, 1.0)


def neurobench_view(model: SpikingModel, time_steps: int):
    """`model` as a NeuroBench model: `view(images)` -> outputs `[B, T, K]`; its neurons are activations."""
    _neurobench()
    from neurobench.models import NeuroBenchModel

    class NeuroBenchView(NeuroBenchModel):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.time_steps = model, time_steps
            self.add_activation_module(SpikingNeuron)

        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            self.model.reset_state()
            with torch.no_grad():
                return self.model(images, self.time_steps).transpose(0, 1)

        def __net__(self) -> nn.Module:
            return self.model

    return NeuroBenchView()


def compare(model: SpikingModel, images: torch.Tensor, labels: torch.Tensor, time_steps: int) -> Comparison:
    """Both conventions on `images` `[B, C, H, W]` (on the model's device) at `time_steps`."""
    _neurobench()
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations

    model = model.eval()
    prefix = getattr(model, "constant_prefix", False)
    device = images.device
    try:
        if prefix:
            model.constant_prefix = False  # NeuroBench sees every step's call of every layer
        with torch.no_grad():
            model.reset_state()
            classes = model(images[:1], 1).shape[-1]
        draws = random_states(None, model)  # every run below sees the same Poisson (and readout) draws
        ours = evaluate(model, [(images, labels)], [time_steps], device, num_classes=classes)
        data = torch.utils.data.TensorDataset(images, labels)
        view = neurobench_view(model, time_steps)
        restore_random_states(draws, None, model)
        benchmark = Benchmark(
            view,
            torch.utils.data.DataLoader(data, batch_size=len(images)),
            [],
            [],
            [
                [],
                [SynapticOperations, ActivationSparsity],
            ],
        )
        theirs = benchmark.run(quiet=True, device=device)
        del benchmark  # its cleanup removes the hooks it put on the model
        restore_random_states(draws, None, model)
        differences = layer_differences(model, images, time_steps)
    finally:
        if prefix:
            model.constant_prefix = prefix
        model.reset_state()
    operations = theirs["SynapticOperations"]
    if not isinstance(operations, dict):
        raise UserError("NeuroBench's SynapticOperations failed on this model (it printed why above)")
    return Comparison(
        time_steps=time_steps,
        sops=ours.sops[time_steps],
        macs=ours.macs[time_steps],
        sparsity=1.0 - _firing_share(ours, time_steps) if ours.neurons_per_sample else None,
        neurobench_acs=float(operations["Effective_ACs"]),
        neurobench_macs=float(operations["Effective_MACs"]),
        neurobench_dense=float(operations["Dense"]),
        neurobench_sparsity=float(theirs["ActivationSparsity"]),
        differences=differences,
    )


def _firing_share(evaluation, time_steps: int) -> float:
    """Spikes per neuron and step over all neuron layers (the share NeuroBench's sparsity complements)."""
    return evaluation.spikes_per_neuron.get(time_steps, 0.0) / time_steps


def layer_differences(model: SpikingModel, images: torch.Tensor, time_steps: int) -> list[str]:
    """Each synaptic layer where the two conventions label or count differently, in words.

    One simulation with the suite's counters and hooks that keep every layer's input; NeuroBench's
    own `single_layer_MACs` gives its label and count for the same input."""
    from neurobench.metrics.utils.layers import single_layer_MACs

    spikes = SpikeRecorder(model)
    counter = OperationCounter(model, all_dense=model.time_invariant, spikes=spikes)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(lambda module, args, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, layer in synaptic_layers(model).items()
    ]
    steps = 1 if model.time_invariant else time_steps  # an ANN runs once, as in the harness
    try:
        model.reset_state()
        counter.start_call(steps, len(images))
        with torch.no_grad():
            model(images, steps)
    finally:
        for handle in handles:
            handle.remove()
        counter.close()
        spikes.close()
    differences = []
    for name, layer in synaptic_layers(model).items():
        if name not in counter.counts:
            continue
        count = counter.counts[name]
        ours = float(count.per_step.sum()) / len(images)
        operations, spiking = single_layer_MACs(inputs[name], layer)
        theirs = operations / len(images)
        label = "AC" if spiking else "MAC"
        if count.kind == "sop" and not spiking:
            differences.append(
                f"{name}: events whose amplitude is not 1 (pooled spikes, Poisson or threshold amplitude): "
                f"spikebench {ours:,.0f} SOPs, NeuroBench {theirs:,.0f} MACs (its input is not in {{-1, 0, 1}})"
            )
        elif count.kind == "mac" and spiking:
            differences.append(
                f"{name}: a binary analog input: spikebench {ours:,.0f} MACs, NeuroBench {theirs:,.0f} ACs"
            )
        elif abs(ours - theirs) > 1e-6 * max(ours, 1.0):
            why = (
                "NeuroBench counts only non-zero inputs times non-zero weights, no padded border; spikebench dense MACs"
                if count.kind == "mac"
                else "NeuroBench skips zero weights"
            )
            differences.append(
                f"{name}: spikebench {ours:,.0f} {count.kind.upper()}s, NeuroBench {theirs:,.0f} {label}s ({why})"
            )
    return differences
