#!/usr/bin/env python3
"""gdn2 outputs are all or none: interrupted runs (SIGINT, SIGTERM) and concurrent runs into one --out never leave
o.npy from one run beside ht.npy from another, and leave no temporary files behind; those of a killed run (SIGKILL)
are removed at the start of the next run into the same --out, and no file of the user's is.

Usage: cli_outputs.py --gdn2 build/reference/gdn2 [--trials N]
Standard library only (the .npy inputs are written by hand). Exit 0 when every trial is consistent, 1 otherwise.
"""
import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time


def write_npy(path, shape, values):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (%s), }" % (
        ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%dd" % len(values), *values))


def make_inputs(d, seed, B, T, H, K, V):
    rng = random.Random(seed)
    n_k, n_v = B * T * H * K, B * T * H * V
    unit = lambda n: [rng.gauss(0, 1) / K ** 0.5 for _ in range(n)]
    os.makedirs(d)
    write_npy(f"{d}/q.npy", (B, T, H, K), unit(n_k))
    write_npy(f"{d}/k.npy", (B, T, H, K), unit(n_k))
    write_npy(f"{d}/v.npy", (B, T, H, V), [rng.gauss(0, 1) for _ in range(n_v)])
    write_npy(f"{d}/g.npy", (B, T, H, K), [-rng.uniform(0, 0.1) for _ in range(n_k)])
    write_npy(f"{d}/b.npy", (B, T, H, K), [rng.uniform(0, 1) for _ in range(n_k)])
    write_npy(f"{d}/w.npy", (B, T, H, V), [rng.uniform(0, 1) for _ in range(n_v)])


def read(path):
    with open(path, "rb") as f:
        return f.read()


def state_of(out, ref):
    """Which run the files of `out` come from: 'A', 'B', 'none', or 'MIXED ...' (ref: run -> (o bytes, ht bytes))."""
    if not os.path.exists(out):
        return "none"
    o = read(f"{out}/o.npy") if os.path.exists(f"{out}/o.npy") else None
    ht = read(f"{out}/ht.npy") if os.path.exists(f"{out}/ht.npy") else None
    for name in "AB":
        if (o, ht) == ref[name]:
            return name
    return "MIXED o=%s ht=%s" % (next((n for n in "AB" if ref[n][0] == o), o and "?"),
                                 next((n for n in "AB" if ref[n][1] == ht), ht and "?"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gdn2", required=True)
    ap.add_argument("--trials", type=int, default=16)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="gdn2_outputs_")
    failures = []
    try:
        # Two input sets whose outputs differ; the reference outputs of each, run alone.
        dims = (1, 512, 2, 64, 64)
        for name, seed in (("A", 1), ("B", 2)):
            make_inputs(f"{root}/in{name}", seed, *dims)
        ref = {}
        durations = []
        for name in "AB":
            t0 = time.monotonic()
            subprocess.run([args.gdn2, "forward", "--threads", "1", "--in", f"{root}/in{name}", "--out", f"{root}/ref{name}"], check=True)
            durations.append(time.monotonic() - t0)
            ref[name] = (read(f"{root}/ref{name}/o.npy"), read(f"{root}/ref{name}/ht.npy"))
        duration = max(durations)
        print(f"[measured] one forward run: {duration:.3f} s")
        work = f"{root}/work"
        os.makedirs(work)
        out = f"{work}/out"

        def state():
            return state_of(out, ref)

        def leftovers():
            extra = [f for f in os.listdir(work) if f != "out"]
            if os.path.exists(out):
                extra += [f"out/{f}" for f in os.listdir(out) if f not in ("o.npy", "ht.npy", ".gdn2-outputs")]
            return extra

        # 1. Interrupted runs: start writing B over A's outputs and interrupt it at a random moment of its run.
        rng = random.Random(22)
        outcomes = {}
        for trial in range(args.trials):
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(f"{root}/refA", out)
            p = subprocess.Popen([args.gdn2, "forward", "--threads", "1", "--in", f"{root}/inB", "--out", out],
                                 stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 1.1) * duration)
            sig = signal.SIGINT if trial % 2 == 0 else signal.SIGTERM
            p.send_signal(sig)
            p.wait()
            s, left = state(), leftovers()
            outcomes[s] = outcomes.get(s, 0) + 1
            if s not in ("A", "B") or left:
                failures.append(f"interrupt trial {trial} ({sig.name}): outputs {s}, left behind {left}")
        print(f"[measured] {args.trials} interrupted runs: outputs {outcomes}")

        # 2. Concurrent writers into one --out: the result is one run's pair, never a mix.
        outcomes = {}
        for trial in range(args.trials):
            shutil.rmtree(out, ignore_errors=True)
            procs = [subprocess.Popen([args.gdn2, "forward", "--threads", "1", "--in", f"{root}/in{n}", "--out", out],
                                      stderr=subprocess.DEVNULL) for n in "AB"]
            codes = [p.wait() for p in procs]
            s, left = state(), leftovers()
            outcomes[s] = outcomes.get(s, 0) + 1
            if s not in ("A", "B") or left or codes != [0, 0]:
                failures.append(f"concurrent trial {trial}: exit {codes}, outputs {s}, left behind {left}")
        print(f"[measured] {args.trials} concurrent pairs: outputs {outcomes}")

        # 3. A symbolic link as --out is refused (exit 2) and what it points to is untouched, also when a killed
        #    writer's leftover temporary is itself a link to that directory (the sweep never follows a link).
        target, link = f"{root}/target", f"{root}/link"
        os.makedirs(target)
        with open(f"{target}/keep.txt", "w") as f:
            f.write("keep")
        os.symlink(target, link)
        os.symlink(target, f"{root}/.link2.gdn2-tmp-999999999")  # a dead writer's leftover for --out link2, as a link
        code = subprocess.run([args.gdn2, "forward", "--in", f"{root}/inA", "--out", link],
                              stderr=subprocess.PIPE, text=True)
        print(f"[measured] --out a symbolic link: exit {code.returncode}: {code.stderr.strip()}")
        subprocess.run([args.gdn2, "forward", "--in", f"{root}/inA", "--out", f"{root}/link2"], check=True)
        kept = sorted(os.listdir(target))
        print(f"[measured] the link's target afterwards: {kept}; link still a link: {os.path.islink(link)}")
        if code.returncode != 2 or kept != ["keep.txt"] or not os.path.islink(link):
            failures.append(f"symbolic link --out: exit {code.returncode}, target holds {kept}")

        # 4. The temporaries a killed writer (SIGKILL: no handler runs) left beside --out are removed at the start of
        #    the next run into it, even one that then fails on its inputs, and nothing else is: not a user's files of
        #    similar names, not a running process's temporary, not another --out's. Before, they stayed until a run
        #    wrote its outputs, and that write also removed any entry named ".out.gdn2-tmp-" + anything (its "pid"
        #    read as 0: not running), a user's ".out.gdn2-tmp-notes" included.
        stale_root = f"{root}/stale"
        os.makedirs(stale_root)
        out4 = f"{stale_root}/out"
        shutil.copytree(f"{root}/refA", out4)
        sleeper = subprocess.Popen(["sleep", "60"])  # a writer's pid that is then killed
        sleeper.kill()
        sleeper.wait()
        dead = sleeper.pid
        stale = {f".out.gdn2-tmp-{dead}": "o.npy", f".out.gdn2-tmp-{dead}-old": "ht.npy"}
        for d, f in stale.items():
            os.makedirs(f"{stale_root}/{d}")
            with open(f"{stale_root}/{d}/{f}", "wb") as fh:
                fh.write(b"half written")
        user_dirs = [".out.gdn2-tmp-notes", f".out.gdn2-tmp-0{dead}", f".out.gdn2-tmp-{os.getpid()}",
                     f".other.gdn2-tmp-{dead}"]  # a name not of ours; a running process's; another --out's
        for d in user_dirs:
            os.makedirs(f"{stale_root}/{d}")
            with open(f"{stale_root}/{d}/mine.txt", "w") as fh:
                fh.write("mine")
        user_files = ["keep.txt", f".out.gdn2-tmp-{dead}.bak"]
        for f in user_files:
            with open(f"{stale_root}/{f}", "w") as fh:
                fh.write("mine")
        user = sorted(user_dirs + user_files)
        shutil.copytree(f"{root}/inA", f"{root}/inBad", ignore=shutil.ignore_patterns("w.npy"))  # refused: no w.npy

        def entries():
            return sorted(f for f in os.listdir(stale_root) if f != "out")

        def user_intact():
            return all(os.path.exists(f"{stale_root}/{d}/mine.txt") for d in user_dirs) and \
                all(os.path.isfile(f"{stale_root}/{f}") for f in user_files)

        print(f"[measured] beside --out before the runs: {entries()}")
        bad = subprocess.run([args.gdn2, "forward", "--in", f"{root}/inBad", "--out", out4], stderr=subprocess.PIPE,
                             text=True)
        after_bad = entries()
        print(f"[measured] a run refused on its inputs: exit {bad.returncode}: {bad.stderr.strip()}")
        print(f"[measured] beside --out afterwards: {after_bad}; --out still run A's: {state_of(out4, ref) == 'A'}")
        if bad.returncode != 2 or after_bad != user or not user_intact() or state_of(out4, ref) != "A":
            failures.append(f"stale temporaries, refused run: exit {bad.returncode}, beside --out {after_bad}, "
                            f"expected {user}")
        for d, f in stale.items():  # killed again: the sweep of the writing run itself
            os.makedirs(f"{stale_root}/{d}", exist_ok=True)
        good = subprocess.run([args.gdn2, "forward", "--in", f"{root}/inB", "--out", out4])
        after_good = entries()
        print(f"[measured] a run that writes: exit {good.returncode}; beside --out afterwards: {after_good}; "
              f"--out: {sorted(os.listdir(out4))}")
        if good.returncode != 0 or after_good != user or not user_intact() or state_of(out4, ref) != "B":
            failures.append(f"stale temporaries, writing run: exit {good.returncode}, beside --out {after_good}")
        # A user's file inside --out: the run is refused before any work (exit 2) and touches nothing.
        with open(f"{out4}/notes.txt", "w") as fh:
            fh.write("mine")
        mine = subprocess.run([args.gdn2, "forward", "--in", f"{root}/inA", "--out", out4], stderr=subprocess.PIPE,
                              text=True)
        print(f"[measured] --out holding notes.txt: exit {mine.returncode}: {mine.stderr.strip()}; "
              f"--out: {sorted(os.listdir(out4))}")
        if mine.returncode != 2 or not os.path.isfile(f"{out4}/notes.txt") or state_of(out4, ref) != "B" or \
                entries() != user:
            failures.append(f"a user's file in --out: exit {mine.returncode}, --out {sorted(os.listdir(out4))}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print("cli_outputs: %s" % ("PASSED" if not failures else f"FAILED ({len(failures)})"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
