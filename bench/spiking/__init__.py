"""Spiking primitives shared by every method: surrogates, neurons, encoders, the model contract.

Sequences are time-major, `[T, B, ...]`; stateless layers run on the flattened `[T*B, ...]`.
"""

from bench.spiking.encoders import DirectEncoder, PoissonEncoder, build_encoder
from bench.spiking.network import AnalogModel, SpikingModel, SpikingNetwork, replace_relus
from bench.spiking.neurons import IFNeuron, LIFNeuron
from bench.spiking.surrogates import Surrogate, list_surrogates, register_surrogate, spike

__all__ = [
    "AnalogModel", "DirectEncoder", "IFNeuron", "LIFNeuron", "PoissonEncoder", "SpikingModel",
    "SpikingNetwork", "Surrogate", "build_encoder", "list_surrogates", "register_surrogate",
    "replace_relus", "spike",
]
