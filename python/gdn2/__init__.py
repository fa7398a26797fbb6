"""gdn2 — the float64 reference of Gated DeltaNet-2 from NumPy (and its CUDA kernels from PyTorch: gdn2.torch).

    S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T,   o_t = S_t^T (scale q_t)

Layout of flash-linear-attention: q, k, g, b [B,T,H,K]; v, w [B,T,HV,V]; initial_state and the final state ht
[N,HV,K,V]; value head hv reads key head hv // (HV // H). Arrays are float32 or float64 NumPy arrays in any memory
order (views included); each is copied once, in one pass, into the working precision (precision="f64" or "f32"), and
the results come back as NumPy arrays of that precision. Every function runs the same C++ code as the `gdn2` command
line: the same options (named as in flash-linear-attention where it has them), the same results bit for bit, and bad
input raises ValueError with the command line's one-line message naming the tensor.

    o, ht = gdn2.forward(q, k, v, g, b, w)                          # chunk form, float64, C = 64
    grads = gdn2.backward(q, k, v, g, b, w, do=do, dht=dht)        # {"dq": ..., "dk": ..., ..., "dw": ...}
    report = gdn2.check(inputs, candidate)                          # `gdn2 check` on dicts of arrays
"""

import numpy as _np

from . import _gdn2

__all__ = ["forward", "backward", "check", "random_inputs", "has_cuda", "Report"]

Report = _gdn2.Report

has_cuda = _gdn2.has_cuda  # the extension was built with the CUDA kernels (gdn2.torch uses them on CUDA tensors)


def _arrays(q, k, v, g, b, w, beta, initial_state, cu_seqlens, A_log, dt_bias):
    # The names of the command line's input files (q.npy, ..., h0.npy, cu_seqlens.npy).
    return {"q": q, "k": k, "v": v, "g": g, "b": b, "w": w, "beta": beta, "h0": initial_state,
            "cu_seqlens": cu_seqlens, "A_log": A_log, "dt_bias": dt_bias}


def _int(name, x):  # an integer as it is (3.7, True or "64" refused, not rounded or parsed)
    if isinstance(x, (bool, _np.bool_)) or not isinstance(x, (int, _np.integer)):
        raise ValueError(f"{name}: expected an integer, got {type(x).__name__} {x!r}")
    return int(x)


def _float(name, x):
    if isinstance(x, (bool, _np.bool_)) or not isinstance(x, (int, float, _np.integer, _np.floating)):
        raise ValueError(f"{name}: expected a number, got {type(x).__name__} {x!r}")
    return float(x)


def _bool(name, x):  # "False" is a non-empty string, so bool("False") would be True
    if not isinstance(x, (bool, _np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {type(x).__name__} {x!r}")
    return bool(x)


def _options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits, negative_eigen, decay, lower_bound,
             num_threads):
    return dict(form=form, precision=precision, variant=variant, chunk_size=_int("chunk_size", chunk_size),
                scale=None if scale is None else _float("scale", scale), l2norm_qk=_bool("l2norm_qk", l2norm_qk),
                gate_logits=_bool("gate_logits", gate_logits), negative_eigen=_bool("negative_eigen", negative_eigen),
                decay=decay, lower_bound=None if lower_bound is None else _float("lower_bound", lower_bound),
                threads=_int("num_threads", num_threads))


def forward(q, k, v, g=None, b=None, w=None, *, scale=None, initial_state=None, output_final_state=True,
            cu_seqlens=None, form="chunk", chunk_size=64, precision="f64", variant="gdn2", beta=None,
            l2norm_qk=False, gate_logits=False, negative_eigen=False, decay="none", A_log=None, dt_bias=None,
            lower_bound=None, num_threads=0):
    """The layer's forward: (o [B,T,HV,V], ht [N,HV,K,V]) — `gdn2 forward`.

    form: "chunk" (the chunkwise WY form, Eq. 18-25, chunk size C = chunk_size; any C >= 1 is exact) or "recurrent"
    (the token recurrence, Eq. 9). precision: "f64" or "f32", the working precision and the outputs' dtype.
    scale: query scale (default K^-0.5). initial_state: h0 [N,HV,K,V] (absent = zero). cu_seqlens: int32/int64 [N+1]
    offsets of N sequences packed along T (B = 1).
    variant: "gdn2" (g, b, w), "kda" (g [B,T,H,K], beta [B,T,H]: b = w = beta*1), "gdn" (g [B,T,H], beta),
    "deltanet" (beta only), "linear" (g optional, no erase, w = 1).
    Front-end (applied first, as the command line's flags): l2norm_qk (--l2norm-qk), gate_logits (b, w or beta hold
    logits: sigmoid, Eq. 11; --gate-logits), negative_eigen (b in [0, 2]; --negative-eigen), decay = "softplus"
    (g holds logits: g = -exp(A_log) softplus(g + dt_bias), Eq. 12; A_log [H], dt_bias [H*K]) or "bounded"
    (g = lower_bound sigmoid(g + dt_bias); lower_bound defaults to -5). num_threads: threads over (sequence, value
    head); 0 = all cores (the result does not depend on it). output_final_state=False returns (o, None).
    An argument given where it has no effect raises ValueError naming what it needs, as the command line refuses such
    an option: lower_bound without decay="bounded", A_log without decay="softplus", dt_bias without a decay, beta with
    variant="gdn2", b and w with a tied variant, g with "deltanet", gate_logits with "linear", negative_eigen with a
    variant other than "gdn2".
    """
    o, ht = _gdn2.forward(_arrays(q, k, v, g, b, w, beta, initial_state, cu_seqlens, A_log, dt_bias),
                          **_options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits,
                                     negative_eigen, decay, lower_bound, num_threads))
    return o, (ht if output_final_state else None)


def backward(q, k, v, g=None, b=None, w=None, do=None, dht=None, *, scale=None, initial_state=None,
             cu_seqlens=None, form="chunk", chunk_size=64, precision="f64", variant="gdn2", beta=None,
             l2norm_qk=False, gate_logits=False, negative_eigen=False, decay="none", A_log=None, dt_bias=None,
             lower_bound=None, num_threads=0):
    """Gradients of L = <do, o> + <dht, ht> — `gdn2 backward`: a dict of arrays named as its output files.

    Always dq, dk, dv; dh0 when initial_state is given; per variant dg, db, dw (gdn2) or dbeta (kda, gdn, deltanet)
    and dg; with decay="softplus"/"bounded" also dA_log / ddt_bias. With a front-end each gradient is the one of the
    array as given (logits, unnormalised q and k). do [B,T,HV,V] and dht [N,HV,K,V] may be None (zero). The options
    are forward()'s.
    """
    arrays = _arrays(q, k, v, g, b, w, beta, initial_state, cu_seqlens, A_log, dt_bias)
    arrays["do"], arrays["dht"] = do, dht
    return _gdn2.backward(arrays, **_options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits,
                                             negative_eigen, decay, lower_bound, num_threads))


def check(inputs, candidate, tolerance=None, only=None, *, form="chunk", chunk_size=64, variant="gdn2", scale=None,
          l2norm_qk=False, gate_logits=False, negative_eigen=False, decay="none", lower_bound=None, num_threads=0):
    """`gdn2 check` on arrays in memory: judges `candidate` against the float64 reference run on `inputs`.

    inputs: dict of arrays named as `gdn2 check --in` files (q, k, v, g, b, w or beta, optional h0, cu_seqlens,
    A_log, dt_bias, and the upstream gradients do, dht when gradients are to be judged; any other name raises
    ValueError: the initial state is h0 here, not initial_state; so does an input the options do not read, beta with
    variant="gdn2" say, as forward() refuses it). candidate: dict of arrays
    named as `--candidate` files (o, ht, dq, dk, dv, dg, db, dw, dh0, dbeta, ...). Arrays: NumPy (anything
    numpy.asarray takes: a CPU tensor's .detach().numpy(), say), float32 or float64. tolerance: None ("auto": by the
    candidate's dtype), "f64", "f32", "bf16" or a number. only: names to compare, a list or "o,ht" (others are not
    required).
    The options are forward()'s. Returns a Report: .passed, .rows (name, verdict, ratio, max_abs_error,
    worst_index, non_finite, first_non_finite, worst_block, local_ratio, bound, bound_reason, note), .table (the
    command line's table; also str(report)) and .json. Bad inputs raise ValueError; a float64 reference that
    overflows raises OverflowError.
    """
    def arrays(d):
        return {n: None if a is None else _np.asarray(a) for n, a in d.items()}
    tol = "auto" if tolerance is None else (tolerance if isinstance(tolerance, str) else repr(float(tolerance)))
    o = _options(form, "f64", variant, chunk_size, scale, l2norm_qk, gate_logits, negative_eigen, decay, lower_bound,
                 num_threads)
    del o["precision"]
    only = only.split(",") if isinstance(only, str) else list(only or [])  # "o,ht" as the command line's --only
    return _gdn2.check(arrays(inputs), arrays(candidate), tolerance=tol, only=only, **o)


def random_inputs(B=2, T=100, H=2, HV=2, K=16, V=16, *, seed=0, g_low=-0.5, initial_state=True):
    """Layer inputs drawn as the reference's own tests draw them, named as `gdn2 check --in` files: unit-norm q, k;
    v ~ N(0, 1); b, w ~ U(0, 1); g ~ U(g_low, 0); h0 ~ N(0, 1/4) (initial_state=True); upstream gradients do, dht
    ~ N(0, 1). float64, deterministic by seed (the same numbers on every machine)."""
    return _gdn2.random_inputs(B=B, T=T, H=H, HV=HV, K=K, V=V, g_low=float(g_low), h0=bool(initial_state),
                               seed=int(seed))
