"""The chat domain: prompts without a verifiable answer, rewarded by a reward model.

`ChatDomain` (registered as domain kind "chat") = a prompt source from `CHAT_SOURCES` (`data.py`) + a scorer from
`REWARD_MODELS` (`rewards.py`: hf-classifier, callable, http; `similarity.py`: the offline similarity-proxy).
"""

from mgs.domains.chat.data import CHAT_SOURCES, ChatRecord
from mgs.domains.chat.rewards import REWARD_MODELS, RewardModel, build_reward_model
from mgs.domains.chat import similarity  # noqa: F401  (registers "similarity-proxy")
from mgs.domains.chat.domain import ChatDomain

__all__ = ["CHAT_SOURCES", "REWARD_MODELS", "ChatDomain", "ChatRecord", "RewardModel", "build_reward_model"]
