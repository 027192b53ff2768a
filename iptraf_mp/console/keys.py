"""Keys from the terminal: cbreak mode, non-blocking reads and escape-sequence parsing.

`KeyParser` is pure (bytes in, key names out) so the tests need no terminal. Key names are
those of `view.handle_key`: single characters as typed, and "UP", "DOWN", "PGUP", "PGDN",
"HOME", "END", "LEFT", "RIGHT", "TAB", "ESC", "CTRL_L", "CTRL_X", "ENTER", "BACKSPACE".

`Terminal` puts stdin in cbreak mode (keys arrive one by one, unechoed; Ctrl-C and Ctrl-Z
still raise signals) and always puts back what it found, whatever way the program leaves.
"""

from __future__ import annotations

import atexit
import os
import select
import sys
import termios
import time
import tty

# The final byte (and parameter) of CSI sequences: ESC [ A, ESC [ 5 ~, ESC [ 1 ; 5 A ...
_CSI_FINAL = {"A": "UP", "B": "DOWN", "C": "RIGHT", "D": "LEFT", "H": "HOME", "F": "END",
              "Z": "TAB"}  # shift-Tab switches window too, as Tab does
_CSI_TILDE = {"1": "HOME", "7": "HOME", "4": "END", "8": "END", "5": "PGUP", "6": "PGDN",
              "2": "INSERT", "3": "DELETE", "17": "TAB"}  # F6: iptraf-ng's other window key
_SS3 = {"A": "UP", "B": "DOWN", "C": "RIGHT", "D": "LEFT", "H": "HOME", "F": "END"}
_CONTROL = {0x09: "TAB", 0x0C: "CTRL_L", 0x18: "CTRL_X", 0x0D: "ENTER", 0x0A: "ENTER",
            0x7F: "BACKSPACE", 0x08: "BACKSPACE"}

ESC_WAIT = 0.03  # a lone ESC is the Esc key if nothing follows within this (tmux uses more)


class KeyParser:
    """Turns the bytes a terminal sends into key names; keeps an unfinished sequence."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        keys: list[str] = []
        buf = self.buf
        i = 0
        n = len(buf)
        while i < n:
            b = buf[i]
            if b == 0x1B:
                if i + 1 >= n:
                    break  # maybe the start of a sequence: wait for more, or `timeout()`
                nxt = buf[i + 1]
                if nxt == 0x5B:  # CSI
                    j = i + 2
                    while j < n and not 0x40 <= buf[j] <= 0x7E:
                        j += 1
                    if j >= n:
                        if j - i > 16:  # not a sequence after all: drop the junk
                            i = n
                        break
                    key = _csi(buf[i + 2:j].decode("latin-1"), chr(buf[j]))
                    if key:
                        keys.append(key)
                    i = j + 1
                elif nxt == 0x4F:  # SS3 (application cursor keys)
                    if i + 2 >= n:
                        break
                    key = _SS3.get(chr(buf[i + 2]))
                    if key:
                        keys.append(key)
                    i += 3
                elif nxt == 0x1B:
                    keys.append("ESC")  # ESC ESC: the first one was a key of its own
                    i += 1
                else:
                    # Alt+key arrives as ESC key: iptraf-ng has no Alt keys, so it is Esc
                    keys.append("ESC")
                    i += 1
                continue
            if b in _CONTROL:
                keys.append(_CONTROL[b])
            elif 0x20 <= b < 0x7F:
                keys.append(chr(b))
            elif b >= 0x80:
                # a UTF-8 character: skip it whole (no key of ours is one)
                width = 2 if b >= 0xC0 else 1
                if b >= 0xE0:
                    width = 3
                if b >= 0xF0:
                    width = 4
                if i + width > n:
                    break
                i += width
                continue
            i += 1
        self.buf = buf[i:]
        return keys

    def pending(self) -> bool:
        return bool(self.buf)

    def timeout(self) -> list[str]:
        """Nothing more came: a lone ESC was the Esc key; any other fragment is dropped."""
        keys = ["ESC"] if self.buf[:1] == b"\x1b" else []
        self.buf = b""
        return keys


def _csi(params: str, final: str) -> str | None:
    if final == "~":
        return _CSI_TILDE.get(params.split(";")[0])
    return _CSI_FINAL.get(final)  # modifiers (ESC [ 1 ; 5 A) do not change the key


class Terminal:
    """stdin in cbreak mode for the duration of a `with`; restored on every way out.

    Restoring is idempotent and is also registered with atexit, so an exception that escapes
    everything else, or a SIGTERM turned into a normal exit, still leaves a sane terminal.
    """

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.saved: list | None = None
        self.parser = KeyParser()
        self.is_tty = os.isatty(self.fd)
        self.closed = False  # the terminal went away (end of file on stdin)

    def __enter__(self) -> Terminal:
        self.enter()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def enter(self) -> None:
        if not self.is_tty or self.saved is not None:
            return
        self.saved = termios.tcgetattr(self.fd)
        atexit.register(self.restore)
        tty.setcbreak(self.fd, termios.TCSANOW)
        # cbreak leaves ISIG on (Ctrl-C, Ctrl-Z still signal) but IXON would eat Ctrl-S/Q
        attrs = termios.tcgetattr(self.fd)
        attrs[0] &= ~termios.IXON
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def restore(self) -> None:
        if self.saved is None:
            return
        saved, self.saved = self.saved, None
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
        except termios.error:
            pass  # the terminal went away (hang-up): nothing left to restore
        atexit.unregister(self.restore)

    def read_keys(self, timeout: float = 0.0) -> list[str]:
        """Keys typed so far, waiting at most `timeout` for the first one. Never blocks
        longer: the display keeps running while nobody types."""
        if not self.is_tty or self.closed:
            time.sleep(timeout)  # the caller paces itself on this wait
            return []
        keys: list[str] = []
        wait = timeout
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], wait)
            except InterruptedError:
                ready = []
            if not ready:
                if self.parser.pending():
                    # an ESC alone, or the start of a sequence still on its way
                    ready2, _, _ = select.select([self.fd], [], [], ESC_WAIT)
                    if ready2:
                        wait = 0.0
                        continue
                    keys += self.parser.timeout()
                return keys
            try:
                data = os.read(self.fd, 1024)
            except (BlockingIOError, InterruptedError):
                return keys
            except OSError:
                data = b""
            if not data:
                self.closed = True  # the terminal is gone: the console stops
                return keys
            keys += self.parser.feed(data)
            wait = 0.0
