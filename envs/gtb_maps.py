"""Maps and fixed agent layouts of Gather-Trade-Build (gtb.md §2.1, §2.3), as data.

A map is a tuple of equal-length rows: `W` wood source, `S` stone source, `@` water, `.` empty.
`map_tables(rows)` turns one into the static numpy tables the environment indexes.
"""
from __future__ import annotations

import numpy as np

# `env-pure_and_mixed-15x15` (gtb.md §2.1): 23 wood and 12 stone sources, 21 water tiles; the water
# walls (row 7, col 7) split the map into a mixed, a pure-wood, a pure-stone and an empty quadrant.
PURE_AND_MIXED_15X15 = (
    "WWW....@.......",
    "WSS....@.......",
    "WWW....@.......",
    "WWW....@.......",
    "WSS............",
    "SWS............",
    ".......@.......",
    "@@@@..@@@@..@@@",
    ".......@.......",
    "WWW....@....S..",
    ".WW.........SS.",
    "WWW..........SS",
    "W.W....@.......",
    "W......@.......",
    ".......@.....S.",
)

MAPS = {"pure_and_mixed_15x15": PURE_AND_MIXED_15X15}

# Fixed four skills (gtb.md §2.3 [F] `layout_from_file.py` + [M]): build payments by rank, worst to
# best, = 10 x the rank-averaged clipped Pareto(4) multipliers of 100,000 sorted draws (numpy seed 1).
FIXED_PAYMENTS = (11.331641, 13.266112, 16.472373, 22.249614)
# start (row, col) of each rank (gtb.md §2.3 table): empty, pure-wood, mixed, pure-stone quadrant
FIXED_STARTS = ((0, 14), (14, 0), (0, 0), (14, 14))

STONE, WOOD = 0, 1  # market resource index r; inventory column r + 1 (column 0 is coin)


def map_tables(rows) -> dict:
    """Static tables of a map: `water` [H, W] bool; `src_flat` [S] int32 flat cell of each source
    tile (row-major); `src_res` [S] int32 its resource (STONE or WOOD); `src_index` [H*W] int32 the
    source index of each cell or S where there is none."""
    if len({len(r) for r in rows}) != 1:
        raise ValueError("map rows must all have the same length")
    grid = np.array([list(r) for r in rows])
    bad = sorted(set(grid.reshape(-1)) - set("WS@."))
    if bad:
        raise ValueError(f"map characters {bad} are invalid; valid: 'W', 'S', '@', '.'")
    flat = grid.reshape(-1)
    src_flat = np.flatnonzero((flat == "W") | (flat == "S")).astype(np.int32)
    src_res = np.where(flat[src_flat] == "S", STONE, WOOD).astype(np.int32)
    src_index = np.full(flat.shape, len(src_flat), np.int32)
    src_index[src_flat] = np.arange(len(src_flat), dtype=np.int32)
    return {
        "water": grid == "@",
        "src_flat": src_flat,
        "src_res": src_res,
        "src_index": src_index,
        "shape": grid.shape,
    }
