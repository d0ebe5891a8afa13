"""The simulated day of chute filling and clearing (simulators/chute_day.py), on cases
whose outcome is worked out by hand."""

from __future__ import annotations

from pathlib import Path

from simulators.chute_day import (
    OUTCOME_GAVE_UP,
    Lanes,
    SimPlan,
    SimZone,
    read_plan,
    simulate_day,
)

ROOT = Path(__file__).resolve().parent.parent


def plan(
    chutes: tuple[int, ...],
    overflow: tuple[int, ...] = (),
    capacity: int = 10,
    clear_min: int = 1440,
    machine: tuple[int, ...] = (1, 2, 3, 4),
) -> SimPlan:
    return SimPlan(
        lanes={"A": Lanes(chutes, overflow)},
        machine_chutes=machine,
        capacity_items=capacity,
        clear_interval_min=clear_min,
        max_recirculations=2,
    )


def hour(h: int, items: int) -> list[int]:
    day = [0] * 24
    day[h] = items
    return day


def test_a_full_chute_sends_items_round_until_they_give_up() -> None:
    # Emptied once a day at midnight: 10 fit, the other 15 find it full twice
    # (recirculating each time), then go to the max_recirc chute.
    figures = simulate_day(plan((1,)), {"A": hour(5, 25)})
    assert figures.items == 25
    assert figures.sorted_items == 10
    assert figures.full_passes == 30
    assert figures.gave_up == 15
    assert figures.full_recirculations == 30
    assert figures.chute_full_events == 1
    assert figures.peak_fill == 1.0
    assert sum(figures.full_passes_by_hour) == 30


def test_an_item_that_recirculated_enough_goes_to_max_recirc_whatever_its_chutes() -> None:
    """Found in review: the simulated day tried the chutes once more after the last
    recirculation; the daemon (sorter/kernel.py) sends an item that has recirculated
    max_recirculations times to the max_recirc chute without trying them. With
    max_recirculations = 0 that is every item, the chute empty or not."""
    p = SimPlan(
        lanes={"A": Lanes((1,))},
        machine_chutes=(1, 2, 3, 4),
        capacity_items=100,
        clear_interval_min=1440,
        max_recirculations=0,
        max_recirc_chute=4,
    )
    figures = simulate_day(p, {"A": hour(5, 25)})
    assert figures.gave_up == 25
    assert figures.sorted_items == 0
    assert figures.full_recirculations == 0
    assert set(figures.item_chute.tolist()) == {4}


def test_items_spread_over_chutes_then_overflow() -> None:
    figures = simulate_day(plan((1, 2), overflow=(3,)), {"A": hour(5, 25)})
    assert (figures.sorted_items, figures.overflow_items) == (20, 5)
    assert figures.full_passes == 0
    assert figures.peak_fill == 1.0
    assert figures.chute_full_events == 2


def test_clearing_empties_the_chutes_on_the_round() -> None:
    # Emptied every 10 minutes: 10 items an hour into one chute of 10 never fill it up.
    figures = simulate_day(plan((1,), clear_min=10), {"A": [10] * 24})
    assert figures.sorted_items == 240
    assert figures.full_passes == 0


def test_the_same_seed_gives_the_same_day() -> None:
    p = plan((1,), clear_min=20)
    day = {"A": [60] * 24}
    assert simulate_day(p, day, seed=4) == simulate_day(p, day, seed=4)


def test_more_chutes_recirculate_less_on_the_casablanca_day() -> None:
    shipped = read_plan(ROOT / "config" / "casablanca" / "sortplan.toml")
    assert shipped.capacity_items == 60
    assert shipped.machine_chutes == tuple(range(1, 241))
    day = {"CASABLANCA-CENTRE": hour(9, 3000)}
    lanes = dict(shipped.lanes)
    few = simulate_day(shipped, day)
    lanes["CASABLANCA-CENTRE"] = Lanes(tuple(range(1, 17)), (200, 201))
    more = simulate_day(SimPlan(lanes, shipped.machine_chutes, 60, shipped.clear_interval_min), day)
    assert few.full_recirculations > 0
    assert more.full_recirculations < few.full_recirculations


def test_operators_share_their_zones_items() -> None:
    p = SimPlan(
        lanes={"A": Lanes((1,)), "B": Lanes((3,))},
        machine_chutes=(1, 2, 3, 4),
        capacity_items=100,
        clear_interval_min=60,
        zones=(SimZone("west", (1, 2), 1), SimZone("east", (3, 4), 2)),
    )
    figures = simulate_day(p, {"A": hour(5, 10), "B": hour(6, 20)})
    assert figures.zones == ("west", "east")
    assert figures.zone_items_by_hour[0][5] == 10
    assert figures.zone_items_by_hour[1][6] == 20
    assert figures.operator_items() == [10.0, 10.0]
    assert figures.operator_peak_hour() == [10.0, 10.0]


def test_a_zone_cleared_more_often_recirculates_less() -> None:
    # The same 60 items an hour into one chute of 10: emptied every 10 minutes in the east,
    # once a day in the west.
    p = SimPlan(
        lanes={"A": Lanes((1,)), "B": Lanes((3,))},
        machine_chutes=(1, 2, 3, 4),
        capacity_items=10,
        clear_interval_min=1440,
        zones=(SimZone("west", (1, 2)), SimZone("east", (3, 4), 1, 10)),
    )
    west = simulate_day(p, {"A": hour(5, 60)})
    east = simulate_day(p, {"B": hour(5, 60)})
    assert west.gave_up == 50
    assert east.gave_up < west.gave_up


def test_items_that_give_up_land_in_the_max_recirc_chute() -> None:
    p = SimPlan(
        lanes={"A": Lanes((1,))},
        machine_chutes=(1, 2, 3, 4),
        capacity_items=10,
        clear_interval_min=1440,
        max_recirc_chute=4,
    )
    figures = simulate_day(p, {"A": hour(5, 25)})
    assert figures.gave_up == 15
    gave_up = figures.item_outcome == OUTCOME_GAVE_UP
    assert set(figures.item_chute[gave_up].tolist()) == {4}
    assert set(figures.item_chute[~gave_up].tolist()) == {1}
    assert figures.peak_fill == 1.0  # the function chute's pile is not a chute's fill
    # They land a lap after their second recirculation: 2 x 90 s into hour 5 at most.
    assert all(5 * 60 <= m < 6 * 60 + 3 for m in figures.item_minute.tolist())
