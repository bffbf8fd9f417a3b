"""Solutions to notebook 05's exercises (LoRA)."""


def my_lora_merge(weight, lora_A, lora_B, alpha, r):
    """W0 + (α/r) · B A: the adapter folded into the frozen weight [out, in] (a new tensor)."""
    return weight + (alpha / r) * (lora_B @ lora_A)  # [out, r] @ [r, in] -> [out, in]


def my_lora_embedding(ids, weight, lora_A, lora_B, scaling):
    """E'[ids] with E' = E + scaling · (B A)ᵀ, without building E': E[ids] + scaling · Aᵀ[ids] Bᵀ."""
    a_rows = lora_A.T[ids]  # [..., r]: column i of A for every token id i
    return weight[ids] + scaling * (a_rows @ lora_B.T)  # [..., d]


def my_lora_tied_head(h, weight, lora_A, lora_B, scaling):
    """h E'ᵀ = h Eᵀ + scaling · (h B) A: logits of a head tied to the adapted table."""
    return h @ weight.T + scaling * ((h @ lora_B) @ lora_A)  # [..., d] -> [..., n]
