"""A manifest of N rows from the bundled social example (its 12 rows, each again with another
seed), for measuring what a job of hundreds of short clips costs to render, rerun and report.

    python -m scripts.make_rerun_manifest --rows 500 --out /tmp/many/many.csv

Rows carry a `campaign` column of their own (kept and carried to summary.json and the report).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

SOCIAL = Path(__file__).resolve().parents[1] / "manifests" / "social" / "social.csv"


def rows(count: int) -> list[dict[str, str]]:
    base = list(csv.DictReader(SOCIAL.open(newline="")))
    folder = SOCIAL.parent
    made = []
    for index in range(count):
        row, seed = base[index % len(base)], index // len(base)
        made.append(
            {
                "id": f"{row['id']}-s{seed}",
                "portrait": str((folder / row["portrait"]).resolve()),
                "driving_video": str((folder / row["driving_video"]).resolve()),
                "seed": str(seed),
                "framing": row.get("framing") or "",
                "campaign": f"c{seed % 5}",
            }
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    made = rows(args.rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(made[0]))
        writer.writeheader()
        writer.writerows(made)
    print(f"{len(made)} rows: {args.out}")


if __name__ == "__main__":
    main()
