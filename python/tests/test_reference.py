"""gdn2.forward / gdn2.backward against the gdn2 command line: the same bits, and the same refusals."""

import re
import subprocess

import numpy as np
import pytest

import gdn2
from conftest import random_inputs

FWD = ("q", "k", "v", "g", "b", "w", "h0", "beta", "cu_seqlens", "A_log", "dt_bias")
PY_NAME = {"h0": "initial_state"}


def save(directory, arrays):
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        np.save(directory / f"{name}.npy", a)


def run_cli(cli, command, in_dir, out_dir, flags):
    return subprocess.run([cli, command, "--in", str(in_dir), "--out", str(out_dir), *flags],
                          capture_output=True, text=True)


def call(fn, x, **options):
    kwargs = {PY_NAME.get(n, n): a for n, a in x.items() if n in FWD}
    if fn is gdn2.backward:
        kwargs["do"], kwargs["dht"] = x.get("do"), x.get("dht")
    return fn(**kwargs, **options)


# (name, inputs, python options, CLI flags)
CASES = [
    ("chunk-f64", dict(), dict(), []),
    ("chunk-f32", dict(), dict(precision="f32"), ["--precision", "f32"]),
    ("recurrent-f64", dict(), dict(form="recurrent"), ["--form", "recurrent"]),
    ("chunk16-scale", dict(), dict(chunk_size=16, scale=0.3), ["--chunk-size", "16", "--scale", "0.3"]),
    ("float32-files-f64", dict(dtype=np.float32), dict(), []),
    ("no-h0", dict(h0=False), dict(), []),
    ("gates-per-value-head", dict(value_head_gates=True), dict(), []),
    ("gates-per-value-head-recurrent-f32", dict(value_head_gates=True), dict(form="recurrent", precision="f32"),
     ["--form", "recurrent", "--precision", "f32"]),
]


def _assert_same(py, cli_dir, names):
    for name in names:
        ref = np.load(cli_dir / f"{name}.npy")
        got = py[name]
        print(f"{name}: dtype {got.dtype} vs {ref.dtype}, max |diff| = {np.max(np.abs(got - ref)) if got.size else 0}")
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.array_equal(got, ref), f"{name} differs from the command line's"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_backward_equal_the_cli_bit_for_bit(tmp_path, cli, case):
    _, make, options, flags = case
    x = random_inputs(seed=1, **make)
    save(tmp_path / "in", x)
    r = run_cli(cli, "forward", tmp_path / "in", tmp_path / "fwd", flags)
    assert r.returncode == 0, r.stderr
    o, ht = call(gdn2.forward, x, **options)
    _assert_same({"o": o, "ht": ht}, tmp_path / "fwd", ["o", "ht"])

    r = run_cli(cli, "backward", tmp_path / "in", tmp_path / "bwd", flags)
    assert r.returncode == 0, r.stderr
    grads = call(gdn2.backward, x, **options)
    files = sorted(p.stem for p in (tmp_path / "bwd").glob("*.npy"))
    print("gradients:", sorted(grads), "files:", files)
    assert sorted(grads) == files
    _assert_same(grads, tmp_path / "bwd", files)


def test_variants_and_front_end_equal_the_cli(tmp_path, cli):
    """kda with beta logits, l2-normalised q/k, softplus decay, packed sequences: every option of the CLI."""
    rng = np.random.default_rng(7)
    B, T, H, HV, K, V = 1, 50, 2, 2, 8, 8
    x = random_inputs(seed=7, B=B, T=T, H=H, HV=HV, K=K, V=V, h0=False)
    del x["b"], x["w"]
    x["beta"] = rng.standard_normal((B, T, H))
    x["g"] = rng.standard_normal((B, T, H, K))  # decay logits
    x["A_log"] = rng.standard_normal(H) * 0.3
    x["dt_bias"] = rng.standard_normal(H * K) * 0.3
    x["cu_seqlens"] = np.array([0, 17, 17, 50], dtype=np.int64)
    x["h0"] = rng.standard_normal((3, HV, K, V))
    x["dht"] = rng.standard_normal((3, HV, K, V))
    save(tmp_path / "in", x)
    flags = ["--variant", "kda", "--gate-logits", "--l2norm-qk", "--decay", "softplus"]
    options = dict(variant="kda", gate_logits=True, l2norm_qk=True, decay="softplus")
    r = run_cli(cli, "forward", tmp_path / "in", tmp_path / "fwd", flags)
    assert r.returncode == 0, r.stderr
    o, ht = call(gdn2.forward, x, **options)
    _assert_same({"o": o, "ht": ht}, tmp_path / "fwd", ["o", "ht"])
    r = run_cli(cli, "backward", tmp_path / "in", tmp_path / "bwd", flags)
    assert r.returncode == 0, r.stderr
    grads = call(gdn2.backward, x, **options)
    files = sorted(p.stem for p in (tmp_path / "bwd").glob("*.npy"))
    print("gradients:", sorted(grads))
    assert sorted(grads) == files and "dA_log" in files and "dbeta" in files
    _assert_same(grads, tmp_path / "bwd", files)


def _bad(name, edit):
    return pytest.param(edit, id=name)


def _set(name, index, value):
    def edit(x):
        x[name] = x[name].copy()
        x[name][index] = value
    return edit


def _replace(name, fn):
    def edit(x):
        x[name] = np.ascontiguousarray(fn(x[name]))
    return edit


def _drop(name):
    def edit(x):
        del x[name]
    return edit


BAD = [
    _bad("q-nan", _set("q", (0, 3, 1, 2), np.nan)),
    _bad("k-inf", _set("k", (1, 0, 0, 0), np.inf)),
    _bad("v-nan", _set("v", (0, 5, 3, 1), np.nan)),
    _bad("h0-inf", _set("h0", (1, 2, 3, 4), -np.inf)),
    _bad("g-positive", _set("g", (0, 1, 1, 1), 0.25)),
    _bad("g-nan", _set("g", (0, 1, 1, 1), np.nan)),
    _bad("b-above-1", _set("b", (1, 69, 0, 7), 1.5)),
    _bad("b-negative", _set("b", (1, 2, 0, 3), -0.1)),
    _bad("w-above-1", _set("w", (0, 0, 0, 0), 1.01)),
    _bad("k-shape", _replace("k", lambda a: a[:, :-1])),
    _bad("g-shape", _replace("g", lambda a: a[..., :-1])),
    _bad("w-shape", _replace("w", lambda a: a[:, :, :2])),
    _bad("v-heads-not-multiple", _replace("v", lambda a: a[:, :, :3])),
    _bad("h0-shape", _replace("h0", lambda a: a[:1])),
    _bad("q-3d", _replace("q", lambda a: a[0])),
    _bad("b-missing", _drop("b")),
    _bad("q-int", _replace("q", lambda a: a.astype(np.int32))),
    _bad("q-complex", _replace("q", lambda a: a.astype(np.complex128))),  # before: "... float64, got c16"
    _bad("b-bool", _replace("b", lambda a: a > 0.5)),                      # before: "... float64, got b1"
]


@pytest.mark.parametrize("edit", BAD)
def test_every_validation_error_is_a_value_error_with_the_cli_message(tmp_path, cli, edit):
    x = random_inputs(seed=3)
    edit(x)
    save(tmp_path / "in", x)
    r = run_cli(cli, "forward", tmp_path / "in", tmp_path / "out", [])
    print("CLI:", r.returncode, r.stderr.strip())
    assert r.returncode == 2 and not (tmp_path / "out").exists()
    # The error is the last line: a note naming do.npy and dht.npy (forward does not read them) comes first.
    message = r.stderr.strip().splitlines()[-1].removeprefix("gdn2: error: ")
    with pytest.raises(ValueError) as e:
        call(gdn2.forward, x)
    print("Python:", e.value)
    if "missing from" in message:  # the CLI names the directory, Python "the arguments"
        message = message.replace(str(tmp_path / "in"), "the arguments")
    assert str(e.value) == message
    with pytest.raises(ValueError) as e:
        call(gdn2.backward, x)
    assert str(e.value) == message


def test_a_float64_value_float32_cannot_hold_is_named_as_in_the_cli(tmp_path, cli):
    """Before: with precision="f32" the cast made 1e39 an inf (a NumPy RuntimeWarning) and it was refused as
    "value inf ... (must be finite)", an inf the caller's array does not hold."""
    x = random_inputs(seed=5)
    x["v"][0, 0, 1, 1] = 1e39
    save(tmp_path / "in", x)
    r = run_cli(cli, "forward", tmp_path / "in", tmp_path / "out", ["--precision", "f32"])
    message = r.stderr.strip().splitlines()[-1].removeprefix("gdn2: error: ")
    print("CLI:", r.returncode, message)
    with pytest.raises(ValueError) as e:
        call(gdn2.forward, x, precision="f32")
    print("Python:", e.value)
    assert r.returncode == 2
    assert str(e.value) == message.replace("--precision f32", 'precision="f32"')
    assert str(e.value).startswith("v.npy: value 1e+39 at [0,0,1,1] does not fit float32")


def test_bad_options_and_arrays_raise_value_error():
    x = random_inputs(seed=4)
    for options, words in [(dict(form="diagonal"), "unknown form"), (dict(precision="f16"), "unknown precision"),
                           (dict(variant="mamba"), "unknown variant"), (dict(chunk_size=0), "chunk size"),
                           (dict(chunk_size=2**40), r"chunk size must lie in \[1, 2\^20\]"),
                           (dict(chunk_size=3.7), "chunk_size: expected an integer, got float 3.7"),
                           (dict(l2norm_qk="False"), "l2norm_qk: expected True or False, got str 'False'"),
                           (dict(scale="0.5"), "scale: expected a number, got str '0.5'"),
                           (dict(decay="relu"), "unknown --decay")]:
        with pytest.raises(ValueError, match=words) as e:
            call(gdn2.forward, x, **options)
        print(options, "->", e.value)
    x = random_inputs(seed=4)
    x["cu_seqlens"] = np.array([0.0, 70.0])
    with pytest.raises(ValueError, match="cu_seqlens.npy: dtype must be int32 or int64, got f8"):
        call(gdn2.forward, x)


def test_results_are_numpy_arrays_that_own_their_memory():
    x = random_inputs(seed=5)
    o, ht = call(gdn2.forward, x)
    print(type(o), o.dtype, o.shape, o.flags["C_CONTIGUOUS"])
    assert isinstance(o, np.ndarray) and o.shape == (2, 70, 4, 6) and ht.shape == (2, 4, 8, 6)
    o2, _ = call(gdn2.forward, x)
    del o2
    assert np.all(np.isfinite(o))
    o_none, ht_none = gdn2.forward(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], output_final_state=False)
    assert ht_none is None and np.array_equal(o_none, call(gdn2.forward, {n: a for n, a in x.items() if n != "h0"})[0])


def test_arrays_in_any_memory_order_give_the_same_bits():
    # A caller's tensors are often views (a permuted or sliced torch tensor, a Fortran-ordered array): each is read
    # in one pass, in its own order, and gives the bits of its C-ordered copy.
    x = random_inputs(seed=5)
    o, ht = call(gdn2.forward, x)
    y = dict(x)
    y["q"] = np.asfortranarray(x["q"])                                  # Fortran order
    y["k"] = np.ascontiguousarray(x["k"].transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # a permuted view
    y["v"] = np.concatenate([x["v"], x["v"]], axis=-1)[..., : x["v"].shape[-1]]      # a sliced view
    for name in ("q", "k", "v"):
        print(name, "C-contiguous:", y[name].flags["C_CONTIGUOUS"])
        assert not y[name].flags["C_CONTIGUOUS"]
    o2, ht2 = call(gdn2.forward, y)
    print("max |o - o(views)| =", np.abs(o - o2).max())
    assert np.array_equal(o, o2) and np.array_equal(ht, ht2)


def growth_inputs(T=1024):
    """A non-normal update (b up to 1.88, --negative-eigen's range) whose state grows past float32's range in T tokens
    while float64 holds it: the growth case of the command line's overflow test (tests/test_cli.cpp, growth_layer)."""
    th, bb = (2.52, 1.99), ((0.24, 1.87), (1.88, 0.026))
    qk = np.array([[np.cos(th[t % 2]), np.sin(th[t % 2])] for t in range(T)]).reshape(1, T, 1, 2)
    x = {"q": qk.copy(), "k": qk.copy(), "g": np.zeros((1, T, 1, 2)),
         "b": np.array([bb[t % 2] for t in range(T)], dtype=np.float64).reshape(1, T, 1, 2),
         "v": (np.arange(T) == 0).astype(np.float64).reshape(1, T, 1, 1), "w": np.ones((1, T, 1, 1))}
    return x


def test_float32_overflow_raises_overflow_error_as_the_cli_exits_3():
    x = growth_inputs()
    o, ht = gdn2.forward(*(x[n] for n in "qkvgbw"), negative_eigen=True)  # float64 holds it
    print(f"float64: max |o| = {np.abs(o).max():.3e}, max |ht| = {np.abs(ht).max():.3e}")
    assert np.isfinite(o).all() and np.isfinite(ht).all()
    with pytest.raises(OverflowError, match="overflowed float32") as e:
        gdn2.forward(*(x[n] for n in "qkvgbw"), negative_eigen=True, precision="f32")
    print("forward f32:", e.value)
    assert 'precision="f64"' in str(e.value)
    do, dht = np.ones_like(o), np.ones_like(ht)
    with pytest.raises(OverflowError, match="overflowed float32") as e:
        gdn2.backward(*(x[n] for n in "qkvgbw"), do=do, dht=dht, negative_eigen=True, precision="f32")
    print("backward f32:", e.value)


@pytest.mark.parametrize("edit, words", [
    (dict(g=np.array(-0.5)), r"g\.npy: a 0-d array"),
    (dict(initial_state=np.array(1.0)), r"h0\.npy: a 0-d array"),
    (dict(cu_seqlens=np.array([], dtype=np.int64)), r"cu_seqlens\.npy: 0 entries; needs at least 2"),
    (dict(scale=float("nan")), "scale: expected a finite number"),
    (dict(scale=float("inf")), "scale: expected a finite number"),
    (dict(num_threads=-1), r"num_threads: expected an integer in \[0, 4096\]"),
    (dict(lower_bound=float("-inf")), "lower_bound: expected a finite number"),
])
def test_arguments_the_cli_refuses_are_refused(edit, words):
    """0-d arrays and an empty cu_seqlens ran as if absent, and nan/inf options gave a false overflow message."""
    x = random_inputs(seed=3, B=1, T=20, H=1, HV=1, K=4, V=4)
    args = dict(q=x["q"], k=x["k"], v=x["v"], g=x["g"], b=x["b"], w=x["w"], initial_state=x["h0"])
    args.update(edit)
    with pytest.raises(ValueError, match=words) as e:
        gdn2.forward(**args)
    print(e.value)


def test_big_endian_files_and_arrays_give_the_bits_of_their_little_endian_copies(tmp_path, cli):
    """Before: gdn2.forward read a '>f8' array by value, while the command line refused the same array's .npy file
    (exit 2, "q.npy: dtype '>f4' (big-endian float32) is not supported: gdn2 reads float32, float64, int32 and int64,
    little-endian; ..."). Both now read it, with the bits of its little-endian copy."""
    x = random_inputs(seed=12, B=1, T=30, H=2, HV=2, K=4, V=4, h0=False)
    little = {n: a for n, a in x.items() if n not in ("do", "dht")}
    little["q"] = little["q"].astype("<f4")  # a float32 file too (read into the float64 working precision)
    little["h0"] = np.random.default_rng(12).standard_normal((2, 2, 4, 4))
    little["cu_seqlens"] = np.array([0, 11, 30], dtype="<i8")
    big = {n: a.astype(a.dtype.newbyteorder(">")) for n, a in little.items()}
    save(tmp_path / "le", little)
    save(tmp_path / "be", big)
    print("big-endian files:", {n: np.load(tmp_path / "be" / f"{n}.npy").dtype.str for n in big})
    assert all(np.load(tmp_path / "be" / f"{n}.npy").dtype.str[0] == ">" for n in big)
    for d in ("le", "be"):
        r = run_cli(cli, "forward", tmp_path / d, tmp_path / f"out_{d}", [])
        print(f"CLI on {d}: exit {r.returncode} {r.stderr.strip()}")
        assert r.returncode == 0
    for name in ("o", "ht"):
        assert (tmp_path / "out_be" / f"{name}.npy").read_bytes() == (tmp_path / "out_le" / f"{name}.npy").read_bytes()
    o, ht = call(gdn2.forward, big)
    _assert_same({"o": o, "ht": ht}, tmp_path / "out_be", ("o", "ht"))


def test_float16_arrays_are_refused_saying_how_to_convert():
    """Before: "q.npy: dtype must be float32 or float64, got f2" (gdn2.check: "... int32 or int64, got f2"): what is
    accepted, in a code, and not how to get there."""
    x = random_inputs(seed=3, B=1, T=20, H=1, HV=1, K=4, V=4)
    words = "q.npy: dtype must be float32 or float64, got float16 ('<f2'); convert it with x.astype(np.float32)"
    with pytest.raises(ValueError) as e:
        gdn2.forward(x["q"].astype(np.float16), *(x[n] for n in "kvgbw"))
    print(e.value)
    assert str(e.value) == words
    o, ht = gdn2.forward(*(x[n] for n in "qkvgbw"), initial_state=x["h0"])
    inputs = {n: x[n] for n in ("q", "k", "v", "g", "b", "w", "h0")}
    with pytest.raises(ValueError) as e:
        gdn2.check({**inputs, "q": x["q"].astype(np.float16)}, {"o": o, "ht": ht})
    print(e.value)
    assert str(e.value) == words


def test_check_refuses_an_input_name_it_does_not_know():
    """Before, a misnamed input (fla's keyword initial_state for h0) was left out unseen, and a candidate computed
    without the initial state passed the check."""
    x = gdn2.random_inputs(B=1, T=20, H=2, HV=4, K=8, V=6, seed=0)
    o, ht = gdn2.forward(*(x[n] for n in "qkvgbw"))  # no initial state: wrong for inputs that have one
    inputs = {n: a for n, a in x.items() if n not in ("h0", "do", "dht")}
    inputs["initial_state"] = x["h0"]
    with pytest.raises(ValueError, match="unknown name 'initial_state'") as e:
        gdn2.check(inputs, {"o": o, "ht": ht})
    print(e.value)
    inputs["h0"] = inputs.pop("initial_state")
    report = gdn2.check(inputs, {"o": o, "ht": ht})
    print(report.table)
    assert not report.passed


def _no_effect_cases():
    """(id, edit of the keyword arguments, expected message): every argument that the options make useless."""
    H, K, T = 2, 4, 20
    beta = np.full((1, T, H), 0.5)
    A_log, dt_bias = np.zeros(H), np.zeros(H * K)
    tied = dict(b=None, w=None, beta=beta)
    return [
        ("lower_bound-without-decay", dict(lower_bound=-3.0),
         'lower_bound: has no effect without decay="bounded" (it bounds g = lower_bound sigmoid(x + dt_bias)); give '
         'decay="bounded", or leave lower_bound out'),
        ("lower_bound-with-softplus", dict(lower_bound=-3.0, decay="softplus", A_log=A_log, dt_bias=dt_bias),
         'lower_bound: has no effect without decay="bounded" (it bounds g = lower_bound sigmoid(x + dt_bias)); give '
         'decay="bounded", or leave lower_bound out'),
        ("gate_logits-with-linear", dict(variant="linear", b=None, w=None, gate_logits=True),
         'gate_logits: has no effect with variant="linear" (it reads no gate b, w or beta to apply the sigmoid to)'),
        ("negative_eigen-with-kda", dict(variant="kda", negative_eigen=True, **tied),
         'negative_eigen: has no effect with variant="kda" (b = w = beta, and the write gate w must lie in [0, 1]); '
         'it lets the erase gate b of variant="gdn2" lie in [0, 2]'),
        ("beta-with-gdn2", dict(beta=beta),
         'beta: has no effect with variant="gdn2" (its gates are g, b and w; beta is the tied gate of kda, gdn and '
         'deltanet); give variant="kda", "gdn" or "deltanet", or leave beta out'),
        ("beta-with-linear", dict(variant="linear", b=None, w=None, beta=beta),
         'beta: has no effect with variant="linear" (no erase gate, w = 1); give variant="kda", "gdn" or "deltanet", '
         'or leave beta out'),
        ("b-with-kda", dict(variant="kda", beta=beta),
         'b: has no effect with variant="kda" (b = w = beta*1, tied to beta); give variant="gdn2", or leave b out'),
        ("w-with-deltanet", dict(variant="deltanet", g=None, b=None, beta=beta),
         'w: has no effect with variant="deltanet" (b = w = beta*1, tied to beta); give variant="gdn2", or leave w '
         'out'),
        ("b-with-linear", dict(variant="linear", w=None),
         'b: has no effect with variant="linear" (no erase gate, w = 1); give variant="gdn2", or leave b out'),
        ("g-with-deltanet", dict(variant="deltanet", **tied),
         'g: has no effect with variant="deltanet" (no decay: g = 0); give variant="gdn2", "kda", "gdn" or "linear", '
         'or leave g out'),
        ("A_log-without-decay", dict(A_log=A_log),
         'A_log: has no effect without decay="softplus" (g = -exp(A_log) softplus(g + dt_bias), Eq. 12); give '
         'decay="softplus", or leave A_log out'),
        ("A_log-with-bounded", dict(decay="bounded", A_log=A_log, dt_bias=dt_bias),
         'A_log: has no effect without decay="softplus" (g = -exp(A_log) softplus(g + dt_bias), Eq. 12); give '
         'decay="softplus", or leave A_log out'),
        ("dt_bias-without-decay", dict(dt_bias=dt_bias),
         'dt_bias: has no effect without a decay (decay="softplus": g = -exp(A_log) softplus(g + dt_bias); '
         'decay="bounded": g = lower_bound sigmoid(g + dt_bias)); give one, or leave dt_bias out'),
    ]


NO_EFFECT = _no_effect_cases()
ARRAYS = ("q", "k", "v", "g", "b", "w", "beta", "initial_state", "A_log", "dt_bias")


@pytest.mark.parametrize("edit, words", [c[1:] for c in NO_EFFECT], ids=[c[0] for c in NO_EFFECT])
def test_an_argument_without_effect_is_refused_naming_what_it_needs(edit, words):
    """Before, each was accepted and ignored: lower_bound without decay="bounded", an array the variant or the decay
    does not read (beta with gdn2, b and w with kda, A_log without decay="softplus"), gate_logits with linear,
    negative_eigen with kda. gdn2.forward, gdn2.backward and gdn2.check refuse them alike."""
    x = random_inputs(seed=3, B=1, T=20, H=2, HV=2, K=4, V=4)
    args = dict(q=x["q"], k=x["k"], v=x["v"], g=x["g"], b=x["b"], w=x["w"], initial_state=x["h0"])
    args.update(edit)
    arrays = {n: a for n, a in args.items() if n in ARRAYS}
    options = {n: a for n, a in args.items() if n not in ARRAYS}
    for fn, kwargs in ((gdn2.forward, {}), (gdn2.backward, dict(do=x["do"], dht=x["dht"]))):
        with pytest.raises(ValueError) as e:
            fn(**arrays, **kwargs, **options)
        print(f"{fn.__name__}: {e.value}")
        assert str(e.value) == words
    inputs = {("h0" if n == "initial_state" else n): a for n, a in arrays.items() if a is not None}
    with pytest.raises(ValueError) as e:
        gdn2.check({**inputs, "do": x["do"], "dht": x["dht"]}, {"o": np.zeros(1)}, **options)
    print(f"check: {e.value}")
    assert str(e.value) == words


@pytest.mark.parametrize("options, flags", [
    (dict(lower_bound=-3.0), ["--lower-bound=-3"]),
    (dict(variant="linear", gate_logits=True), ["--variant", "linear", "--gate-logits"]),
    (dict(variant="kda", negative_eigen=True), ["--variant", "kda", "--negative-eigen"]),
])
def test_an_option_without_effect_is_refused_in_the_words_of_the_cli(tmp_path, cli, options, flags):
    """The command line's refusal (exit 2), with its options written as the keyword arguments."""
    x = random_inputs(seed=3, B=1, T=20, H=2, HV=2, K=4, V=4)
    save(tmp_path / "in", x)
    r = run_cli(cli, "forward", tmp_path / "in", tmp_path / "out", flags)
    print("CLI:", r.returncode, r.stderr.strip())
    assert r.returncode == 2
    message = r.stderr.strip().splitlines()[-1].removeprefix("gdn2: error: ")
    message = re.sub(r"--(variant|decay) (\w+)", r'\1="\2"', message)
    message = re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), message)
    args = dict(q=x["q"], k=x["k"], v=x["v"], g=x["g"])
    if options.get("variant") == "kda":
        args["beta"] = np.full((1, 20, 2), 0.5)
    elif options.get("variant") != "linear":
        args.update(b=x["b"], w=x["w"])
    with pytest.raises(ValueError) as e:
        gdn2.forward(**args, **options)
    print("Python:", e.value)
    assert str(e.value) == message


def test_lower_bound_with_decay_bounded_is_used_and_defaults_to_the_cli_default():
    """lower_bound's default is None (not given): -5, as the command line's --lower-bound, with decay="bounded"."""
    x = random_inputs(seed=3, B=1, T=20, H=2, HV=2, K=4, V=4)
    args = [x[n] for n in "qkvgbw"]
    dt_bias = np.zeros(8)
    o_default, _ = gdn2.forward(*args, decay="bounded", dt_bias=dt_bias)
    o_5, _ = gdn2.forward(*args, decay="bounded", dt_bias=dt_bias, lower_bound=-5.0)
    o_3, _ = gdn2.forward(*args, decay="bounded", dt_bias=dt_bias, lower_bound=-3.0)
    print("max |o(-3) - o(default)| =", np.abs(o_3 - o_default).max())
    assert np.array_equal(o_default, o_5) and not np.array_equal(o_3, o_default)
