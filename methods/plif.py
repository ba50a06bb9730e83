"""`plif`: the parametric LIF neuron, whose membrane time constant is learned, trained by BPTT.

Fang et al., ICCV 2021, "Incorporating Learnable Membrane Time Constant to Enhance Learning of
Spiking Neural Networks" (arXiv:2007.05785; reference code
github.com/fangwei123456/Parametric-Leaky-Integrate-and-Fire-Spiking-Neuron, `codes/models.py`,
`PLIFNode`). The network is `direct`'s (BN on the currents, BPTT through `time_steps_train`
steps) with the reference neuron in every layer (paper Sec. 3.3, Eq. 2-4 and 6, and supplementary G):

    v[t] = v[t-1] + (I[t] - v[t-1]) / tau,  1 / tau = sigmoid(w), one w per layer, tau from 2
    s[t] = H(v[t] - 1)                       fire at >=, threshold 1
    v[t] = v[t] (1 - s[t])                   hard reset to 0, the spike detached in the reset

with the arctan surrogate of SpikingJelly's `ATan(alpha = 2)`, g(x) = 1 / (1 + (pi x)^2) (here
`arctan` of width 1 / pi, height 1). The row `direct-plif` of the configs is spikebench's variant:
`direct`'s neuron (subtract reset kept in the gradient, triangular surrogate) with a learned leak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bench.api import RunContext, register_method
from bench.spiking import SpikingNetwork
from methods.direct import DirectOptions, spiking_network, train_direct


@dataclass
class PLIFOptions(DirectOptions):
    """`direct`'s options with the reference PLIF neuron as the default."""

    neuron: Literal["lif", "if", "plif"] = "plif"
    reset: Literal["subtract", "zero"] = "zero"
    detach_reset: bool = True
    surrogate: str = "arctan"
    surrogate_width: float = 1 / math.pi
    surrogate_height: float = 1.0
    plif_initial_tau: float = 2.0


@register_method(
    "plif",
    family="direct",
    paper="Fang et al. 2021, ICCV, arXiv:2007.05785",
    options=PLIFOptions,
    network=spiking_network,
    reference="github.com/fangwei123456/Parametric-Leaky-Integrate-and-Fire-Spiking-Neuron: codes/models.py PLIFNode",
    departures=(
        "readout and loss are the suite's (cross-entropy of the time-averaged logits of an analog "
        "classifier; the reference: MSE between the voting layer's firing rates and the one-hot "
        "label); the optimizer, epochs and architecture are the run's"
    ),
)
def build_plif(context: RunContext) -> SpikingNetwork:
    """`direct` with the reference PLIF neuron (learned leak, hard detached reset, arctan surrogate)."""
    return train_direct(context, context.options, name="plif")
