"""gdn2's kernels as PyTorch ops with flash-linear-attention's signatures.

    from gdn2.torch import chunk_gdn2, fused_recurrent_gdn2
    o, ht = chunk_gdn2(q, k, v, g, b, w, initial_state=h0, output_final_state=True)   # as fla.ops.gdn2.chunk_gdn2
    o.sum().backward()

On CUDA tensors they run gdn2's CUDA kernels (cuda/include/gdn2/cuda.hpp) on the current stream, called through the
extension with the tensors' data pointers: q, k, v, b, w in bfloat16 or float32 (b, w are cast to q's dtype, g to
float32, as the kernels store them), initial_state float32, K in {64, 128}, V a multiple of 32. The chunk form's
backward is gdn2's deterministic chunkwise backward (Appendix B); when autograd records a graph (grad mode on and an
input that requires grad; not under torch.no_grad), the forward keeps its workspace for it (SavedForBackward).
fused_recurrent_gdn2 runs the token recurrence forward (decoding) and, when gradients are asked for, the same
chunkwise backward (the gradient of the same function).

On CPU tensors (float32 or float64) the same calls run the reference, forward and backward, in the tensors' precision:
the same model code trains on a machine without a GPU.

What fla accepts but gdn2 refuses, with a ValueError saying so: float16 (the kernels store bfloat16 or float32);
bfloat16 CPU tensors; use_qk_l2norm_in_kernel and use_gate_in_kernel on CUDA (normalise q, k and activate g before
the call; on CPU both run the reference's front-end: l2 normalisation, and g = -exp(A_log) softplus(g + dt_bias) of
Eq. 12); lower_bound with use_gate_in_kernel; safe_gate, chunk sizes other than 64, return_intermediate_states.
lower_bound, A_log and dt_bias without use_gate_in_kernel are refused as having no effect, not ignored, and so is
state_v_first with neither initial_state nor output_final_state=True. disable_recompute and cu_seqlens_cpu are
accepted and have no effect. state_v_first stores the states as [N,HV,V,K].
The gates g and b are each per key head [B,T,H,K] (value head hv reads key head hv // (HV // H)) or per value head
[B,T,HV,K] as fla's fused_recurrent_gdn2 takes them; their gradients come back in the layout given. The CUDA kernels
take both gates in one layout: given one per key head and the other per value head, the first is repeated over its
key head's value heads (repeat_interleave; autograd sums its gradient back over them).
"""

import re as _re

import torch as _torch
from torch.autograd.function import once_differentiable as _once_differentiable

from . import _gdn2

__all__ = ["chunk_gdn2", "fused_recurrent_gdn2"]


_FLOAT16 = ("float16 is not supported: gdn2's kernels store bfloat16 or float32 (CUDA), the reference float32 or "
            "float64 (CPU): use .bfloat16() or .float() on CUDA, .float() or .double() on CPU")


def _refuse(cond, message):
    if cond:
        raise ValueError(message)


def _numpy(x):
    # A CPU tensor's memory as a NumPy array (no copy; the extension copies once into the reference's tensors).
    return None if x is None else x.detach().contiguous().numpy()


def _as_initial_state(message, state_v_first):
    """A refusal of the reference's, which names the initial state as its file h0 and indexes it [N,HV,K,V], in the
    argument's name and the layout it was given in ("h0: value inf at [0,1,2,0] (must be finite)" ->
    "initial_state: value inf at [0,1,0,2] (must be finite)" with state_v_first)."""
    m = _re.match(r"h0(?:\.npy)?: (.*)", message, _re.S)
    if not m:
        return message
    rest = m.group(1)
    if state_v_first:  # [n,h,k,v] -> [n,h,v,k]
        rest = _re.sub(r"( at \[\d+,\d+,)(\d+),(\d+)\]", r"\1\3,\2]", rest, count=1)
    return "initial_state: " + rest


def _cpu_precision(q):
    _refuse(q.dtype not in (_torch.float32, _torch.float64),
            f"gdn2 on CPU runs the reference in float32 or float64, got {q.dtype} (use .float() or .double())")
    return "f32" if q.dtype == _torch.float32 else "f64"


def _cpu_options(ctx):
    decay = "softplus" if ctx.use_gate_in_kernel else "none"
    return dict(form=ctx.form, precision=ctx.precision, variant="gdn2", chunk_size=64, scale=ctx.scale,
                l2norm_qk=ctx.l2norm, gate_logits=False, negative_eigen=ctx.negative_eigen, decay=decay,
                lower_bound=None, threads=0)


def _cpu_arrays(q, k, v, g, b, w, h0, cu_seqlens, A_log, dt_bias):
    return {"q": _numpy(q), "k": _numpy(k), "v": _numpy(v), "g": _numpy(g), "b": _numpy(b), "w": _numpy(w),
            "h0": _numpy(h0), "cu_seqlens": _numpy(cu_seqlens), "A_log": _numpy(A_log), "dt_bias": _numpy(dt_bias)}


def _sizes(q, v, g, cu_seqlens, scale):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    dtype = "bf16" if q.dtype == _torch.bfloat16 else "f32"
    return dict(B=B, T=T, H=H, HV=HV, K=K, V=V, N=N, HG=g.shape[2],  # HG: g, b per key head (H) or value head (HV)
                scale=0.0 if scale is None else scale, dtype=dtype,  # 0: K^-0.5
                stream=_torch.cuda.current_stream(q.device).cuda_stream, device=q.device.index or 0)


def _ptr(x):
    return 0 if x is None else x.data_ptr()


class _GDN2(_torch.autograd.Function):
    """(o, ht) of the layer; form "chunk" or "recurrent" (the forward kernel); the backward is the chunkwise one."""

    @staticmethod
    def forward(ctx, q, k, v, g, b, w, h0, A_log, dt_bias, cu_seqlens, scale, form, l2norm, use_gate_in_kernel,
                negative_eigen, keep_workspace):
        ctx.set_materialize_grads(False)
        ctx.scale, ctx.form, ctx.l2norm, ctx.use_gate_in_kernel = scale, form, l2norm, use_gate_in_kernel
        ctx.negative_eigen = negative_eigen
        ctx.saved_workspace = None
        if q.is_cuda:
            q, k, v, g, b, w = (x.contiguous() for x in (q, k, v, g, b, w))
            h0 = None if h0 is None else h0.contiguous()
            cu = None if cu_seqlens is None else cu_seqlens.to(device=q.device, dtype=_torch.int64).contiguous()
            sizes = _sizes(q, v, g, cu, scale)
            o = _torch.empty_like(v)
            ht = _torch.empty(sizes["N"], sizes["HV"], sizes["K"], sizes["V"], dtype=_torch.float32, device=q.device)
            args = [o.data_ptr(), ht.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), g.data_ptr(), b.data_ptr(),
                    w.data_ptr(), _ptr(h0), _ptr(cu)]
            if form == "chunk":
                saved = _gdn2.SavedForBackward() if keep_workspace else None
                _gdn2.cuda_chunk_forward(*args, **sizes, saved=saved)
                ctx.saved_workspace = saved
            else:
                _gdn2.cuda_recurrent_forward(*args, **sizes)
            ctx.save_for_backward(q, k, v, g, b, w, h0, cu)
            return o, ht
        ctx.precision = _cpu_precision(q)
        o, ht = _gdn2.forward(_cpu_arrays(q, k, v, g, b, w, h0, cu_seqlens, A_log, dt_bias), **_cpu_options(ctx))
        ctx.save_for_backward(q, k, v, g, b, w, h0, cu_seqlens, A_log, dt_bias)
        return _torch.from_numpy(o), _torch.from_numpy(ht)

    @staticmethod
    @_once_differentiable  # no second derivative: differentiating the gradients raises instead of returning zero
    def backward(ctx, do, dht):
        if ctx.saved_tensors[0].is_cuda:
            q, k, v, g, b, w, h0, cu = ctx.saved_tensors
            sizes = _sizes(q, v, g, cu, ctx.scale)
            dq, dk, db = _torch.empty_like(q), _torch.empty_like(k), _torch.empty_like(b)
            dv, dw = _torch.empty_like(v), _torch.empty_like(w)
            dg = _torch.empty_like(g)
            dh0 = _torch.empty(sizes["N"], sizes["HV"], sizes["K"], sizes["V"], dtype=_torch.float32, device=q.device)
            do = None if do is None else do.to(v.dtype).contiguous()
            dht = None if dht is None else dht.to(_torch.float32).contiguous()
            saved = ctx.saved_workspace
            _gdn2.cuda_chunk_backward(dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), dg.data_ptr(), db.data_ptr(),
                                      dw.data_ptr(), dh0.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                      g.data_ptr(), b.data_ptr(), w.data_ptr(), _ptr(h0), _ptr(cu), _ptr(do),
                                      _ptr(dht), **sizes, saved=saved)
            if saved is not None:
                saved.reset()  # the workspace goes back to the library's pool
                ctx.saved_workspace = None
            return (dq, dk, dv, dg, db, dw, dh0 if h0 is not None else None) + (None,) * 9
        q, k, v, g, b, w, h0, cu_seqlens, A_log, dt_bias = ctx.saved_tensors
        arrays = _cpu_arrays(q, k, v, g, b, w, h0, cu_seqlens, A_log, dt_bias)
        arrays["do"], arrays["dht"] = _numpy(do), _numpy(dht)
        grads = _gdn2.backward(arrays, **_cpu_options(ctx))
        out = [grads.get(name) for name in ("dq", "dk", "dv", "dg", "db", "dw", "dh0", "dA_log", "ddt_bias")]
        out = [None if x is None else _torch.from_numpy(x) for x in out]
        if A_log is not None:  # the reference's gradients have the shapes of the arrays it read
            out[7] = out[7].reshape(A_log.shape)
            out[8] = out[8].reshape(dt_bias.shape)
        return tuple(out) + (None,) * 7


def _gdn2_op(form, q, k, v, g, b, w, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
             use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first, negative_eigen):
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("b", b), ("w", w), ("initial_state", initial_state),
                    ("cu_seqlens", cu_seqlens), ("A_log", A_log), ("dt_bias", dt_bias)):
        _refuse(x is not None and not isinstance(x, _torch.Tensor),
                f"{name}: expected a torch.Tensor, got {type(x).__name__} (gdn2.forward takes NumPy arrays)")
    _refuse(q.dim() != 4 or v.dim() != 4, f"q and v must be 4-D [B,T,H,K] and [B,T,HV,V], got {tuple(q.shape)} and "
                                          f"{tuple(v.shape)}")
    _refuse(q.dtype == _torch.float16, "q: " + _FLOAT16)
    _refuse(cu_seqlens is not None and q.shape[0] != 1,
            f"cu_seqlens: packed sequences need batch size 1, got {q.shape[0]}")
    _refuse(use_gate_in_kernel and lower_bound is not None,
            "use_gate_in_kernel with lower_bound is not supported by gdn2 (only g = -exp(A_log) softplus(g + dt_bias))")
    # What has an effect only through the gate of use_gate_in_kernel is refused without it, rather than ignored.
    _refuse(not use_gate_in_kernel and lower_bound is not None,
            "lower_bound: has no effect without use_gate_in_kernel=True (it bounds the gate computed in the kernel, "
            "which gdn2 supports only without it); leave lower_bound out")
    for name, x in (("A_log", A_log), ("dt_bias", dt_bias)):
        _refuse(not use_gate_in_kernel and x is not None,
                f"{name}: has no effect without use_gate_in_kernel=True (g = -exp(A_log) softplus(g + dt_bias), Eq. 12; "
                f"CPU tensors only); give use_gate_in_kernel=True, or leave {name} out")
    # state_v_first is the layout of the states given and returned: with neither there is nothing to lay out.
    _refuse(state_v_first and initial_state is None and not output_final_state,
            "state_v_first: has no effect without initial_state or output_final_state=True (it is the layout "
            "[N,HV,V,K] of the initial and the final state); give one, or leave state_v_first out")
    _refuse(initial_state is not None and initial_state.dtype != _torch.float32 and q.is_cuda,
            "initial_state must be float32")
    if initial_state is not None:
        # Checked here, by its name and in the layout given: the reference would name it h0, and after the transpose
        # below report a wrong shape transposed, against the [N,HV,K,V] layout the caller did not use.
        N = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
        HV, K, V = v.shape[2], q.shape[3], v.shape[3]
        want, layout = ((N, HV, V, K), "state_v_first: one state [HV,V,K]") if state_v_first else \
            ((N, HV, K, V), "one state [HV,K,V]")
        _refuse(tuple(initial_state.shape) != want,
                f"initial_state: shape {tuple(initial_state.shape)}, expected {want} ({layout} per sequence, N = {N})")
        if state_v_first:
            initial_state = initial_state.transpose(-1, -2)
    if q.is_cuda:
        _refuse(not _gdn2.has_cuda, "gdn2 was built without its CUDA kernels (GDN2_BUILD_CUDA=OFF): CUDA tensors "
                                    "cannot be used")
        _refuse(use_qk_l2norm_in_kernel, "use_qk_l2norm_in_kernel is not supported by gdn2's CUDA kernels: normalise "
                                         "q and k before the call")
        _refuse(use_gate_in_kernel, "use_gate_in_kernel is not supported by gdn2's CUDA kernels: pass the log-decay g")
        _refuse(q.dtype not in (_torch.bfloat16, _torch.float32),
                f"gdn2's CUDA kernels take bfloat16 or float32, got {q.dtype}")
        # The kernels read raw pointers: every shape is checked here (the reference checks its own on CPU).
        B, T, H, K = q.shape
        HV, V = v.shape[2], v.shape[3]
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        for name, x, want in (("k", k, (B, T, H, K)), ("v", v, (B, T, HV, V)), ("w", w, (B, T, HV, V)),
                              ("initial_state", initial_state, (N, HV, K, V))):
            _refuse(x is not None and tuple(x.shape) != want, f"{name}: shape {tuple(x.shape) if x is not None else ()}"
                                                              f", expected {want}")
        for name, x in (("g", g), ("b", b)):
            _refuse(tuple(x.shape) not in ((B, T, H, K), (B, T, HV, K)),
                    f"{name}: shape {tuple(x.shape)}, expected {(B, T, H, K)} (per key head) or {(B, T, HV, K)} (per "
                    f"value head)")
        if g.shape[2] != b.shape[2]:  # one per key head, one per value head: the kernels take both in one layout
            g, b = (x.repeat_interleave(HV // H, dim=2) if x.shape[2] == H else x for x in (g, b))
        _refuse(any(x.device != q.device for x in (k, v, g, b, w)) or
                (initial_state is not None and initial_state.device != q.device),
                "every tensor must be on q's device")
        # The kernels' storage types: g float32, the others q's dtype (casts outside the Function, so autograd
        # returns each gradient in its input's dtype).
        g, b, w, k, v = g.float(), b.to(q.dtype), w.to(q.dtype), k.to(q.dtype), v.to(q.dtype)
    else:
        # Each tensor reaches the reference as it is: one of another dtype is refused by its name, as q is (a bfloat16
        # one would otherwise fail in .numpy() without saying which).
        for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("b", b), ("w", w), ("initial_state", initial_state),
                        ("A_log", A_log), ("dt_bias", dt_bias)):
            if x is None:
                continue
            _refuse(x.dtype == _torch.float16, f"{name}: {_FLOAT16}")
            _refuse(x.dtype not in (_torch.float32, _torch.float64),
                    f"{name}: gdn2 on CPU runs the reference in float32 or float64, got {x.dtype} (use .float() or "
                    f".double())")
        if use_gate_in_kernel:
            _refuse(A_log is None, "use_gate_in_kernel needs A_log")
            if dt_bias is None:
                dt_bias = q.new_zeros(q.shape[2] * q.shape[3])
    # The forward keeps its workspace for the backward only when autograd will call one: ctx.needs_input_grad is set
    # under torch.no_grad too (a leaf that requires grad, evaluated without a graph).
    keep_workspace = _torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, g, b, w, initial_state, A_log, dt_bias))
    try:
        o, ht = _GDN2.apply(q, k, v, g, b, w, initial_state, A_log if use_gate_in_kernel else None,
                            dt_bias if use_gate_in_kernel else None, cu_seqlens, None if scale is None else float(scale),
                            form, bool(use_qk_l2norm_in_kernel), bool(use_gate_in_kernel), bool(negative_eigen),
                            keep_workspace)
    except ValueError as e:  # the reference's refusal (CPU)
        raise ValueError(_as_initial_state(str(e), state_v_first)) from None
    o = o.to(q.dtype)
    if not output_final_state:
        return o, None
    return o, (ht.transpose(-1, -2) if state_v_first else ht)


def chunk_gdn2(q, k, v, g, b, w, scale=None, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, cu_seqlens=None, cu_seqlens_cpu=None,
               safe_gate=False, lower_bound=None, disable_recompute=False, return_intermediate_states=False,
               state_v_first=False, **kwargs):
    """Chunkwise GDN-2 (paper Eq. 18-25) with fla.ops.gdn2.chunk_gdn2's signature: returns (o, final_state or None).

    q, k [B,T,H,K]; g, b each [B,T,H,K] or [B,T,HV,K]; v, w [B,T,HV,V]; initial_state [N,HV,K,V] float32
    ([N,HV,V,K] with state_v_first); cu_seqlens int [N+1] (B = 1). kwargs: A_log, dt_bias (use_gate_in_kernel, CPU
    only), chunk_size (64 only), negative_eigen=True lets b lie in [0, 2] on CPU (the CUDA kernels accept it as
    given). See the module's docstring for what is refused.
    """
    _refuse(safe_gate, "safe_gate is not supported by gdn2 (its chunk form is exact for every g in [-inf, 0])")
    _refuse(return_intermediate_states, "return_intermediate_states is not supported by gdn2")
    _refuse(kwargs.get("chunk_size", 64) != 64, f"chunk_size must be 64, got {kwargs.get('chunk_size')}")
    unknown = set(kwargs) - {"A_log", "dt_bias", "chunk_size", "negative_eigen"}
    _refuse(bool(unknown), f"unknown arguments: {', '.join(sorted(unknown))}")
    return _gdn2_op("chunk", q, k, v, g, b, w, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
                    use_gate_in_kernel, kwargs.get("A_log"), kwargs.get("dt_bias"), lower_bound, cu_seqlens,
                    state_v_first, kwargs.get("negative_eigen", False))


def fused_recurrent_gdn2(q, k, v, g, b, w, A_log=None, dt_bias=None, scale=None, initial_state=None,
                         output_final_state=False, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                         lower_bound=None, state_v_first=False, cu_seqlens=None, **kwargs):
    """Token-by-token GDN-2 (paper Eq. 9) with fla.ops.gdn2.fused_recurrent_gdn2's signature: (o, final_state or None).

    The decoding path (T = 1 with the previous state as initial_state). Unlike fla's it is differentiable: the
    backward is the chunkwise one (CUDA) or the reference's recurrence backward (CPU).
    """
    unknown = set(kwargs) - {"negative_eigen"}
    _refuse(bool(unknown), f"unknown arguments: {', '.join(sorted(unknown))}")
    return _gdn2_op("recurrent", q, k, v, g, b, w, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
                    use_gate_in_kernel, A_log, dt_bias, lower_bound, cu_seqlens, state_v_first,
                    kwargs.get("negative_eigen", False))
