"""Write a seed corpus for each harness into CORPUS/<name>/ (default .fuzz-corpus/).

Coverage-guided fuzzing gets far faster from valid inputs it can mutate than from nothing:
random bytes rarely form a TOML document, a framed telegram or a JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TELEGRAMS = [
    b"\x02123|EE123456789MA\x03",
    b"\x021|NOREAD\x03\x02HB\x03",
    b"\x0242|1Z999AA10123456784;]C1420200001\x1d9212345678901234567890\x03",
    b"garbage\x02\x0299|A;B;A\x03\r\n",
]
MANIFESTS = [
    b"barcode,destination\n1Z999AA10123456784,RABAT\nEE123456789MA,CASABLANCA\n",
    b"barcode,postcode,country,service,customs,weight_g\r\nEE1,20000,MA,EE,hold,1200\r\n",
    b'"barcode","destination"\n"A,B",RABAT\n"x""y",Zon\xc3\xa9\n',
]
SCANS = [
    b"tracking_id,codes,time\n1,EE123456789MA,12:30\n2,NOREAD,2026-11-26T05:27:17Z\n",
    b"tracking_id,codes,length_mm,width_mm,height_mm,weight_g,recirculations,time\n"
    b"7,A;B,100,200,300,400,1,\n",
]
COMMANDS = [
    b"\x00\x0bplan/reload",
    b'\x00\x0fchute/7/disable{"id": "abc"}',
    b"\x00\x15tracking/123/query{}",
    b'\x00\x0fmanifest/reload{"id": null}',
]


def write(folder: Path, name: str, seeds: list[bytes]) -> None:
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        (target / f"seed-{i}").write_bytes(seed)


def main(folder: Path) -> None:
    # The first byte picks the preset / parser in each harness (see their docstrings).
    write(folder, "telegram", [b"\x00" + t for t in TELEGRAMS])
    write(folder, "manifest", [b"\x00" + m for m in MANIFESTS] + [b"\x01" + s for s in SCANS])
    demo = ROOT / "config" / "demo"
    site = (demo / "site.toml").read_bytes()
    plan = (demo / "sortplan.toml").read_bytes()
    write(folder, "config", [b"\x00" + site, b"\x01" + plan])
    write(folder, "commands", COMMANDS)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".fuzz-corpus")
