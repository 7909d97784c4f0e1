"""Length-grouped batching (batching.py): deterministic per (seed, epoch, world), every item once,
little padding, and the choice of batching per task and attention kernel (issue 15)."""

from __future__ import annotations

import random

import pytest

from tuneloop.trainer import batching, data

_rng = random.Random(0)
LENGTHS = [min(512, max(16, int(_rng.lognormvariate(4.7, 0.8)))) for _ in range(203)]  # 16-512, log-normal


def flat(plan: batching.Plan) -> list[int]:
    return [i for shares in plan for share in shares for i in share]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("budget", [None, 1024])
def test_length_grouped_plan_is_a_pure_function_of_seed_epoch_and_world(world: int, budget: int | None) -> None:
    plan = batching.length_grouped_batches(LENGTHS, 8, world, seed=5, epoch=0, tokens_per_batch=budget)
    assert plan == batching.length_grouped_batches(LENGTHS, 8, world, seed=5, epoch=0, tokens_per_batch=budget)  # resume re-derives it
    assert plan != batching.length_grouped_batches(LENGTHS, 8, world, seed=5, epoch=1, tokens_per_batch=budget)  # a new order per epoch
    assert all(len(shares) == world and all(shares) for shares in plan)  # every rank trains in every micro-batch
    seen = flat(plan)
    assert len(seen) == len(set(seen)) and len(seen) >= len(LENGTHS) - world * 8  # each item at most once, only a tail left out
    if world == 1:
        assert sorted(seen) == list(range(len(LENGTHS)))


def test_fixed_count_plan_has_as_many_micro_batches_as_shuffled_batches() -> None:
    for world in (1, 2, 4):
        grouped = batching.length_grouped_batches(LENGTHS, 8, world, seed=1, epoch=0)
        assert len(grouped) == len(data.epoch_batches(len(LENGTHS), 8, world, seed=1, epoch=0))  # steps per epoch unchanged


def test_length_grouping_removes_most_padding() -> None:
    shuffled = batching.epoch_plan("shuffled", LENGTHS, 8, 1, seed=1, epoch=0)
    grouped = batching.epoch_plan("length-grouped", LENGTHS, 8, 1, seed=1, epoch=0)
    useful, computed_shuffled = batching.computed_tokens(LENGTHS, shuffled)
    _, computed_grouped = batching.computed_tokens(LENGTHS, grouped)
    assert useful == sum(LENGTHS)
    assert 1 - useful / computed_grouped < 0.1 < 0.3 < 1 - useful / computed_shuffled
    # The batches are not walked from short to long: their order is shuffled.
    longest = [max(LENGTHS[i] for i in shares[0]) for shares in grouped]
    assert longest != sorted(longest)


def test_token_budget_bounds_each_micro_batch_padding_included() -> None:
    plan = batching.length_grouped_batches(LENGTHS, 8, 1, seed=2, epoch=0, tokens_per_batch=1000)
    for (share,) in plan:
        assert len(share) == 1 or len(share) * max(LENGTHS[i] for i in share) <= 1000
    sizes = sorted((max(LENGTHS[i] for i in share), len(share)) for (share,) in plan)
    assert sizes[0][1] > sizes[-1][1]  # many short samples to a batch, few long ones


@pytest.mark.parametrize("requested, packing, task, attention, chosen", [
    ("auto", None, "causal-lm-sft", "sdpa", "length-grouped"),  # no varlen kernel: dense masked attention per packed row
    ("auto", None, "causal-lm-sft", "auto", "length-grouped"),
    ("auto", None, "causal-lm-sft", "flash_attention_2", "packed"),  # varlen kernel over sequence offsets
    ("auto", True, "causal-lm-sft", "sdpa", "packed"),  # packing: true still asks for packed rows
    ("auto", False, "causal-lm-sft", "flash_attention_2", "length-grouped"),
    ("auto", None, "sequence-classification", "auto", "shuffled"),  # length can give the class away
    ("length-grouped", None, "sequence-classification", "auto", "length-grouped"),
    ("shuffled", None, "regression", "auto", "shuffled"),
    ("packed", None, "causal-lm-sft", "sdpa", "packed"),
])
def test_choose_batching(requested: str, packing: bool | None, task: str, attention: str, chosen: str) -> None:
    assert batching.choose_batching(requested, packing, task, attention) == chosen
