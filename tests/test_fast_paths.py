"""Fast paths of the per-step work (docs/performance.md, the whole sampling loop): each gives the values of the
plain formula it replaces, bit for bit."""
import torch

from openwan import sampling
from openwan.sampling import UniPCSolver, _lam


def test_rms_norm_fast_path_is_the_formula():
    """fp32 inference on the CPU uses torch's rms_norm: the same values, bit for bit, as the formula (the path
    used with gradients, in bf16 and on other devices); shapes of the q/k norms of the tiny and 1.3B models."""
    from openwan.models.dit_layers import RMSNorm
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 16, 24), (2, 65, 24), (1, 300, 1536), (2, 7, 5120)]:
        norm = RMSNorm(shape[-1])
        with torch.no_grad():
            norm.weight.copy_(torch.randn(shape[-1], generator=g))
        x = torch.randn(shape, generator=g) * 3
        with torch.no_grad():
            fast = norm(x)
        with torch.enable_grad():
            slow = norm(x)                              # the formula (the grad path)
        assert torch.equal(fast, slow.detach()), shape



def test_unipc_coefficients_equal_the_per_step_scalar_formulas():
    """UniPC computes its per-interval scalars once per solve, elementwise over the grid: the same float32 values as
    the formulas evaluated on 0-d tensors one interval at a time (how each step computed them before)."""
    for steps, shift in [(1, 5.0), (2, 1.0), (7, 3.0), (50, 5.0), (40, 16.0)]:
        grid = sampling.unipc_sigmas(steps, shift)
        solver = UniPCSolver(grid)
        c = solver._coefficients(torch.device("cpu"))
        s = solver.sigmas
        for j in range(steps):
            s0, t = s[j], s[j + 1]
            alpha_t = 1 - t
            h = _lam(t) - _lam(s0)
            hh = -h
            b_h = torch.expm1(hh)
            assert c["sigma"][j] == s0.item() and c["ratio"][j] == (t / s0).item()
            assert c["scale"][j] == (alpha_t * b_h).item()
            if j >= 1 and j < steps - 1:                  # order 2 (the last interval is order 1)
                r1 = (_lam(s[j - 1]) - _lam(s0)) / h
                phi1 = torch.expm1(hh) / hh - 1
                phi2 = phi1 / hh - 0.5
                b1, b2 = phi1 / b_h, 2 * phi2 / b_h
                rho0 = (b1 - b2) / (1 - r1)
                assert torch.equal(c["r1"][j], r1)
                assert c["rho0"][j] == rho0.item() and c["rho1"][j] == (b1 - rho0).item()


def test_cached_sinusoid_frequencies_serve_inference_and_training():
    """The sinusoid's frequencies are made once; made under inference_mode they must still serve a training step."""
    from openwan.configs import get_variant
    from openwan.models import dit_layers
    from openwan.models.dit import WanModel
    from openwan.testing import randomize_
    dit_layers._FREQS.clear()
    dit = randomize_(WanModel(get_variant("tiny-t2v").dit))
    x, t, ctx = torch.randn(1, 16, 2, 4, 4), torch.tensor([500]), [torch.randn(5, dit.config.text_dim)]
    with torch.inference_mode():
        ref = dit(x, t, ctx)
    assert dit_layers._FREQS
    out = dit(x, t, ctx)
    out.square().mean().backward()
    assert torch.equal(out.detach(), ref) and dit.time_embedding[0].weight.grad is not None
