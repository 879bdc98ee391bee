"""Pictures in the terminal beside `langclip search`'s results, as rclip's --preview shows them: the index's own
thumbnails (nothing decoded again), inline, through the iTerm2 image protocol (iTerm2, WezTerm, Konsole, mintty,
VS Code's terminal, Rio) or kitty's graphics protocol (kitty, Ghostty), chosen from the environment."""
from __future__ import annotations

import base64
import os

KITTY_CHUNK = 4096   # kitty's protocol: base64 payload at most 4096 bytes an escape sequence


def protocol(env=None) -> str:
    """'kitty' where the terminal speaks kitty's graphics protocol (not the iTerm2 one), else 'iterm2'."""
    env = os.environ if env is None else env
    kitty = env.get("KITTY_WINDOW_ID") or env.get("TERM") in ("xterm-kitty", "xterm-ghostty")
    return "kitty" if kitty or env.get("TERM_PROGRAM", "").lower() == "ghostty" else "iterm2"


def inline(jpeg: bytes, rows: int, proto: str) -> str:
    """The escape sequence that shows a JPEG `rows` lines of text high, its width to scale."""
    if proto == "iterm2":
        return (f"\033]1337;File=inline=1;size={len(jpeg)};height={rows};preserveAspectRatio=1:"
                f"{base64.b64encode(jpeg).decode()}\a")
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, "PNG")   # kitty's protocol takes PNG (f=100), not JPEG
    data = base64.b64encode(buf.getvalue()).decode()
    parts = [data[i:i + KITTY_CHUNK] for i in range(0, len(data), KITTY_CHUNK)]
    return "".join(f"\033_G{f'a=T,f=100,r={rows},' if n == 0 else ''}m={int(n < len(parts) - 1)};{p}\033\\"
                   for n, p in enumerate(parts))
