"""Which examples go together in a micro-batch, per epoch: packed rows, length-grouped or shuffled.

Pure functions of (sizes, seed, epoch, world size), like `data.epoch_batches`, so a resumed
run re-derives the same plan and skips the optimizer steps already done (the data position
in a checkpoint stays two integers). Every plan has the same shape:
`plan[b][rank]` = the item indices rank `rank` trains on in micro-batch `b`.

Why length grouping and not packing on CPU/sdpa (issue 15, benchmark 1): without a
variable-length kernel, a packed 512-token row computes dense 512x512 attention behind a
block-diagonal mask, and transformers' sdpa path then cannot use its causal fast kernel.
Batches of similar length compute close to only what the samples need; `bench/
train_throughput.py` measures both. Where a varlen kernel exists (flash_attention_2 on GPU,
which takes a packed micro-batch as one row with sequence offsets), packing wastes nothing
and is chosen (`choose_batching`).
"""

from __future__ import annotations

import random
from typing import Sequence

from tuneloop.trainer.data import epoch_batches

Plan = list[list[list[int]]]


def choose_batching(requested: str, packing: bool | None, task: str, attention: str) -> str:
    """The batching the recipe uses: "packed", "length-grouped" or "shuffled".

    `requested` is training.batching; `packing` the older training.packing switch (true asks
    for packed, false rules it out). auto packs SFT only where the attention kernel takes
    sequence offsets (flash_attention_2), and groups SFT by length everywhere else. Classification
    and regression stay shuffled under auto: where text length tells the class apart, batches of
    one length are batches of one class (a test's accuracy fell from >= 0.8 to 0.75); they can
    ask for length-grouped.
    """
    if requested != "auto":
        return requested
    if task != "causal-lm-sft":
        return "shuffled"
    if packing is not False and (packing or attention == "flash_attention_2"):
        return "packed"
    return "length-grouped"


def length_grouped_batches(lengths: Sequence[int], batch_size: int, world_size: int, seed: int, epoch: int,
                           tokens_per_batch: int | None = None) -> Plan:
    """Micro-batches of similar length, in a seeded random order; deterministic per (seed, epoch, world).

    The items are shuffled, then stably sorted by length (equal lengths keep the shuffled
    order, so ties differ by epoch), and cut in that order:

    * without `tokens_per_batch`: global batches of `batch_size * world_size` items, each rank
      taking a strided share, exactly as many micro-batches as `data.epoch_batches` makes
      (so steps per epoch do not depend on the batching);
    * with it: each rank's micro-batch takes items while `count * longest <= tokens_per_batch`
      (padding counted), at least one item; `world_size` consecutive micro-batches form a
      global batch. A tail too short to give every rank a micro-batch is split strided when
      every rank still gets an item, else left out of this epoch (as `epoch_batches` does).

    The order of the global batches is then shuffled with the same seed, so consecutive steps
    do not walk from the shortest samples to the longest.
    """
    n_items = len(lengths)
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(n_items))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])
    batches: Plan = []
    if tokens_per_batch is None:
        step = batch_size * world_size
        for start in range(0, n_items, step):
            chunk = order[start:start + step]
            shares = [chunk[r::world_size] for r in range(world_size)]
            if all(shares):
                batches.append(shares)
    else:
        micro: list[list[int]] = []
        current: list[int] = []
        for i in order:  # ascending length: the newest item is the longest
            if current and (len(current) + 1) * lengths[i] > tokens_per_batch:
                micro.append(current)
                current = []
            current.append(i)
        if current:
            micro.append(current)
        full = len(micro) - len(micro) % world_size
        batches = [micro[b:b + world_size] for b in range(0, full, world_size)]
        tail = [i for mb in micro[full:] for i in mb]
        if tail and len(tail) >= world_size:
            batches.append([tail[r::world_size] for r in range(world_size)])
    rng.shuffle(batches)
    return batches


def epoch_plan(batching: str, lengths: Sequence[int], batch_size: int, world_size: int, seed: int, epoch: int,
               tokens_per_batch: int | None = None) -> Plan:
    """One epoch's micro-batches for the chosen batching (packed items are packed rows)."""
    if batching == "length-grouped":
        return length_grouped_batches(lengths, batch_size, world_size, seed, epoch, tokens_per_batch)
    return epoch_batches(len(lengths), batch_size, world_size, seed, epoch)


def computed_tokens(lengths: Sequence[int], plan: Plan) -> tuple[int, int]:
    """(useful, computed) tokens of a padded plan: computed counts each micro-batch as count x longest."""
    useful = computed = 0
    for shares in plan:
        for share in shares:
            sizes = [lengths[i] for i in share]
            useful += sum(sizes)
            computed += len(sizes) * max(sizes)
    return useful, computed
