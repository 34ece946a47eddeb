"""Human-readable rendering of the doctor report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_report(report: dict[str, Any]) -> None:
    console = Console()
    t = report["torch"]
    gpus = ", ".join(f"{g['name']} ({g['memory_mb']} MB)" for g in t.get("gpus", [])) or "none"
    rows = [
        ("gafkit", report["gafkit"]),
        ("python", f"{report['python']} on {report['platform']}"),
        ("torch", f"{t.get('version')} (CUDA {t.get('cuda_version') or 'n/a'})"),
        ("GPUs", gpus),
        ("gsplat", f"{report['gsplat']['version']}: CUDA extension {report['gsplat']['cuda_extension']}"),
        ("nvdiffrast", str(report["nvdiffrast"]["rasterize"])),
        ("mediapipe", f"{report['mediapipe']['version']}: face models {'present' if report['mediapipe']['face_models'] else 'MISSING'}"),
        ("video (PyAV)", f"{report['video'].get('av')}: H.264 {'yes' if report['video'].get('h264_encoder') else 'no'}"),
        ("head: ict", "available" if report["head_models"]["ict"]["available"] else "missing"),
        ("head: flame", report["head_models"]["flame"]["path"] or "not set"),
        ("renderers", f"mesh: {', '.join(report['backends']['mesh'])}; gaussians: {', '.join(report['backends']['gaussians'])}"),
        ("disk free", f"{report['disk']['free_gb']} GB at {report['disk']['path']}"),
    ]
    table = Table(show_header=False, box=None, pad_edge=False)
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", str(value))
    console.print(table)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print("[green]CPU path usable[/]" if report["cpu_path_ok"] else "[red]CPU path NOT usable[/]")
