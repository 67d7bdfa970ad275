"""A real text window for the dictation test: a Tk Text widget holding the keyboard focus. Its
content is written to the file named by argv[1] five times a second (and first when it is ready)."""

from __future__ import annotations

import sys
import tkinter as tk
from pathlib import Path

out = Path(sys.argv[1])
root = tk.Tk()
root.title("dictation target")
text = tk.Text(root, width=80, height=10)
text.pack()


def dump() -> None:
    root.focus_force()
    text.focus_set()
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text.get("1.0", "end-1c"))
    tmp.replace(out)
    root.after(200, dump)


root.after(300, dump)
root.mainloop()
