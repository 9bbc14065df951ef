"""Online DPO that skips a pair its preference source did not decide.

TRL's online DPO samples two replies per prompt, scores both and trains on the higher-scored
one as chosen; when the scores are equal it still takes the first reply as the winner. Our
pairwise judge gives both replies of an inconsistently judged pair no score (NaN, summed as 0
by TRL), and the verifier gives a tie when both replies satisfy the same constraints, so
without this class such a pair would be trained on as a win of whichever reply was sampled
first: noise presented as a preference. ``skipping_online_dpo`` subclasses TRL's trainer at
two points and copies none of its code: after the reward functions run it notes whether the
pair's two scores differ, and the training step's loss is multiplied by 0 for an undecided
pair before the backward pass, so the pair adds no gradient. That is exact only with one
pair per micro-batch (the loss is already averaged over the pairs when it reaches us), so
``check_batch`` refuses ``per_device_train_batch_size`` above 1; larger effective batches come
from ``gradient_accumulation_steps``. Skipped pairs are counted per step (``pairs/skipped``
in ``metrics.jsonl``) and in the run summary.
"""

from __future__ import annotations

from typing import Any

from datagen.errors import UserInputError


def check_batch(config: Any) -> None:
    """Refuse a micro-batch of more than one pair (see the module docstring)."""
    if config.per_device_train_batch_size != 1:
        raise UserInputError(
            f"online-dpo: per_device_train_batch_size must be 1 (got "
            f"{config.per_device_train_batch_size}) so that a pair the judge did not decide "
            "can be skipped exactly; use gradient_accumulation_steps for larger batches")


def skipping_online_dpo(base: type) -> type:
    """A subclass of TRL's ``OnlineDPOTrainer`` (``base``) that skips undecided pairs."""

    class UndecidedPairsSkipped(base):  # type: ignore[misc, valid-type]
        skipped_pairs = 0
        _decided = True

        def _calculate_rewards_from_functions(self, *args: Any, **kwargs: Any) -> Any:
            rewards = super()._calculate_rewards_from_functions(*args, **kwargs)
            first, second = rewards.split(len(rewards) // 2)
            self._decided = bool((first != second).all())
            return rewards

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            accelerator = self.accelerator
            backward = accelerator.backward

            def weighted_backward(loss: Any, **kwargs: Any) -> Any:
                return backward(loss if self._decided else loss * 0.0, **kwargs)

            self._decided = True
            accelerator.backward = weighted_backward
            try:
                loss = super().training_step(model, inputs, num_items_in_batch)
            finally:
                accelerator.backward = backward
            self.skipped_pairs += not self._decided
            self.stats.setdefault("pairs/skipped", []).append(float(not self._decided))
            return loss

    return UndecidedPairsSkipped
