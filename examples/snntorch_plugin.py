"""Example plugin: a network written with snnTorch, trained and evaluated as a spikebench row.

    python run_all.py --config examples/ecosystem.yaml          # with the SpikingJelly example beside it
    python run_all.py --plugin examples.snntorch_plugin --methods ann,snntorch-leaky

The network is snnTorch's own (`snn.Leaky` neurons with `init_hidden=True` and its atan
surrogate, between `torch.nn` convolutions and batch norms, as in its tutorials: one time step
per call); `bench.ecosystem.adapters.from_snntorch` gives it the harness's contract, and the
suite's `fit` trains it by backpropagation through `time_steps_train` steps of snnTorch's own
neurons. Needs `pip install -e ".[ecosystem]"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.api import RunContext, register_method
from bench.ecosystem.adapters import from_snntorch, trained
from bench.spiking import SpikingNetwork


@dataclass
class SnnTorchOptions:
    """beta: the membrane decay per step; time_steps_train: T of BPTT; width: channels of the first stage."""

    beta: float = 0.9
    time_steps_train: int = 4
    width: int = 32


def snntorch_network(channels: int, classes: int, options: SnnTorchOptions) -> nn.Module:
    """Three conv-BN-Leaky stages (average pooling between them), global pooling, a linear classifier."""
    import snntorch
    from snntorch import surrogate

    def leaky() -> nn.Module:
        return snntorch.Leaky(beta=options.beta, spike_grad=surrogate.atan(), init_hidden=True)

    widths = [channels, options.width, 2 * options.width, 4 * options.width]
    stages = []
    for index, (incoming, outgoing) in enumerate(zip(widths, widths[1:])):
        stages += [nn.Conv2d(incoming, outgoing, 3, padding=1, bias=False), nn.BatchNorm2d(outgoing), leaky()]
        stages.append(nn.AvgPool2d(2) if index < 2 else nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*stages, nn.Flatten(), nn.Linear(widths[-1], classes))


@register_method(
    "snntorch-leaky",
    family="direct",
    paper="example: an snnTorch 1.0 network (Eshraghian et al., Proc. IEEE 2023)",
    options=SnnTorchOptions,
    reference="github.com/jeshraghian/snntorch: snntorch/_neurons/leaky.py Leaky",
)
def build(context: RunContext) -> SpikingNetwork:
    info, options = context.dataset.info, context.options
    model = from_snntorch(snntorch_network(info.channels, info.num_classes, options))
    architecture = f"snntorch: 3 conv-BN-Leaky stages, width {options.width}"
    return trained(context, model, "snntorch-leaky", options.time_steps_train, architecture=architecture)
