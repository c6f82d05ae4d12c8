"""MGS: multi-domain reinforcement learning for LLMs with Modular Gradient Surgery.

Per-domain policy gradients are combined inside each transformer module with PCGrad-style projection of the
gradients that conflict (Cai et al., arXiv 2602.02301). Subpackages: `surgery` (the math, torch only),
`domains` (data + rewards), `rl` (GRPO trainer), `dist` (DDP/FSDP2), `diagnostics`, `eval`, `reports`.
"""

__version__ = "0.1.0"
