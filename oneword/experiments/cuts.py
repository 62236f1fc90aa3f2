"""The cuts of successive halving in the store (table `cuts`): who was kept at which step,
by what score, decided by which evaluation."""

from __future__ import annotations

from .store import Store


def add_cut(
    store: Store,
    run_id: int,
    rung: int,
    step: int,
    evaluation_id: int | None,
    decided: list[tuple[int, float, bool]],
) -> None:
    """Record a cut: (candidate id, score, kept) of every candidate scored at `step`."""
    with store.transaction() as c:
        c.executemany(
            "INSERT OR REPLACE INTO cuts VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (run_id, rung, step, cid, evaluation_id, float(score), int(kept))
                for cid, score, kept in decided
            ],
        )


def run_cuts(store: Store, run_id: int) -> list[dict]:
    """Every cut of a run, rung by rung, the best score first."""
    rows = store.conn.execute(
        "SELECT * FROM cuts WHERE run_id = ? ORDER BY rung, score DESC, candidate_id",
        (run_id,),
    )
    return [
        {
            "rung": r["rung"],
            "step": r["step"],
            "candidate_id": r["candidate_id"],
            "evaluation_id": r["evaluation_id"],
            "score": r["score"],
            "kept": bool(r["kept"]),
        }
        for r in rows
    ]
