"""gdn2.torch on CPU tensors: fla's call signature, the reference underneath, autograd wired right, refusals clear.
Skipped without PyTorch (GDN2_WITH_TORCH=1 scripts/setup.sh installs Debian's CPU build)."""

import numpy as np
import pytest

import gdn2
from conftest import random_inputs

torch = pytest.importorskip("torch")
from gdn2.torch import chunk_gdn2, fused_recurrent_gdn2  # noqa: E402


def tensors(seed=0, dtype=torch.float64, **shape):
    x = random_inputs(seed=seed, **shape)
    return {n: torch.from_numpy(a).to(dtype) for n, a in x.items()}


def test_forward_is_the_reference():
    x = tensors(seed=1)
    o, ht = chunk_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], initial_state=x["h0"], output_final_state=True)
    o_ref, ht_ref = gdn2.forward(*(x[n].numpy() for n in "qkvgbw"), initial_state=x["h0"].numpy())
    print("max |o - ref|", (o - torch.from_numpy(o_ref)).abs().max().item())
    assert torch.equal(o, torch.from_numpy(o_ref)) and torch.equal(ht, torch.from_numpy(ht_ref))
    o_rec, _ = fused_recurrent_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], initial_state=x["h0"])
    o_rec_ref, _ = gdn2.forward(*(x[n].numpy() for n in "qkvgbw"), initial_state=x["h0"].numpy(), form="recurrent")
    assert torch.equal(o_rec, torch.from_numpy(o_rec_ref))
    o32, none = chunk_gdn2(*(x[n].float() for n in "qkvgbw"))
    print("float32 output dtype", o32.dtype)
    assert none is None and o32.dtype == torch.float32


def test_gradients_are_the_reference_backward():
    x = tensors(seed=2)
    leaves = {n: x[n].clone().requires_grad_() for n in ("q", "k", "v", "g", "b", "w", "h0")}
    o, ht = chunk_gdn2(*(leaves[n] for n in "qkvgbw"), initial_state=leaves["h0"], output_final_state=True)
    ((o * x["do"]).sum() + (ht * x["dht"]).sum()).backward()
    ref = gdn2.backward(*(x[n].numpy() for n in "qkvgbw"), do=x["do"].numpy(), dht=x["dht"].numpy(),
                        initial_state=x["h0"].numpy())
    for n in ("q", "k", "v", "g", "b", "w", "h0"):
        g_ref = torch.from_numpy(ref["d" + n])
        print(f"d{n}: max |torch - reference| = {(leaves[n].grad - g_ref).abs().max().item():.3e}")
        assert torch.equal(leaves[n].grad, g_ref)


def test_gates_per_value_head():
    """g, b [B,T,HV,K] as fla's fused_recurrent_gdn2 takes them: the reference's values and gradients."""
    x = tensors(seed=7, value_head_gates=True)
    leaves = {n: x[n].clone().requires_grad_() for n in ("q", "k", "v", "g", "b", "w")}
    o, ht = fused_recurrent_gdn2(*(leaves[n] for n in "qkvgbw"), output_final_state=True)
    ((o * x["do"]).sum() + (ht * x["dht"]).sum()).backward()
    args = [x[n].numpy() for n in "qkvgbw"]
    o_ref, _ = gdn2.forward(*args, form="recurrent")
    ref = gdn2.backward(*args, do=x["do"].numpy(), dht=x["dht"].numpy(), form="recurrent")
    print("g", tuple(x["g"].shape), "dg", tuple(leaves["g"].grad.shape))
    assert torch.equal(o, torch.from_numpy(o_ref))
    assert torch.equal(leaves["g"].grad, torch.from_numpy(ref["dg"]))
    assert torch.equal(leaves["b"].grad, torch.from_numpy(ref["db"]))


def test_autograd_gradcheck_float64():
    """torch.autograd.gradcheck: finite differences of the op against its backward, both forms, with every input."""
    x = tensors(seed=3, B=1, T=9, H=1, HV=2, K=3, V=2)
    args = [x[n].clone().requires_grad_() for n in ("q", "k", "v", "g", "b", "w", "h0")]
    for op in (chunk_gdn2, fused_recurrent_gdn2):
        def f(q, k, v, g, b, w, h0):
            return op(q, k, v, g, b, w, initial_state=h0, output_final_state=True)
        ok = torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)
        print(op.__name__, "gradcheck", ok)
        assert ok


def test_a_second_derivative_is_refused_not_silently_zero():
    """Before, torch.autograd.grad(..., create_graph=True) returned gradients with no graph, so a gradient penalty
    added nothing to the loss's gradient and no error was raised; the backward is now once-differentiable."""
    x = tensors(seed=5, B=1, T=9, H=1, HV=2, K=3, V=2)
    q = x["q"].clone().requires_grad_()
    for op in (chunk_gdn2, fused_recurrent_gdn2):
        o, _ = op(q, *(x[n] for n in "kvgbw"))
        gq, = torch.autograd.grad((o ** 2).sum(), q, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable") as e:
            gq.pow(2).sum().backward()
        print(op.__name__, "second derivative ->", str(e.value).splitlines()[0])


def test_gate_in_kernel_and_l2norm_on_cpu_gradcheck():
    x = tensors(seed=4, B=1, T=7, H=2, HV=2, K=3, V=2, h0=False)
    rng = np.random.default_rng(4)
    logits = torch.from_numpy(rng.standard_normal((1, 7, 2, 3))).requires_grad_()
    A_log = torch.from_numpy(rng.standard_normal(2) * 0.3).requires_grad_()
    dt_bias = torch.from_numpy(rng.standard_normal(6) * 0.3).requires_grad_()
    q, k = x["q"].clone().requires_grad_(), x["k"].clone().requires_grad_()

    def f(q, k, logits, A_log, dt_bias):
        return chunk_gdn2(q, k, x["v"], logits, x["b"], x["w"], use_gate_in_kernel=True, use_qk_l2norm_in_kernel=True,
                          A_log=A_log, dt_bias=dt_bias, output_final_state=True)
    ok = torch.autograd.gradcheck(f, (q, k, logits, A_log, dt_bias), eps=1e-6, atol=1e-7, rtol=1e-5)
    print("gate-in-kernel + l2norm gradcheck", ok)
    assert ok


def test_state_v_first_and_varlen():
    x = tensors(seed=5, B=1, T=40, H=2, HV=2, K=4, V=3, h0=False)
    cu = torch.tensor([0, 13, 40])
    h0 = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 2, 4, 3)))
    o, ht = chunk_gdn2(*(x[n] for n in "qkvgbw"), initial_state=h0, output_final_state=True, cu_seqlens=cu)
    o_t, ht_t = chunk_gdn2(*(x[n] for n in "qkvgbw"), initial_state=h0.transpose(-1, -2).contiguous(),
                           output_final_state=True, cu_seqlens=cu, state_v_first=True)
    print("ht", tuple(ht.shape), "state_v_first ht", tuple(ht_t.shape))
    assert torch.equal(o, o_t) and torch.equal(ht, ht_t.transpose(-1, -2))


def test_state_v_first_without_an_initial_state_lays_out_the_final_state():
    """The refusal above is of state_v_first with no state at all: without initial_state it still has an effect
    when the final state is returned (ht [N,HV,V,K]), and is accepted."""
    x = tensors(seed=8, B=1, T=20, H=2, HV=2, K=4, V=3, h0=False)
    for op in (chunk_gdn2, fused_recurrent_gdn2):
        o, ht = op(*(x[n] for n in "qkvgbw"), output_final_state=True)
        o_t, ht_t = op(*(x[n] for n in "qkvgbw"), output_final_state=True, state_v_first=True)
        print(op.__name__, "ht", tuple(ht.shape), "state_v_first ht", tuple(ht_t.shape))
        assert ht_t.shape == (1, 2, 3, 4) and torch.equal(o, o_t) and torch.equal(ht, ht_t.transpose(-1, -2))


def test_state_v_first_shape_is_refused_in_its_own_layout():
    """Before: the state was transposed first and the reference's message showed the transposed shape as found and
    the [N,HV,K,V] shape as expected ("h0: shape [1,2,3,4], expected [1,2,4,3] ..."): the shape given, as expected."""
    x = tensors(seed=7, B=1, T=20, H=2, HV=2, K=4, V=3, h0=False)
    h0 = torch.zeros(1, 2, 4, 3, dtype=torch.float64)  # [N,HV,K,V], where state_v_first takes [N,HV,V,K]
    for op in (chunk_gdn2, fused_recurrent_gdn2):
        with pytest.raises(ValueError) as e:
            op(*(x[n] for n in "qkvgbw"), initial_state=h0, state_v_first=True)
        print(op.__name__, e.value)
        assert str(e.value).startswith("initial_state: shape (1, 2, 4, 3), expected (1, 2, 3, 4) ")


@pytest.mark.parametrize("call, words", [
    (lambda x: chunk_gdn2(*(x[n].half() for n in "qkvgbw")), r"float16 is not supported.*\.float\(\) or \.double\(\) on CPU"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkv"), x["g"].half(), x["b"], x["w"]),
     r"^g: float16 is not supported.*\.float\(\) or \.double\(\) on CPU"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvg"), x["b"].bfloat16(), x["w"]),
     r"^b: gdn2 on CPU runs the reference in float32 or float64, got torch\.bfloat16 \(use \.float\(\) or \.double\(\)\)"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), cu_seqlens=np.array([0, 70, 140])),
     "cu_seqlens: expected a torch.Tensor, got ndarray"),
    (lambda x: chunk_gdn2(x["q"].numpy(), *(x[n] for n in "kvgbw")), "q: expected a torch.Tensor, got ndarray"),
    (lambda x: chunk_gdn2(*(x[n].bfloat16() for n in "qkvgbw")), "float32 or float64"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), safe_gate=True), "safe_gate"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), chunk_size=32), "chunk_size must be 64"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), return_intermediate_states=True), "return_intermediate_states"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), use_gate_in_kernel=True), "needs A_log"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), use_gate_in_kernel=True, lower_bound=-5.0), "lower_bound"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), cu_seqlens=torch.tensor([0, 70, 140])), "batch size 1"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), bogus=1), "unknown arguments: bogus"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgb"), x["w"] + 1), "w: value"),
    (lambda x: fused_recurrent_gdn2(x["q"], x["k"], x["v"], x["g"].abs(), x["b"], x["w"]), "g: value"),
])
def test_unsupported_options_are_refused_clearly(call, words):
    x = tensors(seed=6)
    with pytest.raises(ValueError, match=words) as e:
        call(x)
    print(e.value)


@pytest.mark.parametrize("call, words", [
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), lower_bound=-5.0),
     "lower_bound: has no effect without use_gate_in_kernel=True (it bounds the gate computed in the kernel, which "
     "gdn2 supports only without it); leave lower_bound out"),
    (lambda x: fused_recurrent_gdn2(*(x[n] for n in "qkvgbw"), lower_bound=-3.0),
     "lower_bound: has no effect without use_gate_in_kernel=True (it bounds the gate computed in the kernel, which "
     "gdn2 supports only without it); leave lower_bound out"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), A_log=torch.zeros(2, dtype=torch.float64)),
     "A_log: has no effect without use_gate_in_kernel=True (g = -exp(A_log) softplus(g + dt_bias), Eq. 12; CPU tensors "
     "only); give use_gate_in_kernel=True, or leave A_log out"),
    (lambda x: fused_recurrent_gdn2(*(x[n] for n in "qkvgbw"), dt_bias=torch.zeros(16, dtype=torch.float64)),
     "dt_bias: has no effect without use_gate_in_kernel=True (g = -exp(A_log) softplus(g + dt_bias), Eq. 12; CPU "
     "tensors only); give use_gate_in_kernel=True, or leave dt_bias out"),
    (lambda x: chunk_gdn2(*(x[n] for n in "qkvgbw"), state_v_first=True),
     "state_v_first: has no effect without initial_state or output_final_state=True (it is the layout [N,HV,V,K] of "
     "the initial and the final state); give one, or leave state_v_first out"),
    (lambda x: fused_recurrent_gdn2(*(x[n] for n in "qkvgbw"), state_v_first=True, output_final_state=False),
     "state_v_first: has no effect without initial_state or output_final_state=True (it is the layout [N,HV,V,K] of "
     "the initial and the final state); give one, or leave state_v_first out"),
])
def test_arguments_without_effect_are_refused_not_ignored(call, words):
    """Before, lower_bound, A_log and dt_bias without use_gate_in_kernel were accepted and ignored, and so was
    state_v_first with no state to lay out (no initial_state, output_final_state=False)."""
    x = tensors(seed=6, B=1, T=20, H=2, HV=2, K=8, V=4)
    with pytest.raises(ValueError) as e:
        call(x)
    print(e.value)
    assert str(e.value) == words


def test_a_wrong_initial_state_is_named_initial_state_in_the_layout_given():
    """Before, on CPU without state_v_first the reference's name and words: "h0: shape [1,2,3,4], expected [1,2,4,3]
    (one initial state [HV,K,V] per sequence, N = 1)"; and a non-finite value "h0: value inf at [0,1,2,0] (must be
    finite)", at its index in [N,HV,K,V] even with state_v_first."""
    x = tensors(seed=7, B=1, T=20, H=2, HV=2, K=4, V=3, h0=False)
    h0 = torch.zeros(1, 2, 4, 3, dtype=torch.float64)
    h0[0, 1, 2, 0] = float("inf")
    cases = [
        (dict(initial_state=torch.zeros(1, 2, 3, 4, dtype=torch.float64)),
         "initial_state: shape (1, 2, 3, 4), expected (1, 2, 4, 3) (one state [HV,K,V] per sequence, N = 1)"),
        (dict(initial_state=h0), "initial_state: value inf at [0,1,2,0] (must be finite)"),
        (dict(initial_state=h0.transpose(-1, -2).contiguous(), state_v_first=True),
         "initial_state: value inf at [0,1,0,2] (must be finite)"),
    ]
    for op in (chunk_gdn2, fused_recurrent_gdn2):
        for kwargs, words in cases:
            with pytest.raises(ValueError) as e:
                op(*(x[n] for n in "qkvgbw"), **kwargs)
            print(op.__name__, e.value)
            assert str(e.value) == words
