"""What the viewer's tests and its first-paint bench share: starting `stampflow view` and driving Debian's Chromium.

Chromium runs headless with the flags this closed network needs (without the background-networking ones its
connections are refused, many at a time, and every start tries to reach Google's hosts).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_view(args: list[str], *, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Start ``stampflow view ARGS --port 0``; return the process and the URL it prints once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "stream", "view", *args, "--port", "0"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "serving on " in line:
            return proc, line.split("serving on ", 1)[1].split()[0].rstrip("/")
    proc.kill()
    raise RuntimeError(f"stampflow view did not start: {proc.stderr.read()[-2000:]}")


def wait_until(page, predicate: str, timeout_ms: int = 60_000) -> None:
    """Poll a JavaScript expression until it is true. Not ``page.wait_for_function``: Playwright evaluates that
    predicate with ``eval``, which the viewer's Content-Security-Policy (rightly) refuses."""
    ok = page.evaluate(f"""async () => {{
        const end = performance.now() + {timeout_ms};
        while (performance.now() < end) {{
            if ({predicate}) return true;
            await new Promise(r => setTimeout(r, 20));
        }}
        return false;
    }}""")
    if not ok:
        raise TimeoutError(f"not true within {timeout_ms} ms: {predicate}")
