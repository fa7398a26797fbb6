"""gdn2 — the float64 reference of Gated DeltaNet-2 from NumPy (and its CUDA kernels from PyTorch: gdn2.torch).

    S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T,   o_t = S_t^T (scale q_t)

Layout of flash-linear-attention: q, k, g, b [B,T,H,K]; v, w [B,T,HV,V]; initial_state and the final state ht
[N,HV,K,V]; value head hv reads key head hv // (HV // H). Arrays are float32 or float64 NumPy arrays (C-contiguous);
each is copied once into the working precision (precision="f64" or "f32"), and the results come back as NumPy arrays
of that precision. Every function runs the same C++ code as the `gdn2` command line: the same options (named as in
flash-linear-attention where it has them), the same results bit for bit, and bad input raises ValueError with the
command line's one-line message naming the tensor.

    o, ht = gdn2.forward(q, k, v, g, b, w)                          # chunk form, float64, C = 64
    grads = gdn2.backward(q, k, v, g, b, w, do=do, dht=dht)        # {"dq": ..., "dk": ..., ..., "dw": ...}
"""

from . import _gdn2

__all__ = ["forward", "backward", "has_cuda"]

has_cuda = _gdn2.has_cuda  # the extension was built with the CUDA kernels (gdn2.torch uses them on CUDA tensors)


def _arrays(q, k, v, g, b, w, beta, initial_state, cu_seqlens, A_log, dt_bias):
    # The names of the command line's input files (q.npy, ..., h0.npy, cu_seqlens.npy).
    return {"q": q, "k": k, "v": v, "g": g, "b": b, "w": w, "beta": beta, "h0": initial_state,
            "cu_seqlens": cu_seqlens, "A_log": A_log, "dt_bias": dt_bias}


def _options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits, negative_eigen, decay, lower_bound,
             num_threads):
    return dict(form=form, precision=precision, variant=variant, chunk_size=int(chunk_size),
                scale=None if scale is None else float(scale), l2norm_qk=bool(l2norm_qk),
                gate_logits=bool(gate_logits), negative_eigen=bool(negative_eigen), decay=decay,
                lower_bound=float(lower_bound), threads=int(num_threads))


def forward(q, k, v, g=None, b=None, w=None, *, scale=None, initial_state=None, output_final_state=True,
            cu_seqlens=None, form="chunk", chunk_size=64, precision="f64", variant="gdn2", beta=None,
            l2norm_qk=False, gate_logits=False, negative_eigen=False, decay="none", A_log=None, dt_bias=None,
            lower_bound=-5.0, num_threads=0):
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
    (g = lower_bound sigmoid(g + dt_bias)). num_threads: threads over (sequence, value head); 0 = all cores (the
    result does not depend on it). output_final_state=False returns (o, None).
    """
    o, ht = _gdn2.forward(_arrays(q, k, v, g, b, w, beta, initial_state, cu_seqlens, A_log, dt_bias),
                          **_options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits,
                                     negative_eigen, decay, lower_bound, num_threads))
    return o, (ht if output_final_state else None)


def backward(q, k, v, g=None, b=None, w=None, do=None, dht=None, *, scale=None, initial_state=None,
             cu_seqlens=None, form="chunk", chunk_size=64, precision="f64", variant="gdn2", beta=None,
             l2norm_qk=False, gate_logits=False, negative_eigen=False, decay="none", A_log=None, dt_bias=None,
             lower_bound=-5.0, num_threads=0):
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
