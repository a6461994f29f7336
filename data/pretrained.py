"""Autoencoders that `python -m data.prepare` trained, committed so that a fresh machine skips
training them again (they are most of the preparation's time: 170 s + 88 s of 328 s on 2
quiet cores, bench/RESULTS.md).

data/pretrained/manifest.json records, per prepare step (e.g. "autoencoders/shapes/kl"), the
exact params that step had (autoencoder config, steps, batch, seed and the image set's own
params) and the sha256 of every file. `restore` copies a committed autoencoder into the data
directory only when the step's params are equal and every checksum matches; otherwise prepare
trains it as before (a changed recipe, a corrupt or missing file). The copy is what prepare
itself wrote on the machine named in the manifest; its reconstruction statistics are measured
again after the copy.

    python -m data.pretrained --publish DATA_DIR   # maintainers: commit a data dir's autoencoders
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Callable

from data.atomic import write_dir_atomic, write_text_atomic

ROOT = Path(__file__).with_name("pretrained")
MANIFEST = ROOT / "manifest.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries() -> dict:
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return {}


def _folder(step: str) -> Path:
    return ROOT / step.replace("autoencoders/", "").replace("/", "-")


def restore(step: str, params: dict, out: Path, log: Callable[[str], None] = lambda s: None) -> bool:
    """Copy the committed output of prepare step `step` to `out` if its params equal `params`
    and its checksums hold; True when it did."""
    entry = _entries().get(step)
    if entry is None or entry["params"] != params:
        return False
    src = _folder(step)
    bad = [name for name, digest in entry["sha256"].items()
           if not (src / name).is_file() or _sha256(src / name) != digest]
    if bad:
        log(f"[prepare] {step}: committed copy fails its checksum ({', '.join(bad)}): training it instead")
        return False
    write_dir_atomic(out, lambda tmp: [shutil.copy2(src / name, tmp / name) for name in entry["sha256"]])
    log(f"[prepare] {step}: restored the committed copy (sha256 verified; trained {entry['trained_on']})")
    return True


def publish(data_dir: Path) -> list[str]:
    """Commit the autoencoders a finished prepare wrote in data_dir: files and manifest entries."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    entries = _entries()
    done = []
    for step, rec in sorted(manifest["steps"].items()):
        if not step.startswith("autoencoders/"):
            continue
        src = data_dir / step
        dst = _folder(step)
        files = sorted(p.name for p in src.iterdir() if p.is_file())
        write_dir_atomic(dst, lambda tmp: [shutil.copy2(src / name, tmp / name) for name in files])
        entries[step] = {"params": rec["params"], "sha256": {name: _sha256(dst / name) for name in files},
                         "trained_on": f"{platform.node()} ({platform.machine()}), {rec['stats'].get('seconds')} s",
                         "stats": rec["stats"]}
        done.append(step)
    write_text_atomic(MANIFEST, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--publish", type=Path, required=True, metavar="DATA_DIR")
    args = ap.parse_args(argv)
    if not (args.publish / "manifest.json").exists():
        print(f"error: {args.publish} has no manifest.json: run python -m data.prepare --data-dir {args.publish}",
              file=sys.stderr)
        return 2
    print("\n".join(publish(args.publish)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
