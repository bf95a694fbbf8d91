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
