"""The report in a real browser: headless Chromium (Debian's package) loads it without console errors, the
summary and every image render, and a screenshot is saved beside the report."""

import browser
import bundle_synth as synth
import history_fixture
import pytest

from harness.results.report import build_report

pytestmark = pytest.mark.skipif(browser.chromium() is None,
                                reason="chromium is not installed (make apt installs Debian's chromium package)")


def test_the_page_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><p>no summary</p><img src="missing.png">'
                    '<script>console.error("deliberate"); notAFunction();</script></body></html>')
    result = browser.check_page(page)
    assert any("console.error: deliberate" in e for e in result.errors), result.errors
    assert any("notAFunction is not defined" in e for e in result.errors), result.errors
    assert any("missing.png" in e for e in result.errors), result.errors
    assert result.broken_images == ["missing.png"] and not result.summary


def test_a_synthetic_report_loads_cleanly(tmp_path):
    results = tmp_path / "results"
    synth.write_bundle(results / "20261122T020000Z-reporting-base-base+x", {
        "base": {("fault_in_ms", "touch"): [100, 101, 99, 100]},
        "base+x": {("fault_in_ms", "touch"): [130, 131, 129, 130]}}, scenario="reporting")
    index = build_report(results, tmp_path / "out")
    result = browser.check_page(index, screenshot=index.with_name("screenshot.png"))
    assert result.errors == [] and result.summary
    assert len(result.images) == 2 and not result.broken_images  # RSS and fault-in: no zeroing counters here
    assert index.with_name("screenshot.png").stat().st_size > 20000


@pytest.mark.vm
def test_fourteen_nights_of_real_bundles_render_in_chromium(smoke_bundles, tmp_path):
    """Real guest boots (the stock kernel), shifted into 14 earlier nights plus tonight (a labelled test
    fixture); tonight's fault_in_ms is tripled, so it must be the regression against last night."""
    history, tonight = history_fixture.make_history(smoke_bundles[:1], (smoke_bundles[0], smoke_bundles[1]), tmp_path,
                                                    tonight_scale={"fault_in_ms": 3.0})
    index = build_report(tonight, tonight / "report", history_dir=history)
    screenshot = index.with_name("screenshot.png")
    result = browser.check_page(index, screenshot=screenshot)
    assert result.errors == [], result.errors
    assert result.summary
    assert [i["src"] for i in result.images] == ["smoke-rss.png", "smoke-fault-in.png", "smoke-zeroing.png",
                                                 "smoke-trends.png"]
    assert not result.broken_images
    assert screenshot.stat().st_size > 50000
    text = index.read_text()
    summary = text.split('id="summary"')[1].split("</section>")[0]
    assert "REGRESSION" in summary and "stock vs last night: fault_in_ms @ touch" in summary
    assert "14 earlier night(s)" in text
    # the threshold fault_in_ms was judged by came from the A/A pair, and the report says so
    line = next(x for x in summary.split("<li") if "stock vs last night: fault_in_ms @ touch" in x)
    assert "from A/A)" in line, line
    assert "largest of 15 A/A runs" in text and "fixed 5 %" in text
