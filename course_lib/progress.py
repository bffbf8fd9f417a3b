"""Progress bars that read as finished in a stored notebook.

``tqdm.auto`` draws an ipywidget in Jupyter. A widget's stored text is the one it
had when it was first displayed, so a notebook saved after training shows
``0%| 0/500`` on GitHub and in any viewer without a live kernel. Here, inside
Jupyter, the bar is a plain display (text and HTML) that is *updated in place*
(``display_id``): the saved notebook keeps its last state, e.g.
``shapes-ldm: 100% 900/900 [03:01] loss=0.041``. Elsewhere (scripts, tests,
the command-line tools) it is an ordinary ``tqdm`` bar on stderr.

    with progress_bar(total=500, desc="tiny-gpt") as bar:
        for step in range(500):
            ...
            bar.update(1, loss=f"{loss:.3f}")
"""

from __future__ import annotations

import html
import sys
import time

__all__ = ["progress_bar", "in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, nbconvert, nbval)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class _NotebookBar:
    """A text + HTML line, re-rendered in place at most every ``min_interval`` seconds."""

    def __init__(self, total: int, desc: str, min_interval: float = 0.5):
        from IPython.display import display

        self.total, self.desc, self.n, self.postfix = total, desc, 0, {}
        self.start = self.last = time.perf_counter()
        self.min_interval = min_interval
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict:
        elapsed = time.perf_counter() - self.start
        pct = 100 * self.n / self.total if self.total else 100
        rate = f", {self.n / elapsed:.2f} it/s" if elapsed > 0 and self.n else ""
        post = "".join(f" {k}={v}" for k, v in self.postfix.items())
        text = (f"{self.desc}: {pct:3.0f}% {self.n}/{self.total} "
                f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}{rate}]{post}")
        bar = f'<progress value="{self.n}" max="{max(self.total, 1)}"></progress>'
        return {"text/plain": text, "text/html": f"{bar} <code>{html.escape(text)}</code>"}

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        self.postfix.update(postfix)
        now = time.perf_counter()
        if now - self.last >= self.min_interval or self.n >= self.total:
            self.last = now
            self.handle.update(self._bundle(), raw=True)

    def close(self) -> None:
        self.handle.update(self._bundle(), raw=True)


class _TerminalBar:
    def __init__(self, total: int, desc: str):
        from tqdm.std import tqdm

        self.bar = tqdm(total=total, desc=desc, mininterval=1.0, file=sys.stderr)

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class _Silent:
    def update(self, n: int = 1, **postfix) -> None:
        pass

    def close(self) -> None:
        pass


class progress_bar:
    """``with progress_bar(total, desc, disable=False) as bar: bar.update(1, loss=...)``.

    In a notebook the last state stays in the saved output; in a terminal it is tqdm;
    ``disable=True`` shows nothing.
    """

    def __init__(self, total: int, desc: str = "", disable: bool = False):
        if disable:
            self._bar = _Silent()
        elif in_notebook():
            self._bar = _NotebookBar(total, desc)
        else:
            self._bar = _TerminalBar(total, desc)

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by ``n``; keyword arguments are shown after the bar (``loss="0.41"``)."""
        self._bar.update(n, **postfix)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "progress_bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
