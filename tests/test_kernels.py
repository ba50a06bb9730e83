"""The one-kernel time loop of CUDA (`bench.spiking.kernels`, Triton) equals the reference loop:
run here on CPU tensors by Triton's interpreter, in a subprocess that sets TRITON_INTERPRET=1
before Triton is imported."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("triton")

CHECK = textwrap.dedent("""
    import itertools

    import torch

    from bench.spiking import fused, kernels
    from bench.spiking.neurons import LIFNeuron, SpikingNeuron
    from bench.spiking.surrogates import Surrogate

    assert kernels.usable(torch.zeros(1)), "the interpreter is not on"
    torch.manual_seed(0)
    cases = 0
    for leak, reset, detach, per_channel, carried, constant, channels_last, shape in itertools.product(
        (1.0, 0.8), ("subtract", "zero"), (False, True), (False, True), (False, True), (False, True),
        (False, True), ("triangular", "arctan"),
    ):
        steps, batch, channels = 6, 2, 3
        threshold = torch.rand(channels) * 0.5 + 0.5 if per_channel else torch.tensor(0.7)
        step = torch.randn(batch, channels, 4, 4)
        if channels_last:
            step = step.contiguous(memory_format=torch.channels_last)
        if constant:  # one step seen at every step: an expanded view, step stride 0
            source = step.clone().requires_grad_()
            current = source.unsqueeze(0).expand(steps, *step.shape)
        else:
            source = torch.stack([torch.randn_like(step) for _ in range(steps)]).requires_grad_()
            current = source
        potential = (torch.rand(batch, channels, 4, 4) * 0.5).requires_grad_() if carried else None
        neuron = LIFNeuron(threshold=threshold, leak=leak, reset_mode=reset, detach_reset=detach,
                           surrogate=Surrogate(shape, 1.0, 1.0), initial_potential=0.5)
        limit = neuron.broadcast_threshold(step)
        dynamics = fused.Dynamics(leak, reset, detach, neuron.surrogate, 0.5)

        # The kernel (forward and backward), with autograd.
        spikes, final = fused.simulate(current, potential, limit, dynamics)
        weights = torch.randn_like(spikes)
        (spikes * weights).sum().add(final.square().sum()).backward()
        kernel_grads = (source.grad.clone(), None if potential is None else potential.grad.clone())
        source.grad = None
        if potential is not None:
            potential.grad = None

        # The reference: the neuron's plain loop of `step`, through torch autograd.
        neuron.potential = potential
        reference = SpikingNeuron.integrate(neuron, current, limit)
        (reference * weights).sum().add(neuron.potential.square().sum()).backward()
        assert torch.equal(spikes, reference), ("spikes", leak, reset, detach, per_channel, carried)
        assert torch.allclose(final, neuron.potential, atol=1e-5)
        assert torch.allclose(kernel_grads[0], source.grad, atol=1e-4), ("grad current", leak, reset, detach)
        if potential is not None:
            assert torch.allclose(kernel_grads[1], potential.grad, atol=1e-4), ("grad potential", leak, reset)

        # Without autograd: the spikes and the state the harness carries from chunk to chunk.
        with torch.no_grad():
            first, state = fused.simulate(current[:4].detach(), None if potential is None else potential.detach(),
                                          limit, dynamics)
            rest, state = fused.simulate(current[4:].detach(), state, limit, dynamics)
        assert torch.equal(torch.cat([first, rest]), reference)
        assert torch.allclose(state, neuron.potential, atol=1e-5)
        cases += 1
    print(f"{cases} cases equal")
""")


def test_the_one_kernel_loop_equals_the_reference_loop_in_spikes_state_and_gradients():
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "256 cases equal" in done.stdout
