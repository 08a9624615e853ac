"""The report index renders in headless Chromium with its links and its drift plot, offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from batch.report_index import drift_plot_svg, render_index, to_epoch_seconds

CHROMIUM = "/usr/bin/chromium"
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def sample_entries() -> tuple[list[dict], dict[str, list]]:
    entries, series = [], {"detector brightness": [], "detector max": [], "recommender max": []}
    for k in range(4):
        start = START + timedelta(minutes=5 * k)
        window = start.strftime("%Y%m%dT%H%M%SZ")
        drifted = k >= 2
        entries.append(
            {
                "model": "detector",
                "window": window,
                "window_start": start.isoformat(),
                "drift": drifted,
                "manifest": f"windows/detector/{window}/manifest.json",
                "reports": {
                    "image_drift.html": f"reports/detector/{window}/image_drift.html",
                    "image_drift.json": f"reports/detector/{window}/image_drift.json",
                    "heatmap:img 7": f"reports/detector/{window}/heatmaps/000_img_7.png",
                },
            }
        )
        series["detector brightness"].append((start, 0.08 + 0.25 * k))
        series["detector max"].append((start, 0.12 + 0.24 * k))
        series["recommender max"].append((start.timestamp(), 0.1 + 0.02 * k))
        entries.append(
            {
                "model": "recommender",
                "window": window,
                "window_start": start,
                "drift": None if k == 0 else False,
                "manifest": f"windows/recommender/{window}/manifest.json",
                "reports": {
                    "latent_drift.html": f"reports/recommender/{window}/latent_drift.html",
                    "explanations.parquet": f"reports/recommender/{window}/explanations.parquet",
                },
                "failures": {"explanations": "window is empty"} if k == 0 else {},
            }
        )
    return entries, series


def chromium(args: list[str], page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=90, check=True
    )


def test_render_index_content() -> None:
    entries, series = sample_entries()
    page = render_index(entries, series, threshold=0.2, link_prefix="../")
    assert page.count('class="series"') == 3 and 'class="threshold"' in page
    assert 'href="../reports/detector/20250106T091500Z/heatmaps/000_img_7.png"' in page
    assert 'href="../reports/recommender/20250106T090000Z/explanations.parquet"' in page
    assert "explanations failed: window is empty" in page
    # Newest window first within a model.
    assert page.index("20250106T091500Z/image_drift.html") < page.index("20250106T090000Z/image_drift.html")
    assert not re.search(r"(src|href)=\"https?:", page)
    with pytest.raises(ValueError, match="lacks"):
        render_index([{"model": "detector"}], {})


def test_entries_as_the_report_runner_lists_them() -> None:
    # drift as text, Unix-second starts, failed jobs under "reasons", scores for the plot in the entries
    entries = [
        {
            "model": "recommender",
            "window": f"w{k}",
            "window_start": 1_736_150_400.0 + 300 * k,
            "manifest": f"windows/recommender/w{k}/manifest.json",
            "drift_score": 0.1 * k,
            "reports": {
                "recommender_drift": f"reports/recommender/w{k}/recommender_drift/recommender_drift.html"
            },
            "drift": ["no drift", "drift", "failed"][k],
            "jobs": {"recommender_drift": "ok"},
            "reasons": {"recommender_drift": "window is empty: no ratings"} if k == 2 else {},
        }
        for k in range(3)
    ]
    page = render_index(entries)
    assert page.count('class="badge drift"') == 1 and page.count('class="badge nodrift"') == 1
    assert 'class="badge failedbadge"' in page and "recommender_drift failed: window is empty" in page
    assert "(3 windows, 1 with drift)" in page
    assert page.count('class="series"') == 1 and 'data-series="recommender"' in page


def test_plot_edge_cases() -> None:
    assert "No drift scores yet" in drift_plot_svg({})
    single = drift_plot_svg({"only": [(0, 0.3)]})
    assert single.count("<polyline") == 1
    assert to_epoch_seconds(datetime(1970, 1, 1, 0, 0, 2)) == 2.0
    with pytest.raises(ValueError, match="not a time"):
        to_epoch_seconds([1])


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Chromium is not installed")
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    entries, series = sample_entries()
    page = tmp_path / "index.html"
    page.write_text(render_index(entries, series, threshold=0.2))

    dom = chromium(["--dump-dom"], page, tmp_path).stdout
    assert 'data-plot-rendered="true"' in dom  # the script measured drawn lines in the live page
    hrefs = re.findall(r'<a href="([^"]+)"', dom)
    keys = {e["manifest"] for e in entries} | {k for e in entries for k in e["reports"].values()}
    assert {h.replace("%20", " ") for h in hrefs} == keys

    shot = tmp_path / "index.png"
    chromium([f"--screenshot={shot}", "--window-size=1100,900", "--hide-scrollbars"], page, tmp_path)
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[:2] == (900, 1100)
    # The red drift badges and the plot's blue series are on screen, not just a blank page.
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 80)
    assert red.sum() > 200 and blue.sum() > 100
