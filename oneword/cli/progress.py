"""Drawing progress events in the terminal."""

from __future__ import annotations

import sys
import weakref

from ..events import Checkpointed, Event, Finished, Message, Previewed, Progressed, Started, Stepped

_LIVE: weakref.WeakSet = weakref.WeakSet()  # every ProgressBar, so an error can end their lines


def close_bars() -> None:
    """Close every open bar (its line ends), so what is printed next starts a line."""
    for progress in list(_LIVE):
        if progress.bar is not None:
            progress.bar.close()
            progress.bar = None


class ProgressBar:
    """Draws training events as a tqdm bar: step, smoothed loss, it/s and ETA."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        _LIVE.add(self)

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, Started):
            self.bar = tqdm(
                total=event.total_steps,
                initial=event.start_step,
                unit="step",
                dynamic_ncols=True,
                disable=self.quiet,
                desc="learning",
            )
        elif isinstance(event, Stepped) and self.bar is not None:
            self.bar.set_postfix(
                loss=f"{event.loss_smoothed:.4f}", lr=f"{event.lr:.2g}", refresh=False
            )
            self.bar.update(event.step - self.bar.n)
        elif isinstance(event, Progressed):
            self._progress(event)
        elif isinstance(event, (Message, Previewed, Checkpointed)):
            self._write(_describe(event))
        elif isinstance(event, Finished) and self.bar is not None:
            self.bar.close()
            self.bar = None

    def _progress(self, event: Progressed) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.desc != event.what or self.bar.total != event.total:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(
                total=event.total, unit="", dynamic_ncols=True, disable=self.quiet, desc=event.what
            )
        self.bar.update(event.done - self.bar.n)
        if event.done >= event.total:
            self.bar.close()
            self.bar = None

    def _write(self, text: str | None) -> None:
        if not text or self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


def _describe(event: Event) -> str | None:
    if isinstance(event, Message):
        return event.text
    if isinstance(event, Previewed):
        return f"step {event.step}: previews " + ", ".join(str(p) for p in event.paths)
    return None
