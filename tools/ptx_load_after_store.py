#!/usr/bin/env python3
"""Lists the CUDA kernels whose PTX has global loads placed after global stores.

A load that follows a store through another pointer cannot be moved above it by the compiler (as far as it knows the
two may alias), so when the loaded value is needed soon the thread waits on memory once per such pair, one wait
after another. Backward rungs 18 and 19 (docs/cuda.md) found about 50 and 96 such waits per block in stages 5 and 4
this way and took 0.7 and 0.6 ms off them by issuing the loads first. The count printed is static: the number of
places in a kernel's PTX where an ld.global comes after an st.global (a loop body counts once), a pointer to where to
look, not a measurement.

    tools/ptx_load_after_store.py FILE.ptx [--min N]
    tools/ptx_load_after_store.py --build build cuda/src/chunk_backward.cu [--min N]

With --build, the PTX of that source is made with the build tree's own nvcc command (ninja -t commands), for
compute_90.
"""
import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile


def ptx_from_build(build, source):
    """The nvcc command that compiles `source` in the Ninja tree `build`, rewritten to write PTX; returns its text."""
    commands = subprocess.run(["ninja", "-C", build, "-t", "commands"], capture_output=True, text=True, check=True)
    def compiles(command):
        return "nvcc" in command and " -c " in command and command.split(" -c ")[-1].split()[0].endswith(source)

    line = next((c for c in commands.stdout.splitlines() if compiles(c)), None)
    if line is None:
        sys.exit(f"ptx_load_after_store.py: no nvcc command for {source} in {build} (configure and build it first)")
    args = shlex.split(line)
    out = tempfile.NamedTemporaryFile(suffix=".ptx", delete=False).name
    kept, skip = [], 0
    for i, a in enumerate(args):
        if skip:
            skip -= 1
            continue
        if a in ("-MD",):
            continue
        if a in ("-MT", "-MF", "-o"):
            skip = 1
            continue
        if a.startswith("--generate-code=") or a.startswith("-gencode"):
            kept.append("-arch=compute_90")
            continue
        kept.append("-ptx" if a == "-c" else a)
    subprocess.run(kept + ["-o", out], cwd=build, check=True)
    return open(out).read()


def demangle(names):
    if not shutil.which("c++filt"):
        return names
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return result.stdout.splitlines()


def scan(ptx):
    """[(mangled name, loads, stores, loads right after a store)] for every .entry in the PTX."""
    kernels, current = [], None
    for line in ptx.splitlines():
        entry = re.match(r"\s*(?:\.visible\s+)?\.entry\s+([\w$]+)", line)
        if entry:
            current = [entry.group(1), 0, 0, 0, None]
            kernels.append(current)
            continue
        if current is None:
            continue
        op = re.search(r"\b(ld|st)\.global", line)
        if op:
            if op.group(1) == "ld":
                current[1] += 1
                if current[4] == "st":
                    current[3] += 1
            else:
                current[2] += 1
            current[4] = op.group(1)
    return [k[:4] for k in kernels]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ptx", nargs="?",
                        help="a .ptx file (or, with --build, a source path such as cuda/src/chunk_backward.cu)")
    parser.add_argument("--build", help="a configured Ninja build tree: make the PTX of the source given")
    parser.add_argument("--min", type=int, default=3, help="list kernels with at least this many (default 3)")
    a = parser.parse_args()
    if not a.ptx:
        parser.error("give a .ptx file, or --build DIR and a source")
    ptx = ptx_from_build(a.build, a.ptx) if a.build else open(a.ptx).read()
    kernels = scan(ptx)
    names = demangle([k[0] for k in kernels])
    rows = sorted(((k[3], k[1], k[2], re.sub(r"gdn2::cuda::detail::(\(anonymous namespace\)::)?", "", n))
                   for k, n in zip(kernels, names)), reverse=True)
    print(f"{'ld after st':>11} {'ld':>6} {'st':>6}  kernel")
    for after, loads, stores, name in rows:
        if after >= a.min:
            print(f"{after:11d} {loads:6d} {stores:6d}  {name.split('(')[0]}")


if __name__ == "__main__":
    main()
