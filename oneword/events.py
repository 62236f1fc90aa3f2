"""Progress events: library code emits them, the CLI draws a progress bar, the web UI streams
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union


@dataclass(frozen=True)
class Started:
    total_steps: int
    start_step: int
    candidates: int
    samples_per_step: int


@dataclass(frozen=True)
class Stepped:
    step: int  # optimizer steps done
    total_steps: int
    loss: float  # this step's mean loss over candidates
    loss_smoothed: float  # exponential moving average
    lr: float


@dataclass(frozen=True)
class Checkpointed:
    step: int
    path: Path


@dataclass(frozen=True)
class Previewed:
    step: int
    paths: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Message:
    text: str


@dataclass(frozen=True)
class Finished:
    step: int
    files: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Progressed:
    """Progress of work other than training steps (drawing and scoring images...)."""

    done: int
    total: int
    what: str


Event = Union[Started, Stepped, Checkpointed, Previewed, Message, Finished, Progressed]
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink."""
