"""Export a ticket as a torch ``nn.Sequential`` of masked Linear layers (torch is imported only here).

Layer t is ``nn.Linear`` with weight (W_t ⊙ S_t) and bias b_t ⊙ bias_t (float64 by default), a ReLU after every
layer but the last; the masks are stored as buffers ``mask`` so that the ticket's sparsity is explicit. Its output
equals :func:`construct.ticket.ticket_forward` (the tests check this)."""
from __future__ import annotations

import numpy as np

from construct.ticket import Ticket, effective_layer

__all__ = ["to_torch"]


def to_torch(ticket: Ticket, *, dtype=None, device="cpu"):
    """``nn.Sequential`` computing the ticket; ``dtype`` defaults to torch.float64; ``device`` is passed on."""
    import torch
    from torch import nn

    dtype = dtype or torch.float64
    layers = []
    depth = len(ticket.kept)
    for t in range(1, depth + 1):
        mat, bias = effective_layer(ticket, t)
        lin = nn.Linear(mat.shape[1], mat.shape[0], bias=True, dtype=dtype, device=device)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(mat.toarray(), dtype=dtype, device=device))
            lin.bias.copy_(torch.as_tensor(bias, dtype=dtype, device=device))
        lin.register_buffer("mask", torch.as_tensor(np.asarray(ticket.kept[t - 1]), dtype=torch.bool, device=device))
        layers.append(lin)
        if t < depth:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
