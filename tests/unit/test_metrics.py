from dsv4_images.verify import metrics

PAGE = """# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 100.0
vllm:spec_decode_num_drafts_created{engine="0",model_name="m"} 1.7e+09
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 200.0
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 170.0
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 95.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 75.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 0.0
"""


def test_parse_and_derived_figures():
    c = metrics.parse(PAGE)
    assert (c.drafts, c.draft_tokens, c.accepted) == (100, 200, 170)
    assert c.acceptance_rate == 0.85 and c.mean_acceptance_length == 2.7
    assert c.per_position_acceptance == {0: 0.95, 1: 0.75}
    assert c.fired


def test_window_deltas_and_other_models():
    before = metrics.parse(PAGE)
    after = metrics.parse(PAGE.replace("100.0", "110.0").replace("200.0", "220.0").replace("170.0", "180.0")
                          .replace("95.0", "101.0").replace("75.0", "79.0"))
    d = after - before
    assert (d.drafts, d.draft_tokens, d.accepted) == (10, 20, 10)
    assert d.acceptance_rate == 0.5 and d.per_position_acceptance == {0: 0.6, 1: 0.4}
    assert metrics.parse(PAGE, model_name="other").drafts == 0


def test_no_spec_decode_means_not_fired():
    c = metrics.parse("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n")
    assert not c.fired and c.acceptance_rate is None and c.mean_acceptance_length is None


# ---- pages that cannot be trusted ----------------------------------------------------------------

import math  # noqa: E402

import pytest  # noqa: E402


@pytest.mark.parametrize("page, kind", [
    ("<html><body>502 Bad Gateway</body></html>", "metrics-not-prometheus"),
    ('{"drafts": 3}', "metrics-not-prometheus"),
    ('vllm:spec_decode_num_accepted_tokens_per_pos_total{position="x"} 3\n', "metrics-not-prometheus"),
    ("vllm:spec_decode_num_drafts_total NaN\n", "metrics-not-finite"),
    ("vllm:spec_decode_num_draft_tokens_total +Inf\n", "metrics-not-finite"),
    ("vllm:spec_decode_num_accepted_tokens_total -4\n", "metrics-not-finite"),
])
def test_pages_that_are_not_counters_are_named(page, kind):
    with pytest.raises(metrics.MetricsProblem) as exc:
        metrics.parse(page)
    assert exc.value.kind == kind


def test_presence_of_spec_decode_counters_is_recorded():
    assert metrics.parse(PAGE).present
    assert not metrics.parse("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n").present
    assert not metrics.parse("").present


def scrape(page):
    return metrics.Scrape(metrics.parse(page))


def test_a_window_is_refused_when_a_counter_went_down_or_a_scrape_failed():
    before, after = scrape(PAGE), scrape(PAGE.replace("100.0", "3.0"))
    window = metrics.Watch.window(before, after)
    assert window.delta is None and window.problem == "counters-decreased"
    assert "num_drafts 100 -> 3" in window.detail
    broken = metrics.Scrape(None, "metrics-not-utf8", "byte 0")
    assert metrics.Watch.window(broken, after).problem == "metrics-not-utf8"
    assert metrics.Watch.window(before, scrape(PAGE.replace("170.0", "270.0"))).problem == "metrics-inconsistent"
    good = metrics.Watch.window(before, scrape(PAGE.replace("100.0", "110.0").replace("200.0", "220.0")
                                               .replace("170.0", "180.0").replace("95.0", "100.0")
                                               .replace("75.0", "80.0")))
    assert good.delta is not None and math.isclose(good.delta.acceptance_rate, 0.5)


def test_the_watch_records_every_decrease_across_the_run():
    from dsv4_images.verify import client
    from dsv4_images.verify.transport import Timeouts
    from tests.support.fake_vllm import FakeVLLM
    with FakeVLLM("counters-decrease") as server:     # the counters drop at the fifth scrape
        watch = metrics.Watch(server.url, "tiny-mtp", Timeouts(first_byte=5, get=5))
        for _ in range(6):
            assert not client.send(server.url, "tiny-mtp", client.Request("r", "hi", max_tokens=30)).error
            watch.scrape()
    assert len(watch.scrapes) == 6 and watch.problems() == {}
    assert len(watch.decreases) == 1 and watch.decreases[0] == "vllm:spec_decode_num_drafts 44 -> 3"  # 4 requests x 11 steps
