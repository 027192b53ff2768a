"""What the operator is looking at, and what each key does to it (rules 9-11 and 15).

Pure: keys change a `ViewState` and may ask the table for an action (flush, sort); the
console turns the state plus a snapshot into a screen. Keys are named strings: single
characters as typed, and "UP", "DOWN", "PGUP", "PGDN", "HOME", "END", "LEFT", "RIGHT",
"TAB", "ESC", "CTRL_L", "CTRL_X".

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

from dataclasses import dataclass

TCP = "tcp"
LOWER = "lower"

VIEW_COUNTS = 0
VIEW_MAC = 1
VIEW_SIZES = 2

HSCROLL = 60  # iptraf-ng's lower-window horizontal offset


@dataclass(slots=True)
class ViewState:
    active: str = TCP
    bar: int = 0  # highlighted TCP row (one row per direction)
    top: int = 0  # first TCP row on screen
    lower_top: int | None = None  # first lower-window line shown; None follows the newest
    lower_hoff: int = 0
    columns: int = VIEW_COUNTS
    mac_option: bool = False  # rule 11: the MAC view exists only with the source-MAC option
    sort_pending: bool = False  # S was pressed: the next key picks P, B or cancels
    paused: bool = False
    help: bool = False
    graph: bool = False  # the lower window shows traffic over time instead of its lines
    quit: bool = False


@dataclass(slots=True)
class Action:
    """What a key asks of the TCP table."""

    kind: str  # "flush", "sort", "redraw"
    by: str = ""  # for sort: "P" or "B"


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))


def handle_key(st: ViewState, key: str, tcp_rows: int, tcp_page: int, lower_lines: int,
               lower_page: int, lower_hidden: int = HSCROLL) -> Action | None:
    """Apply one key. `tcp_rows` = 2 x pairs; pages are the windows' heights in rows;
    `lower_hidden`: how far the longest line on view runs past the lower window."""
    if st.sort_pending:
        st.sort_pending = False
        k = key.upper()
        if k in ("P", "B"):
            st.bar = st.top = 0  # the view goes to the top after a sort, as iptraf-ng's does
            return Action("sort", k)
        return None  # any other key cancels (rule 10); sorting never flushes
    if st.help:
        st.help = False  # any key closes the help overlay
        return None
    k = key.upper() if len(key) == 1 else key
    if k in ("Q", "X", "ESC", "CTRL_X"):
        st.quit = True
        return None
    if k == "?":
        st.help = True
        return None
    if k == "P":
        st.paused = not st.paused
        return None
    if k in ("W", "TAB"):
        st.active = LOWER if st.active == TCP else TCP
        return None
    if k == "M":
        if st.active == TCP:
            nxt = st.columns + 1
            if nxt == VIEW_MAC and not st.mac_option:
                nxt += 1
            st.columns = nxt % 3
        return None
    if k == "S":
        st.sort_pending = True
        return None
    if k == "G":
        st.graph = not st.graph
        return None
    if k == "F":
        return Action("flush")
    if k == "CTRL_L":
        return Action("redraw")
    if st.active == TCP:
        _move_tcp(st, k, tcp_rows, max(1, tcp_page))
    else:
        _move_lower(st, k, lower_lines, max(1, lower_page), lower_hidden)
    return None


def _move_tcp(st: ViewState, k: str, rows: int, page: int) -> None:
    last = max(0, rows - 1)
    if k == "UP":
        st.bar = max(0, st.bar - 1)
    elif k == "DOWN":
        st.bar = min(last, st.bar + 1)
    elif k in ("PGUP", "-"):
        st.bar = max(0, st.bar - page)
        st.top = max(0, st.top - page)
    elif k in ("PGDN", " "):
        st.bar = min(last, st.bar + page)
        st.top = min(max(0, rows - page), st.top + page)
    elif k == "HOME":
        st.bar = st.top = 0
    elif k == "END":
        st.bar = last
    fit_tcp(st, rows, page)


def fit_tcp(st: ViewState, rows: int, page: int) -> None:
    """Keep the bar inside the table and the window around the bar (after any change); the
    window starts at a pair (an even row), so pairs are shown whole when the page is even."""
    st.bar = _clamp(st.bar, 0, max(0, rows - 1))
    if st.bar < st.top:
        st.top = st.bar
    elif st.bar >= st.top + page:
        st.top = st.bar - page + 1
    st.top = _clamp(st.top, 0, max(0, rows - page))
    if st.top & 1:
        # to the pair's first row, or past it if the bar would fall off the bottom
        st.top += 1 if st.bar >= st.top - 1 + page else -1


def _move_lower(st: ViewState, k: str, lines: int, page: int, hidden: int) -> None:
    bottom = max(0, lines - page)
    top = bottom if st.lower_top is None else st.lower_top
    if k == "UP":
        top -= 1
    elif k == "DOWN":
        top += 1
    elif k in ("PGUP", "-"):
        top -= page
    elif k in ("PGDN", " "):
        top += page
    elif k == "HOME":
        top = 0
    elif k == "END":
        top = bottom
    elif k == "LEFT":
        st.lower_hoff = 0
    elif k == "RIGHT":
        # as far as what is hidden (a fixed 60 would leave a wide window nearly empty)
        st.lower_hoff = max(0, hidden)
    top = _clamp(top, 0, bottom)
    # at the bottom the window follows new lines again, as iptraf-ng's auto-scroll does
    st.lower_top = None if top >= bottom else top
