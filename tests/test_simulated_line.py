"""The simulated line's geometry follows the plan it serves."""

from __future__ import annotations

from simulators.line import DEMO_PARAMS, SimulatedLine


def test_the_demo_loop_is_kept_and_a_hub_plan_gets_a_longer_one() -> None:
    # config/casablanca/site.toml says the simulators can stand in for its hardware: its
    # 240 chutes did not fit the demo's compact loop (`sorterd simulate line` refused it).
    demo = SimulatedLine(range(1, 61), with_scanner=False)
    assert demo.params.loop_length_m == DEMO_PARAMS.loop_length_m
    hub = SimulatedLine(range(1, 241), with_scanner=False)
    assert hub.params.loop_length_m > hub.params.end_of_line_m > DEMO_PARAMS.loop_length_m
    assert hub.params.chute_pitch_m == DEMO_PARAMS.chute_pitch_m
