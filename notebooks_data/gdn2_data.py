"""Loaders for the data `gdn2 export` writes (numpy only). Used by the notebooks in this folder."""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def path(*parts):
    return os.path.join(HERE, *parts)


def load_dir(d):
    """Every .npy file of a directory as a dict name -> array."""
    return {f[:-4]: np.load(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".npy")}


def load_trace(name):
    """A trace directory (gdn2 trace / gdn2 export): arrays plus the metadata of trace.json."""
    d = path("traces", name)
    tr = load_dir(d)
    with open(os.path.join(d, "trace.json")) as f:
        tr["meta"] = json.load(f)
    return tr


def gdn2_binary():
    """The gdn2 command line: the newest build under the repository (build/, or any build*/ folder such as
    build-release/), else one on PATH, else None (scripts/setup.sh builds it)."""
    import glob
    import shutil
    built = [p for p in glob.glob(path("..", "build*", "reference", "gdn2")) if os.access(p, os.X_OK)]
    if built:
        return max(built, key=os.path.getmtime)
    return shutil.which("gdn2")
