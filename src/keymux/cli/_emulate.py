"""``keymux emulate``: the emulator as a server, for trying clients offline."""

from __future__ import annotations

import argparse

from rich.console import Console

from .._errors import ConfigError
from ..emulator import Emulator, EmulatorKey, run
from ..emulator._keys import check_latency
from ..providers import canonical_provider

__all__ = ["emulate", "parse_latency"]


def parse_latency(text: str) -> float | tuple[float, float]:
    """``"0.02"`` -> 0.02; ``"0.01:0.03"`` -> (0.01, 0.03); ConfigError for anything else."""
    low, sep, high = text.partition(":")
    try:
        return check_latency((float(low), float(high)) if sep else float(text))
    except ValueError:
        raise ConfigError(
            f"--latency takes seconds >= 0 or LOW:HIGH with 0 <= LOW <= HIGH, not {text!r}"
        ) from None


def emulate(console: Console, args: argparse.Namespace) -> int:
    try:
        latency = parse_latency(args.latency)
    except ConfigError as exc:
        console.print(f"[red]keymux emulate: {exc}[/]")
        return 2
    keys = []
    for item in args.key or ():
        provider, sep, key = item.partition(":")
        if not sep or not key:
            raise ConfigError(f"--key takes PROVIDER:KEY, got {item.split(':')[0]!r}:...")
        keys.append(
            EmulatorKey(canonical_provider(provider), key, rpm=args.rpm, tpm=args.tpm, rpd=args.rpd)
        )
    emulator = Emulator(
        keys,
        window=args.window,
        day_window=args.day_window,
        latency=latency,
        seed=args.seed,
        rate_model=args.rate_model,
        accept_any_key=not keys,
        default_limits={"rpm": args.rpm, "tpm": args.tpm, "rpd": args.rpd},
    )

    def banner(root: str) -> None:
        """Printed once the socket is bound: a failed bind shows only its error, no URL."""
        # soft_wrap: a URL is never broken across lines, however narrow the terminal
        console.print(f"[bold]keymux emulator[/] on {root} (Ctrl-C stops it)", soft_wrap=True)
        console.print(
            f"  OPENAI_BASE_URL={root}/v1  GROQ_BASE_URL={root}  ANTHROPIC_BASE_URL={root}  "
            f"GOOGLE_GEMINI_BASE_URL={root}",
            soft_wrap=True,
        )
        if not keys:
            console.print(
                "  every key is accepted"
                + (
                    f" (limits per key and model: rpm={args.rpm} tpm={args.tpm} rpd={args.rpd} "
                    f"per {args.window:g} s window, {args.rate_model})"
                    if args.rpm or args.tpm or args.rpd
                    else ""
                ),
                soft_wrap=True,
            )

    try:
        run(emulator, host=args.host, port=args.port, on_ready=banner)
    except KeyboardInterrupt:
        pass
    return 0
