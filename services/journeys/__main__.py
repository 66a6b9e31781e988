"""``python -m services.journeys --base-url URL --users N [--seed S] [--stems-only]``: drive the API like users.

Purchases are signed with PHONOGLYPH_BILLING_SECRET (without it, nobody buys credits). Prints
one line per user and a summary; exits 1 when any journey met an unexpected answer.
"""

from __future__ import annotations

import argparse
import os
import sys

from services.journeys.driver import run_journeys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.journeys", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline-s", type=float, default=120.0, help="for all users together")
    parser.add_argument(
        "--stems-only",
        action="store_true",
        help="each user is a guest who uploads one track and asks for its stems; a failed separation is an "
        "answer, not a problem (incident traffic, with a fault switch on)",
    )
    args = parser.parse_args(argv)
    report = run_journeys(
        args.base_url,
        users=args.users,
        seed=args.seed,
        billing_secret=os.environ.get("PHONOGLYPH_BILLING_SECRET") or None,
        deadline_s=args.deadline_s,
        on_user=lambda user: print(user.line(), flush=True),
        stems_only=args.stems_only,
    )
    print(report.summary(), flush=True)
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
