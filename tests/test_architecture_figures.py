"""The Architecture page's pure figures: real percentages, the UI language's separators, readable axes."""
import pytest

from explorer.figures.architecture import param_bars, percent, top_bars, window_bars


@pytest.mark.parametrize("p, fr, en", [
    (0.234, "23,4\u202f%", "23.4%"), (0.0523, "5,2\u202f%", "5.2%"), (1.0, "100,0\u202f%", "100.0%"),
    (0.0, "0,0\u202f%", "0.0%"),
    # a random model's 1/50257: enough decimals never to read "0.0 %"
    (1 / 50257, "0,0020\u202f%", "0.0020%"), (0.004, "0,40\u202f%", "0.40%"),
])
def test_percent_in_each_language(p, fr, en):
    assert percent(p, "fr") == fr and percent(p, "en") == en


def test_top_bars_are_percentages_with_the_language_s_separators():
    probs = [0.229, 0.1, 0.037]
    fig = top_bars(["␣lit", "␣sol", "␣mur"], probs, "titre", "fr")
    bar = fig.data[0]
    assert list(bar.x) == pytest.approx([22.9, 10.0, 3.7])
    assert list(bar.text) == ["22,9\u202f%", "10,0\u202f%", "3,7\u202f%"]
    assert list(bar.y) == ["␣lit", "␣sol", "␣mur"] and fig.layout.yaxis.type == "category"
    assert fig.layout.separators == ", " and fig.layout.xaxis.ticksuffix == "\u202f%"
    assert fig.layout.xaxis.range[1] > 22.9                    # room for the label of the longest bar
    assert list(bar.marker.color) == ["#d62728", "#1f77b4", "#1f77b4"]
    en = top_bars(["a"], [0.5], "", "en")
    assert en.layout.separators == ".," and en.layout.xaxis.ticksuffix == "%" and en.data[0].text == ("50.0%",)


def test_tiny_probabilities_keep_a_readable_axis():
    fig = top_bars(["a", "b"], [2e-5, 1e-5], "", "en")
    assert fig.layout.xaxis.range[1] == pytest.approx(2e-3 * 1.25)
    assert fig.data[0].text == ("0.0020%", "0.0010%")


def test_param_bars_ticks_follow_the_language():
    fig = param_bars(["embed", "blocks × 18", "norm"], [167_772_160, 100_325_376, 640], ["a", "b", "c"], "t", "fr")
    assert list(fig.layout.xaxis.ticktext) == ["0", "50\u202fM", "100\u202fM", "150\u202fM"]
    assert fig.layout.separators == ", "
    en = param_bars(["x"], [28_311_552], ["28.3 M"], "t", "en")
    assert list(en.layout.xaxis.ticktext) == ["0", "10M", "20M"]


def test_window_bars_one_bar_per_layer():
    windows = [512] * 5 + [None]
    spans = [w or 32768 for w in windows]
    fig = window_bars(spans, [w is None for w in windows], [f"layer {i}" for i in range(6)],
                      ["local", "global"], "title", "layer", "tokens", "fr")
    local, glob = fig.data
    assert list(local.x) == [0, 1, 2, 3, 4] and list(glob.x) == [5] and local.width == glob.width == 0.8
    assert list(glob.text) == ["32\u202f768"] and fig.layout.yaxis.type == "log"
    assert list(fig.layout.yaxis.ticktext) == ["512", "32\u202f768"]


def test_token_labels_cannot_inject_markup():
    fig = top_bars(['<a href="http://x">clic</a>', "<b>gras"], [0.5, 0.2], "", "fr")
    assert list(fig.data[0].y) == ['&lt;a href="http://x"&gt;clic&lt;/a&gt;', "&lt;b&gt;gras"]
