"""Chromium, driven by Playwright, with a Y4M clip as its fake webcam."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 120_000
"""Budget for anything real-time the page does (the test machine may be slow and busy)."""


@contextmanager
def chromium(camera_clip: Path) -> Iterator[Browser]:
    """Chromium whose only (fake) camera plays ``camera_clip`` in a loop; pages get camera access unasked."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install chromium (see .ci/run)")
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_clip}",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


VIDEO_STATE = """() => window.emostream.cameras.map((camera) => ({
    stream: camera.stream,
    status: camera.status,
    last: camera.last,
    playing: camera.video.readyState >= 2 && camera.video.currentTime > 0,
    width: camera.video.videoWidth,
}))"""
"""Per camera of a page: its stream id, status, latest result and whether its returned video plays."""

BOX_COLOURED = """([index, box, layer = "video"]) => {
    const source = window.emostream.cameras[index][layer];
    const [width, height] = layer === "video" ? [source.videoWidth, source.videoHeight] : [source.width, source.height];
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [width, height];
    const context = canvas.getContext("2d");
    context.drawImage(source, 0, 0);
    const scale = width / 640;
    const [x, y, w] = box.map((v) => Math.round(v * scale));
    const {data} = context.getImageData(x + 3, Math.max(0, y - 3), w - 6, 7);
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
        const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) >= 60) coloured += 1;
    }
    return coloured / (data.length / 4);
}"""
"""Share of clearly coloured pixels along the top edge of ``box`` (in 640-wide source pixels) in a
camera's returned ``video`` or on its browser-drawn ``canvas``."""
