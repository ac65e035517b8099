"""Take ``docs/dashboard.png``: ``keymux emulate`` and ``keymux serve`` on loopback, some
traffic (one key with a small budget, so 429s and a falling remaining budget show; one key
the provider revokes, so a disabled key shows), then headless Chromium (Debian's ``chromium``,
driven by playwright) photographs ``/dashboard``.

    python docs/dashboard_screenshot.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "kmx-docs-token-0123456789"
EMU, PROXY = 8761, 8762
KEYS = {
    "OPENAI_API_KEY_1": ("openai", "sk-docs-openai-1-0123456789abcdef", 200),
    "OPENAI_API_KEY_2": ("openai", "sk-docs-openai-2-0123456789abcdef", 200),
    "OPENAI_API_KEY_3": ("openai", "sk-docs-openai-3-0123456789abcdef", 40),
    "GROQ_API_KEY": ("groq", "gsk_docs_groq_1_0123456789abcdef", 100),
    "ANTHROPIC_API_KEY_1": ("claude", "sk-ant-docs-claude-1-0123456789", 150),
    "ANTHROPIC_API_KEY_2": ("claude", "sk-ant-docs-claude-2-0123456789", 150),
    "GEMINI_API_KEY": ("gemini", "AIzaDocs-gemini-1-0123456789abcdef", 60),
}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def post(path: str, body: object, headers: dict[str, str]) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{PROXY}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def traffic(i: int) -> int:
    hi = [{"role": "user", "content": "hi"}]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    kind = i % 4
    if kind == 0:
        return post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": hi}, bearer)
    if kind == 1:
        body = {"model": "claude/claude-sonnet-4-5", "messages": hi, "stream": True}
        return post("/v1/chat/completions", body, bearer)
    if kind == 2:
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        return post(
            "/v1beta/models/gemini-2.5-flash:generateContent", body, {"x-goog-api-key": TOKEN}
        )
    return post(
        "/openai/v1/chat/completions", {"model": "llama-3.1-8b-instant", "messages": hi}, bearer
    )


def main() -> int:
    from playwright.sync_api import sync_playwright

    emu = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keymux",
            "emulate",
            "--port",
            str(EMU),
            "--window",
            "20",
            "--latency",
            "0.05",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_KEYS"))}
    root = f"http://127.0.0.1:{EMU}"
    env.update(
        KEYMUX_PROXY_TOKEN=TOKEN,
        OPENAI_BASE_URL=root + "/v1",
        GROQ_BASE_URL=root,
        ANTHROPIC_BASE_URL=root,
        GOOGLE_GEMINI_BASE_URL=root,
    )
    env.update({name: secret for name, (_, secret, _) in KEYS.items()})
    time.sleep(1.0)
    keys = [
        {"provider": p, "key": secret, "rpm": rpm, "label": name}
        for name, (p, secret, rpm) in KEYS.items()
    ]
    keys[5]["faults"] = {"revoked": True}  # the provider revokes ANTHROPIC_API_KEY_2
    urllib.request.urlopen(
        urllib.request.Request(root + "/_emulator/keys", data=json.dumps(keys).encode())
    ).read()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "keymux", "serve", "--port", str(PROXY), "--env-file", ""],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        stop = time.time() + 75
        shot = time.time() + 70

        def worker(kind: int) -> None:
            i = kind
            while time.time() < stop:
                traffic(i)
                i += 4
                time.sleep(0.05)

        with ThreadPoolExecutor(8) as pool:
            for n in range(8):
                pool.submit(worker, n % 4)
            while time.time() < shot:  # the chart fills while the traffic runs
                time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(f"http://127.0.0.1:{PROXY}/dashboard?token={TOKEN}")
                page.wait_for_selector('tr[data-key="openai/OPENAI_API_KEY_1"]')
                time.sleep(2.5)
                page.screenshot(path=str(HERE / "dashboard.png"), full_page=True)
                browser.close()
    finally:
        proxy.terminate()
        emu.terminate()
        proxy.wait(20)
        emu.wait(20)
    print(f"wrote {HERE / 'dashboard.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
