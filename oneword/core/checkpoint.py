"""A training run's checkpoint: the state to continue from, written so that a crash, a full
disk or Ctrl-C never leaves a file that resumes to anything but the uninterrupted result."""

from __future__ import annotations

import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from ..errors import OnewordError
from ..files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
# Settings that may differ between a run and its resumption without changing what is learned,
# the learning rate, so that a run that diverged can go on with a lower one, the step
# to stop at, so that a stopped run can be continued further, and how memory is saved.
RESUMABLE_CHANGES = {
    "checkpoint_every",
    "preview_every",
    "preview_prompts",
    "max_batch",
    "lr",
    "stop_at",
    "low_memory",
}
_KEYS = {
    "step": int,
    "rows": torch.Tensor,
    "optimizer": dict,
    "generators": list,
    "loss_smoothed": float,
    "history": list,
    "config": str,
    "photos": str,
}


@dataclass
class TrainingState:
    """What a checkpoint holds: enough to continue to the very same result."""

    step: int
    params: list[torch.nn.Parameter]  # K tensors [N, d]
    optimizer: torch.optim.Optimizer
    generators: list[torch.Generator]  # one per candidate
    loss_smoothed: float = float("nan")
    history: list[float] = field(default_factory=list)
    fixed_losses: list[list[float]] = field(default_factory=list)  # core.flat_stop, [T][K]
    # fp16 weights: the dynamic loss scale (torch.amp.GradScaler), kept so a resumed run scales
    # and skips as the uninterrupted one does; None in fp32 and bf16, which need none
    scaler: torch.amp.GradScaler | None = None

    def rows(self) -> torch.Tensor:
        """[K, N, d] current placeholder rows."""
        return torch.stack([p.detach() for p in self.params])


@contextmanager
def uninterrupted():
    """Hold Ctrl-C back for the block (the few lines that update the rows, the optimizer and
    the step together) and raise it after, so no state is ever half a step."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives Ctrl-C
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and previous is not signal.SIG_IGN:  # a process started to ignore Ctrl-C still does
        raise KeyboardInterrupt


def save_checkpoint(state: TrainingState, config, photos_id: str, path: Path) -> None:
    """Write the state atomically: a crash mid-write leaves the previous checkpoint intact."""
    payload = {
        "step": state.step,
        "rows": state.rows().cpu(),
        "optimizer": state.optimizer.state_dict(),
        "generators": [g.get_state() for g in state.generators],
        "loss_smoothed": state.loss_smoothed,
        "history": list(state.history),
        "fixed_losses": [list(x) for x in state.fixed_losses],
        "scaler": state.scaler.state_dict() if state.scaler is not None else {},
        "config": config.to_json(),
        "photos": photos_id,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _unusable(path: Path, why: str) -> OnewordError:
    return OnewordError(
        f"{path}: cannot resume from this checkpoint ({why}); delete it and run the command "
        "again without --resume, or give another --out"
    )


def _unreadable(exc: Exception) -> str:
    """One plain reason for a checkpoint torch.load refused (its own text quotes internals:
    pickling rules, bare numbers of a damaged archive)."""
    if "global" in str(exc).lower():  # the weights-only unpickler refused a class
        return "not readable: it holds Python objects, not only tensors (not a oneword checkpoint)"
    return "not readable: the file is damaged or cut short (not a whole PyTorch file)"


def read_checkpoint(path: Path, config, check: bool = True) -> dict:
    """The checkpoint's contents, checked to be complete and (check) of the run `config`
    describes."""
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols it cannot check
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise _unusable(path, _unreadable(exc)) from exc
    if not isinstance(payload, dict):
        raise _unusable(path, "not a oneword checkpoint")
    missing = sorted(k for k in _KEYS if k not in payload)
    wrong = sorted(k for k, kind in _KEYS.items() if k in payload and not _is(payload[k], kind))
    if missing or wrong:
        what = f"missing {', '.join(missing)}" if missing else f"damaged {', '.join(wrong)}"
        raise _unusable(path, what)
    try:
        saved = type(config).from_json(payload["config"])
    except (ValueError, TypeError, KeyError, OnewordError) as exc:
        raise _unusable(path, f"its settings do not read back: {exc}") from None
    if check:
        check_same_run(saved, config, path)
    return payload


def _is(value, kind) -> bool:
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def load_checkpoint(state: TrainingState, config, photos_id: str, path: Path) -> None:
    """Restore `state` from `path`, refusing a checkpoint of different settings or photos. A
    changed learning rate applies from the checkpoint's step on."""
    payload = read_checkpoint(path, config)
    if payload["photos"] != photos_id:
        raise OnewordError(
            f"{path}: this run was trained on other photos; "
            "resume with the same photos and settings"
        )
    rows = payload["rows"]
    if tuple(rows.shape) != tuple(state.rows().shape):
        raise _unusable(path, f"its rows are {tuple(rows.shape)}")
    with torch.no_grad():
        for param, saved in zip(state.params, rows):
            param.copy_(saved.to(param.device))
    lrs = [group["initial_lr"] for group in state.optimizer.param_groups]
    try:
        state.optimizer.load_state_dict(payload["optimizer"])
        for gen, gen_state in zip(state.generators, payload["generators"], strict=True):
            gen.set_state(gen_state)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise _unusable(path, f"damaged optimizer or generator state: {exc}") from None
    for group, lr in zip(state.optimizer.param_groups, lrs):
        group["initial_lr"] = lr
    state.step = int(payload["step"])
    state.loss_smoothed = float(payload["loss_smoothed"])
    state.history = [float(x) for x in payload["history"]]
    state.fixed_losses = [[float(v) for v in x] for x in payload.get("fixed_losses", [])]
    scale = payload.get("scaler") or {}
    if state.scaler is not None and scale:  # a run resumed in other precision starts afresh
        try:
            state.scaler.load_state_dict(scale)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise _unusable(path, f"damaged loss-scale state: {exc}") from None


def check_same_run(saved, current, path: Path) -> None:
    """Refuse to resume with settings that change what is learned (see RESUMABLE_CHANGES)."""
    for f in fields(current):
        if f.name in RESUMABLE_CHANGES:
            continue
        before, now = getattr(saved, f.name), getattr(current, f.name)
        if f.name == "candidates":  # their learning rates may change, as --lr may
            before, now = _without_lr(before), _without_lr(now)
        if before != now:
            raise OnewordError(
                f"{path}: this run was started with {f.name}={before!r}, not {now!r}; "
                "resume with the same settings or start a new run folder"
            )


def _without_lr(candidates) -> tuple:
    return tuple(replace(c, lr=None) for c in candidates)


@dataclass(frozen=True)
class CheckpointFile:
    """Where a run's checkpoint goes, and the fingerprint of the photos it trains on."""

    path: Path
    photos_id: str


def keep_candidates(path: Path, config, kept: tuple, photos_id: str | None = None) -> None:
    """Cut a run's checkpoint to the candidates `kept` (successive halving): their rows,
    optimizer moments, generators and fixed-batch losses, and a config naming only them.
    `photos_id` is the fingerprint of the photos the kept candidates train on (None: the
    checkpoint's, as for photos all candidates share). A checkpoint
    already cut to them is left as it is, so a cut interrupted after its record is redone."""
    payload = read_checkpoint(path, replace(config, candidates=()), check=False)
    saved = type(config).from_json(payload["config"])
    kept = tuple(kept)
    if saved.candidate_list == kept:
        return
    try:
        positions = [saved.candidate_list.index(c) for c in kept]
    except ValueError:
        raise _unusable(path, "it does not hold the candidates to keep") from None
    optimizer = payload["optimizer"]
    groups = [optimizer["param_groups"][k] for k in positions]
    moments = {i: optimizer["state"][k] for i, k in enumerate(positions) if k in optimizer["state"]}
    payload.update(
        rows=payload["rows"][positions],
        optimizer={
            "state": moments,
            "param_groups": [{**g, "params": [i]} for i, g in enumerate(groups)],
        },
        generators=[payload["generators"][k] for k in positions],
        fixed_losses=[[row[k] for k in positions] for row in payload.get("fixed_losses", [])],
        config=replace(saved, candidates=kept).to_json(),
        photos=photos_id or payload["photos"],
    )
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
