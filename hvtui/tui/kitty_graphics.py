"""kitty's terminal graphics protocol with Unicode placeholders: the sample preview at full resolution, where the
terminal has it (elsewhere the preview draws half blocks, which every colour terminal shows).

The picture (PNG) is sent once in an APC escape that also creates a *virtual placement* of C x R cells
(`a=T,U=1,f=100,q=2`). It is then shown by ordinary text: each cell holds U+10EEEE plus two combining
diacritics numbering its row and column in the placement, in a foreground colour that is the image id. Being
text, it moves and clips with Textual's layout and redraws, with no cursor positioning of its own.
(https://sw.kovidgoyal.net/kitty/graphics-protocol/#unicode-placeholders)

Used only where that is known to work: kitty itself (TERM=xterm-kitty or KITTY_WINDOW_ID set), with truecolor
(the id travels as a 24-bit colour; Textual maps 256-colour palettes to RGB, which would change it), outside
tmux and screen (they swallow the escape). HVTUI_PREVIEW=halfblock turns it off; HVTUI_PREVIEW=kitty turns it
on for other terminals that implement placeholders.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

PLACEHOLDER = "\U0010EEEE"
CHUNK = 4096                 # base64 bytes per escape (the protocol's limit)
SCALE = 10                   # picture pixels per half-block pixel: a cell is drawn as 10x20 pixels (kitty scales it)
# Row / column numbers 0..99 as combining diacritics: the first 100 entries of kitty's
# gen/rowcolumn-diacritics.txt (Unicode 6.0 marks of class 230 without decomposition, in code point order).
DIACRITICS = tuple(chr(c) for c in (
    0x0305, 0x030D, 0x030E, 0x0310, 0x0312, 0x033D, 0x033E, 0x033F, 0x0346, 0x034A,
    0x034B, 0x034C, 0x0350, 0x0351, 0x0352, 0x0357, 0x035B, 0x0363, 0x0364, 0x0365,
    0x0366, 0x0367, 0x0368, 0x0369, 0x036A, 0x036B, 0x036C, 0x036D, 0x036E, 0x036F,
    0x0483, 0x0484, 0x0485, 0x0486, 0x0487, 0x0592, 0x0593, 0x0594, 0x0595, 0x0597,
    0x0598, 0x0599, 0x059C, 0x059D, 0x059E, 0x059F, 0x05A0, 0x05A1, 0x05A8, 0x05A9,
    0x05AB, 0x05AC, 0x05AF, 0x05C4, 0x0610, 0x0611, 0x0612, 0x0613, 0x0614, 0x0615,
    0x0616, 0x0617, 0x0657, 0x0658, 0x0659, 0x065A, 0x065B, 0x065D, 0x065E, 0x06D6,
    0x06D7, 0x06D8, 0x06D9, 0x06DA, 0x06DB, 0x06DC, 0x06DF, 0x06E0, 0x06E1, 0x06E2,
    0x06E4, 0x06E7, 0x06E8, 0x06EB, 0x06EC, 0x0730, 0x0732, 0x0733, 0x0735, 0x0736,
    0x073A, 0x073D, 0x073F, 0x0740, 0x0741, 0x0743, 0x0745, 0x0747, 0x0749, 0x074A))
MAX_CELLS = len(DIACRITICS)  # a placement at most this many rows and columns


def supported(env: Mapping[str, str]) -> bool:
    choice = env.get("HVTUI_PREVIEW", "").strip().lower()
    if choice in ("halfblock", "half-block", "blocks"):
        return False
    if choice == "kitty":
        return True
    term = env.get("TERM", "")
    multiplexed = bool(env.get("TMUX") or env.get("STY")) or term.startswith(("screen", "tmux"))
    kitty = term == "xterm-kitty" or bool(env.get("KITTY_WINDOW_ID"))
    truecolor = env.get("COLORTERM", "").lower() in ("truecolor", "24bit")
    return kitty and truecolor and not multiplexed


def image_id(seed: int) -> int:
    """A 24-bit id (the placeholder colour), never 0."""
    return ((seed * 2654435761) & 0xFFFFFF) or 1


def transmit(png: bytes, ident: int, cols: int, rows: int) -> str:
    """The escapes that send `png` as image `ident` and place it virtually over cols x rows cells (q=2: the
    terminal sends no reply, which Textual would read as keys)."""
    data = base64.standard_b64encode(png).decode("ascii")
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [""]
    out = []
    for i, chunk in enumerate(chunks):
        more = 1 if i < len(chunks) - 1 else 0
        keys = f"a=T,U=1,f=100,q=2,i={ident},c={cols},r={rows},m={more}" if i == 0 else f"m={more}"
        out.append(f"\x1b_G{keys};{chunk}\x1b\\")
    return "".join(out)


def delete(ident: int) -> str:
    """Free image `ident` (and its placements) in the terminal."""
    return f"\x1b_Ga=d,d=I,i={ident},q=2\x1b\\"


def placeholder_strips(ident: int, cols: int, rows: int, width: int) -> list[Strip]:
    """`rows` lines of `cols` placeholder cells (centred in `width`), each naming its row and column."""
    style = Style(color=Color.from_rgb((ident >> 16) & 255, (ident >> 8) & 255, ident & 255))
    left = max(0, (width - cols) // 2)
    strips = []
    for r in range(rows):
        cells = "".join(PLACEHOLDER + DIACRITICS[r] + DIACRITICS[c] for c in range(cols))
        strips.append(Strip([Segment(" " * left), Segment(cells, style)], width))
    return strips
