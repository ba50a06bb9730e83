"""Example plugin: a network written with SpikingJelly, trained and evaluated as a spikebench row.

    python run_all.py --config examples/ecosystem.yaml          # with the snnTorch example beside it
    python run_all.py --plugin examples.spikingjelly_plugin --methods ann,spikingjelly-lif

The network is SpikingJelly's own (`spikingjelly.activation_based`: `layer.Conv2d`,
`layer.BatchNorm2d`, `neuron.LIFNode` with its ATan surrogate, as in its CIFAR-10 tutorial);
`bench.ecosystem.adapters.from_spikingjelly` gives it the harness's contract, and the suite's
`fit` trains it by backpropagation through `time_steps_train` steps of SpikingJelly's own
neurons. Needs `pip install -e ".[ecosystem]"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.api import RunContext, register_method
from bench.ecosystem.adapters import from_spikingjelly, trained
from bench.spiking import SpikingNetwork


@dataclass
class SpikingJellyOptions:
    """tau: the LIF time constant; time_steps_train: T of BPTT; width: channels of the first stage."""

    tau: float = 2.0
    time_steps_train: int = 4
    width: int = 32


def spikingjelly_network(channels: int, classes: int, options: SpikingJellyOptions) -> nn.Module:
    """Three conv-BN-LIF stages (average pooling between them), global pooling, a linear classifier."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    def lif() -> nn.Module:
        return neuron.LIFNode(tau=float(options.tau), surrogate_function=surrogate.ATan(), detach_reset=True)

    widths = [channels, options.width, 2 * options.width, 4 * options.width]
    stages = []
    for index, (incoming, outgoing) in enumerate(zip(widths, widths[1:])):
        stages += [layer.Conv2d(incoming, outgoing, 3, padding=1, bias=False), layer.BatchNorm2d(outgoing), lif()]
        stages.append(layer.AvgPool2d(2) if index < 2 else layer.AdaptiveAvgPool2d(1))
    return nn.Sequential(*stages, layer.Flatten(), layer.Linear(widths[-1], classes))


@register_method(
    "spikingjelly-lif",
    family="direct",
    paper="example: a SpikingJelly 2.0 network (Fang et al., Science Advances 2023)",
    options=SpikingJellyOptions,
    reference="github.com/fangwei123456/spikingjelly: activation_based/neuron LIFNode",
)
def build(context: RunContext) -> SpikingNetwork:
    info, options = context.dataset.info, context.options
    model = from_spikingjelly(spikingjelly_network(info.channels, info.num_classes, options))
    architecture = f"spikingjelly: 3 conv-BN-LIF stages, width {options.width}"
    return trained(context, model, "spikingjelly-lif", options.time_steps_train, architecture=architecture)
