"""Worked solutions of the exercises in docs/teaching.md, runnable:  /usr/bin/python3 notebooks_data/exercises.py [NAME]

    eq23       Eq. 23 (end-of-chunk state from the WY auxiliaries) checked against the token recurrence
    kda-tie    what the KDA tie changes in the soft-update scenario
    forget     two gate settings that forget k0 but keep k1, checked on the recurrence
Without NAME, all of them. numpy only; data from notebooks_data/ (written by gdn2 export).
"""
import sys

import numpy as np

from gdn2_data import load_dir, load_trace, path


def recurrence(q, k, v, g, b, w, scale, S=None):
    S = np.zeros((k.shape[1], v.shape[1])) if S is None else S.copy()
    O = []
    for t in range(len(q)):
        S = np.exp(g[t])[:, None] * S
        S = S + np.outer(k[t], w[t] * v[t] - S.T @ (b[t] * k[t]))
        O.append(S.T @ (scale * q[t]))
    return np.array(O), S


def eq23():
    """Eq. 19 -> Eq. 23: with u_r = z_r - S_hat_{r-1}^T e_bar_r, (I + T) U_res = Z - E_bar S0, so U_res = U - Y S0,
    and S_C = Diag(gamma_C) S0 + K_tail^T (U - Y S0)."""
    L = load_dir(path("layer"))
    q, k, v, g, b, w = (L[n][0, :32, 0] for n in "q k v g b w".split())  # the first chunk, C = 32
    C, K = k.shape
    rng = np.random.default_rng(0)
    S0 = rng.standard_normal((K, v.shape[1]))                       # any incoming state S[n]
    G = np.cumsum(g, axis=0)                                         # Eq. 18
    gamma = np.exp(G)
    E_bar = gamma * (b * k)                                          # Eq. 20
    K_bar = k / gamma
    Z = w * v
    T = np.tril(E_bar @ K_bar.T, -1)                                 # Eq. 21
    A = np.linalg.inv(np.eye(C) + T)
    Y, U = A @ E_bar, A @ Z                                          # Eq. 22
    K_tail = (gamma[-1] / gamma) * k
    S_C = np.diag(gamma[-1]) @ S0 + K_tail.T @ (U - Y @ S0)          # Eq. 23
    _, S_rec = recurrence(q, k, v, g, b, w, 1.0, S0)
    err = np.abs(S_C - S_rec).max() / np.abs(S_rec).max()
    print(f"eq23: |S_C(Eq. 23) - S_C(recurrence)| / |S_C| = {err:.1e}  (float64, C = {C}, g in [-0.3, 0])")
    assert err < 1e-12
    print("      (this direct form divides by gamma; the reference never does: docs/derivation.md step 4)")


def kda_tie():
    """GDN-2: b = 1, w = 0.5 erases A fully and writes D at half strength. KDA: one beta = 0.75 for both."""
    names = "ABCD"
    for variant in ("gdn2", "kda"):
        tr = load_trace(f"scenario-soft-update-{variant}")
        t = tr["meta"]["labels"].index("query k0")
        coef = np.linalg.lstsq(tr["values"].T, tr["o"][t], rcond=None)[0]
        print(f"kda-tie: {variant:5s} query k0 returns " + " + ".join(f"{c:.2f} {n}" for c, n in zip(coef, names)))
    print("         a single beta cannot erase more than it writes: the left-over 0.25 A is the price of the tie")


def forget():
    """Forget k0, keep k1: (a) b = 1 and w = 0 on k0 (erase without writing); (b) g = -inf on key channel 0."""
    tr = load_trace("scenario-forget-one-keep-another-gdn2")
    t = tr["meta"]["labels"].index("erase k0 (b=1, w=0)")
    print(f"forget: (a) after '{tr['meta']['labels'][t]}': |row k0| = {np.linalg.norm(tr['S'][t + 1][0]):.1e}, "
          f"row k1 unchanged: {np.array_equal(tr['S'][t + 1][1], tr['S'][t][1])}")
    g = tr["g"].copy()
    b, w = tr["b"].copy(), tr["w"].copy()
    g[t, 0], b[t], w[t] = -np.inf, 0, 0                              # decay channel 0 to nothing, no erase or write
    _, S = recurrence(tr["q"][: t + 1], tr["k"][: t + 1], tr["v"][: t + 1], g[: t + 1], b[: t + 1], w[: t + 1], 1.0)
    print(f"        (b) g = -inf on channel 0 instead: |row k0| = {np.linalg.norm(S[0]):.1e}, "
          f"row k1 unchanged: {np.array_equal(S[1], tr['S'][t][1])}")
    assert np.linalg.norm(S[0]) == 0 and np.linalg.norm(tr["S"][t + 1][0]) < 1e-15


if __name__ == "__main__":
    exercises = {"eq23": eq23, "kda-tie": kda_tie, "forget": forget}
    chosen = sys.argv[1:] or list(exercises)
    for name in chosen:
        if name not in exercises:
            sys.exit(f"unknown exercise {name!r}; choose from {', '.join(exercises)}")
        exercises[name]()
