"""A dataset's preview: contact sheets to look at and one HTML report, no code needed.

Written into `<dataset>/preview/` by the dataset job (and by `python -m jobs.preview` for any
existing dataset):

- `sheet-SSSSS[-K].png` per shard (at most `clips_per_sheet` clips each): one line per clip, its
  conditioning frames over time, then frames 1, T/2 and T again with the aligned queries drawn
  on them as dots coloured by query index (the same index has the same colour on all three), so
  a query that drifts off its spot or jitters is visible at a glance;
- `report.html`: the funnel, every reject reason with its count and examples, histograms of the
  quality figures (pipelines.quality) and of motion, and the CPU time per stage, wall time and
  memory from the journal.

Only pyarrow, numpy and Pillow: the report is plain HTML with inline SVG, readable offline.
"""
from __future__ import annotations

import colorsys
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from pipelines import shards

PREVIEW = "preview"


@dataclass
class PreviewConfig:
    enabled: bool = True
    clips_per_sheet: int = 16
    frames: int = 8  # conditioning frames shown per clip, evenly spread over T
    thumb: int = 128  # pixels per thumbnail


def query_colours(q: int) -> np.ndarray:
    """[Q,3] uint8: a hue wheel walked with the golden ratio, so neighbouring indices differ."""
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.9, 1.0)] for k in range(q)],
                    np.uint8)


def project(points_N3: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """[N,2] pixel coordinates (OpenCV: column, row) of world points through the clip's camera."""
    cam = points_N3 @ extrinsics[:3, :3].T + extrinsics[:3, 3]
    uvw = cam @ intrinsics.T
    return uvw[:, :2] / uvw[:, 2:3]


def _thumb(png: bytes, size: int):
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    canvas.alpha_composite(img)
    return canvas.convert("RGB"), img.size[0]


def clip_strip(video: list[bytes], queries_TQ3: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray,
               cfg: PreviewConfig):
    """One clip's line of the sheet (a PIL image): `cfg.frames` frames, then frames 1, T/2, T with
    the queries drawn."""
    from PIL import Image, ImageDraw

    T, s = len(video), cfg.thumb
    shown = np.unique(np.round(np.linspace(0, T - 1, min(cfg.frames, T))).astype(int))
    marked = [0, (T - 1) // 2, T - 1]
    strip = Image.new("RGB", (s * (len(shown) + len(marked)) + 8, s), (255, 255, 255))
    colours = [tuple(int(x) for x in c) for c in query_colours(queries_TQ3.shape[1])]
    for k, t in enumerate(list(shown) + marked):
        img, res = _thumb(video[t], s)
        if k >= len(shown):
            draw = ImageDraw.Draw(img)
            r = 1.2 * res / s  # ~1.2 px once the frame is shrunk to the thumbnail
            for (u, v), c in zip(project(queries_TQ3[t], intrinsics, extrinsics), colours):
                draw.ellipse([u - r, v - r, u + r, v + r], fill=c)
        x = s * k + (8 if k >= len(shown) else 0)
        strip.paste(img.resize((s, s)), (x, 0))
    return strip


def contact_sheet(table, cfg: PreviewConfig) -> bytes:
    """PNG of the clips of `table` (a pyarrow table with sample_id, video, queries, camera)."""
    from PIL import Image, ImageDraw

    label_h = 14
    strips = []
    cams = table.column("camera").combine_chunks()
    K = cams.field("intrinsics").to_numpy_ndarray()
    E = cams.field("extrinsics").to_numpy_ndarray()
    queries = table.column("queries").combine_chunks().to_numpy_ndarray()[..., :3]
    for i, (sid, video) in enumerate(zip(table.column("sample_id").to_pylist(), table.column("video").to_pylist())):
        strips.append((sid, clip_strip(video, queries[i], K[i], E[i], cfg)))
    width = max(s.size[0] for _, s in strips)
    sheet = Image.new("RGB", (width, sum(s.size[1] + label_h for _, s in strips)), (255, 255, 255))
    draw, y = ImageDraw.Draw(sheet), 0
    for sid, strip in strips:
        draw.text((2, y + 1), sid, fill=(0, 0, 0))
        sheet.paste(strip, (0, y + label_h))
        y += strip.size[1] + label_h
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


# ---------------------------------------------------------------- the report

def _svg_histogram(values: list[float], title: str, bins: int = 20, width: int = 320, height: int = 120) -> str:
    vals = np.asarray([v for v in values if np.isfinite(v)], float)
    if len(vals) == 0:
        return f"<figure><figcaption>{html.escape(title)}: no values</figcaption></figure>"
    lo, hi = float(vals.min()), float(vals.max())
    counts, edges = np.histogram(vals, bins=bins, range=(lo, hi if hi > lo else lo + 1e-9))
    top = max(int(counts.max()), 1)
    bar = width / bins
    rects = "".join(
        f'<rect x="{k * bar:.1f}" y="{height - 16 - (height - 30) * c / top:.1f}" width="{bar - 1:.1f}" '
        f'height="{(height - 30) * c / top:.1f}" fill="#4a7ab0"><title>{edges[k]:.4g} .. {edges[k + 1]:.4g}: {c}</title></rect>'
        for k, c in enumerate(counts))
    axis = (f'<text x="0" y="{height - 2}" font-size="10">{lo:.4g}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{hi:.4g}</text>'
            f'<text x="0" y="10" font-size="10">max {top}</text>')
    return (f"<figure><svg width='{width}' height='{height}'>{rects}{axis}</svg>"
            f"<figcaption>{html.escape(title)} (n={len(vals)}, median {np.median(vals):.4g})</figcaption></figure>")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(manifest: dict, rejects: list[dict], clip_stats: list[dict], journal: list[dict], sheets: list[str]) -> str:
    """The dataset's report page (see the module doc); `clip_stats` are the rows' `stats`."""
    f = manifest["funnel"]
    parts = [f"<h1>{html.escape(manifest['name'])}</h1>",
             f"<p>digest {manifest['digest']} &middot; schema v{manifest['schema_version']} &middot; {manifest['rows']} "
             f"clips in {len(manifest['shards'])} shards &middot; splits {html.escape(json.dumps(manifest['splits']))} "
             f"&middot; created {manifest['created_at']} &middot; code {html.escape(str(manifest['code_version']))}</p>",
             "<h2>Funnel</h2>",
             _table(["step", "count"], [[k, v] for k, v in f.items() if not isinstance(v, dict)])]

    by_reason: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rejects:
        by_reason[(r["stage"], r["reason"])].append(r)
    parts.append("<h2>Rejects</h2>")
    rows = []
    for (stage, reason), items in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        examples = "; ".join(f"{r['sample_id'] or r['uid']}: {r['detail'].splitlines()[0][:160]}" for r in items[:3])
        rows.append([stage, reason, len(items), examples])
    parts.append(_table(["stage", "reason", "count", "examples"], rows) if rows else "<p>none</p>")

    parts.append("<h2>Quality of the kept clips (pipelines.quality)</h2>")
    per_clip = {
        "lowest coverage of the source's outer surface, per clip": [min(s["coverage"]) for s in clip_stats],
        "lowest extent ratio (watertight / source), per clip": [min(s["extent_ratio"]) for s in clip_stats],
        "components dropped, most in a frame, per clip": [max(s["components_dropped"]) for s in clip_stats],
        "components kept, most in a frame, per clip": [max(s["components"]) for s in clip_stats],
        "smallest / median source area over frames, per clip":
            [min(s["source_area"]) / max(float(np.median(s["source_area"])), 1e-30) for s in clip_stats],
        "source faces": [s["source_faces"] for s in clip_stats],
        "motion (max mean displacement)": [s["motion_max"] for s in clip_stats],
    } if clip_stats and "coverage" in clip_stats[0] else {}
    parts.append("".join(_svg_histogram(v, k) for k, v in per_clip.items()) or "<p>no quality figures (schema v1)</p>")

    cpu: Counter = Counter()
    wall, peak = [], []
    for rec in journal:
        for per_stage in rec["cpu_s"].values():
            cpu.update(per_stage)
        wall += list(rec.get("wall_s", {}).values())
        peak += [v for v in rec.get("peak_rss_mb", {}).values() if v]
    clips = max(f.get("clips_kept", 0) + f.get("clips_rejected", 0), 1)
    parts += ["<h2>Timings and memory (journal, all runs into this folder)</h2>",
              _table(["stage", "CPU-s total", "CPU-s per clip"],
                     [[k, f"{v:.1f}", f"{v / clips:.2f}"] for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])]),
              _svg_histogram(wall, "wall seconds per asset"), _svg_histogram(peak, "peak memory per asset process, MiB")]
    parts.append("<h2>Contact sheets</h2>")
    parts += [f'<p><a href="{html.escape(s)}">{html.escape(s)}</a><br><img src="{html.escape(s)}" style="max-width:100%"></p>'
              for s in sheets]
    style = ("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left} figure{display:inline-block;margin:8px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(manifest['name'])}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write(out: shards.Output, cfg: PreviewConfig) -> list[str]:
    """Write `preview/` for the finished dataset in `out`; returns the files written (relative)."""
    manifest = json.loads(out.read_bytes("manifest.json"))
    rejects = pq.read_table(io.BytesIO(out.read_bytes(manifest["rejects"]["path"]))).to_pylist()
    journal = shards.journal_records(out)
    sheets, clip_stats = [], []
    for k, shard in enumerate(manifest["shards"]):
        with out.open_input(shard["path"]) as f:  # the surface and SDF columns are never read
            table = pq.ParquetFile(f).read(columns=["sample_id", "video", "queries", "camera", "stats"])
        clip_stats += table.column("stats").to_pylist()
        for j in range(0, table.num_rows, cfg.clips_per_sheet):
            name = f"{PREVIEW}/sheet-{k:05d}" + (f"-{j // cfg.clips_per_sheet}" if table.num_rows > cfg.clips_per_sheet else "") + ".png"
            out.write_bytes(name, contact_sheet(table.slice(j, cfg.clips_per_sheet), cfg))
            sheets.append(name)
    rel = [s.split("/", 1)[1] for s in sheets]
    out.write_bytes(f"{PREVIEW}/report.html", report_html(manifest, rejects, clip_stats, journal, rel).encode())
    return sheets + [f"{PREVIEW}/report.html"]
