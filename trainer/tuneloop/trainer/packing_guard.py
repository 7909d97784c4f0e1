"""Does this model keep packed sequences apart? Checked on the real model before packing is used.

Packed rows carry `position_ids` that restart at 0 for each sequence and no attention_mask
(data.pack_examples). Isolation then depends on the architecture handing `position_ids` to
transformers' mask builder (`create_causal_mask` -> `find_packed_sequence_indices`). Llama,
Qwen2, Mistral, Phi3, GPT-2, NeoX, Falcon do; OPT, Bloom, MPT, BioGPT, XGLM (and ~30 families
in transformers 5.24) do not, and their packed sequences attend to each other silently
(issue 8 item 5: max logit difference 0.17 for OPT). flash_attention_2 isolates packed rows
only at batch size 1 (`_is_packed_sequence`), so the check runs at batch 2, or, with
flash_attention_2, on the one flattened row the recipe then trains on (data.flatten_packs).

The check: two packed rows of two sequences each, against every sequence scored alone. It
costs four short forward passes at setup. Every rank runs it and they agree (one all-reduce),
so no rank packs while another pads.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneloop.trainer import data

# Relative logit difference tolerated between a packed sequence and the same sequence alone:
# numerical noise of a different kernel shape, far below what attending across sequences does.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
LENGTHS = ((7, 5), (6, 4))  # two packed rows of two sequences


@torch.no_grad()
def packed_logit_difference(model: Any, device: Any, seed: int = 0, flatten: bool = False) -> float:
    """Largest |logit(packed) - logit(alone)| over the check's sequences, relative to the logits' scale.

    `flatten`: the rows go in as one row (data.flatten_packs), the layout used with flash_attention_2.
    """
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(seed)
    rows = [[torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths] for lengths in LENGTHS]
    packs = [{"input_ids": sum(row, []), "labels": sum(row, []), "position_ids": [p for seq in row for p in range(len(seq))]}
             for row in rows]
    if flatten:
        packs, rows = data.flatten_packs(packs), [sum(rows, [])]
    batch = data.collate_packed(packs, pad_token_id=0)
    was_training = model.training
    model.eval()
    try:
        packed = model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                       use_cache=False).logits.float()
        worst, scale = 0.0, 0.0
        for b, row in enumerate(rows):
            start = 0
            for seq in row:
                alone = model(input_ids=torch.tensor([seq], device=device), use_cache=False).logits.float()[0]
                worst = max(worst, (packed[b, start:start + len(seq)] - alone).abs().max().item())
                scale = max(scale, alone.abs().max().item())
                start += len(seq)
    finally:
        model.train(was_training)
    return worst / max(scale, 1e-6)


def packing_isolates(model: Any, device: Any, flatten: bool = False) -> tuple[bool, float]:
    """(isolated, relative difference) for this model on this device, in its weights' dtype."""
    difference = packed_logit_difference(model, device, flatten=flatten)
    dtype = model.get_input_embeddings().weight.dtype
    return difference <= TOLERANCE.get(dtype, 3e-2), difference
