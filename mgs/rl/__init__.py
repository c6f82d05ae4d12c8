"""RL for MGS: policy loading (`model`), rollouts (`rollout`), log-probs (`logprobs`), GRPO pieces and the trainer.

Kept import-light on purpose: import the submodule you need (`from mgs.rl.model import load_policy`)."""
