"""Optional TensorBoard curves beside metrics.jsonl (`tensorboard=true`): a view, not a record.

    with Curves(run_dir, resumed_step, enabled=cfg.tensorboard and dist.is_main) as curves:
        curves.add({"step": 7, "loss": 3.2, "lr": 3e-4, ...})   # the dict of one metrics line
        curves.flush()                                           # before each checkpoint

metrics.jsonl stays the source of truth (analysis/ never reads event files); this writes every numeric
value of each metrics line as a scalar at that line's step to RUN_DIR/tensorboard/, for
`tensorboard --logdir results/<sweep>` (one run per run directory).

Resume: the trainer drops the metrics lines past the resumed checkpoint and writes them again,
and an event file cannot be cut short the same way. The writer instead opens with
`purge_step = resumed_step + 1`, a SessionLog.START event at that step that tells TensorBoard's
readers to discard every earlier-written event at or past it, so a resumed run shows one value
per step (the data server does the same on its own when a tag's step goes back). Events reach
disk at `flush()`, which the trainer calls before each checkpoint: every step a checkpoint
covers is on disk before the checkpoint exists, so a resume never leaves a gap.

Disabled, nothing is imported: the default path loads no tensorboard. Enabled without the
package, `summary_writer()` is a one-line ConfigError naming the install, raised before a run
starts. The file is not named tensorboard.py: `python grid/train.py` puts grid/ first on
sys.path, where that name would shadow the tensorboard package itself.
"""

from __future__ import annotations

import time
from pathlib import Path

from grid.merge import ConfigError

INSTALL = "pip install -e '.[tensorboard]'"
SUBDIR = "tensorboard"  # RUN_DIR/tensorboard/: one TensorBoard run per run directory


def summary_writer() -> type:
    """torch.utils.tensorboard.SummaryWriter; ConfigError (one line) when tensorboard is not
    installed (torch's module raises ImportError at import then)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"tensorboard=true needs the tensorboard package: {INSTALL}") from None
    return SummaryWriter


def _after_earlier_files(log_dir: Path) -> None:
    """Wait, if need be, until a new event file's name sorts after every file in log_dir.
    Readers apply files in name order, and the name starts with the creation second
    ("events.out.tfevents.<seconds>.<host>.<pid>..."): a resume within the second its killed
    process started could sort first, and its purge would then come before the events it purges."""
    seconds = [int(p.name.split(".")[3]) for p in log_dir.glob("events.out.tfevents.*")
               if p.name.split(".")[3].isdigit()]
    time.sleep(max(0.0, max(seconds, default=0) + 1 - time.time()))


class Curves:
    """The numeric values of metrics lines as TensorBoard scalars; does nothing when disabled."""

    def __init__(self, run_dir: Path, resumed_step: int, enabled: bool) -> None:
        self._writer = None
        if enabled:
            writer = summary_writer()
            log_dir = Path(run_dir) / SUBDIR
            _after_earlier_files(log_dir)
            # Steps 1..resumed_step were written by an earlier process and stay; later ones it
            # may have written are purged by the readers (module docstring).
            self._writer = writer(str(log_dir), purge_step=resumed_step + 1)
        self._step, self._tags = -1, set()

    def add(self, record: dict) -> None:
        """Every int or float of one metrics line (step excluded: it is the x axis) at
        record["step"]. A tag already written at this step is skipped: an eval line repeats
        the training line's elements, and TensorBoard would keep both points."""
        if self._writer is None:
            return
        step = int(record["step"])
        if step != self._step:
            self._step, self._tags = step, set()
        for tag, value in record.items():
            if tag == "step" or tag in self._tags or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            # float32 on disk (TensorBoard's scalar): ints past 2^24 lose their low digits there;
            # metrics.jsonl keeps them exact.
            self._writer.add_scalar(tag, float(value), step)
            self._tags.add(tag)

    def flush(self) -> None:
        """Everything added so far is written to the event file (the trainer: before each checkpoint)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Curves:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
