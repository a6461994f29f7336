"""Fault injection for the reliability tests (tests/integration/test_faults.py):
`TRANSFUSION_FAULT=POINT:K` kills this process with SIGKILL the K-th time it reaches POINT.

Points: "checkpoint" (state.pt written, meta.json not yet), "metrics" (half a metrics line
written), "evaluation" (training done, evals.json not yet written), "status" (evals.json
written, the final status.json not yet). Unset, `fault_point` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "TRANSFUSION_FAULT"
POINTS = ("checkpoint", "metrics", "evaluation", "status")
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, k = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(k or 1):
        os.kill(os.getpid(), signal.SIGKILL)
