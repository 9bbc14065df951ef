"""The project's own PPO for language models (TRL dropped its PPOTrainer after 1.12).

One update = sample a batch of responses from the policy, score them with a frozen reward model,
shape per-token rewards with a KL penalty against a frozen copy of the initial policy, estimate
advantages with GAE using a value model initialised from the reward model, then run a few epochs
of the clipped PPO objective over shuffled mini-batches. It follows "The N+ Implementation
Details of RLHF with PPO" (https://arxiv.org/abs/2403.17031) and TRL 1.12's defaults. Settings
live in ``align/ppo/config.py``, experience collection in ``align/ppo/rollout.py`` and the tensor
arithmetic in ``align/ppo/losses.py``; this module holds the optimisation loop and picks the
device. Runs on CPU or one CUDA device per process (optionally with bf16 autocast), in one
process or under ``torchrun`` (gloo on CPU, nccl on CUDA with cuda:LOCAL_RANK per process;
gradients are averaged with one flat all-reduce per optimiser step), and logs one JSON line per
update. On CPU, runs with the same seed give identical results.
"""


from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from transformers import PreTrainedModel

from align.ppo.config import DEVICE_PATTERN, PPOConfig, check_config, config_from_dict
from align.ppo.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    masked_mean,
    token_logprobs,
)
from align.ppo.rollout import (
    Models,
    Prompt,
    Rollout,
    collect_rollout,
    encode_prompts,
    hidden_scores,
    load_models,
    response_logits,
)
from align.rl.watch import Thresholds, alarms
from align.train.metrics import METRICS_FILE, append_metrics

__all__ = ["CONFIG_FILE", "METRICS_FILE", "PPOConfig", "PPOResult", "check_config",
           "config_from_dict", "resolve_bf16", "resolve_device", "train_ppo"]

CONFIG_FILE = "ppo_config.yaml"


@dataclass
class PPOResult:
    """What a finished run left behind: the saved policy directory, one dict per update and the
    trained policy in memory."""

    output_dir: Path
    metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    policy: PreTrainedModel | None = None
    stopped_on_alarm: bool = False
    timed_out: bool = False


def ppo_loss(
    models: Models, rollout: Rollout, rows: torch.Tensor, config: PPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO loss on the rollout rows ``rows``: clipped policy loss + vf_coef * value loss."""
    ids, mask = rollout.query_responses[rows], rollout.attention_mask[rows]
    responses, response_mask = rollout.responses[rows], rollout.response_mask[rows]
    length = responses.shape[1]
    with models.autocast():
        logits = response_logits(models.policy, ids, mask, length, config.temperature)  # (b,R,V)
        values = hidden_scores(models.value_model, ids, mask)[:, -length - 1:-1]  # (b, R)
    logprobs = token_logprobs(logits, responses)
    policy_loss, policy_clipfrac = clipped_policy_loss(
        logprobs, rollout.logprobs[rows], rollout.advantages[rows], response_mask,
        config.cliprange)
    value_loss, value_clipfrac = clipped_value_loss(
        values, rollout.values[rows], rollout.returns[rows], response_mask,
        config.cliprange_value)
    with torch.no_grad():
        log_ratio = logprobs - rollout.logprobs[rows]
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "policy_clipfrac": policy_clipfrac,
            "value_clipfrac": value_clipfrac,
            "approx_kl": 0.5 * masked_mean(log_ratio**2, response_mask),
            "entropy": masked_mean(entropy_from_logits(logits), response_mask),
        }
    return policy_loss + config.vf_coef * value_loss, stats


def ppo_epochs(
    models: Models, rollout: Rollout, config: PPOConfig, optimizer: torch.optim.Optimizer,
    generator: torch.Generator, world_size: int,
) -> dict[str, torch.Tensor]:
    """Run ``num_ppo_epochs`` passes of shuffled mini-batch updates; return mean statistics."""
    local = rollout.responses.shape[0]
    mini = local // config.num_mini_batches
    micro = mini // config.gradient_accumulation_steps
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, torch.Tensor] = {}
    count = 0
    for _ in range(config.num_ppo_epochs):
        order = torch.randperm(local, generator=generator)
        for start in range(0, local, mini):
            for micro_start in range(start, start + mini, micro):
                loss, stats = ppo_loss(models, rollout, order[micro_start:micro_start + micro],
                                       config)
                (loss / config.gradient_accumulation_steps).backward()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                count += 1
            if world_size > 1:
                all_reduce_gradients(params, world_size)
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {key: value / count for key, value in totals.items()}


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], world_size: int) -> None:
    """Average gradients over processes with one flat all-reduce. The gradients become views of
    the flat buffer (no per-parameter copies), freed with it at ``zero_grad(set_to_none=True)``."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    del grads
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for param in params:
        param.grad = flat[offset:offset + param.numel()].view_as(param)
        offset += param.numel()


def prompt_batches(count: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless global batches of prompt indices: a fresh seeded permutation per pass."""
    pending: list[int] = []
    epoch = 0
    while True:
        while len(pending) < batch_size:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            pending.extend(torch.randperm(count, generator=generator).tolist())
            epoch += 1
        yield pending[:batch_size]
        pending = pending[batch_size:]


def reduce_stats(
    stats: dict[str, torch.Tensor], world_size: int, device: torch.device | None = None
) -> dict[str, float]:
    """Mean of each scalar statistic over processes, as plain floats (all-reduced on
    ``device``, which must suit the process group's backend)."""
    keys = sorted(stats)
    values = torch.stack([torch.as_tensor(stats[k], dtype=torch.float32, device=device)
                          for k in keys])
    if world_size > 1:
        dist.all_reduce(values)
        values /= world_size
    return {key: float(value) for key, value in zip(keys, values, strict=True)}


def train_ppo(
    config: PPOConfig,
    *,
    policy: str | Path,
    reward_model: str | Path,
    prompts: Sequence[Prompt],
    output_dir: str | Path,
    on_update: Callable[[dict[str, float]], None] | None = None,
) -> PPOResult:
    """Train ``policy`` with PPO against ``reward_model`` on ``prompts`` and save the result.

    ``output_dir`` must be absent or empty; it receives the policy and tokenizer
    (``save_pretrained``), ``metrics.jsonl`` (one line per update) and ``ppo_config.yaml``. Work
    happens in a sibling ``.partial`` directory renamed at the end. Under ``torchrun`` every
    process calls this; the process group (gloo on CPU, nccl on CUDA) is created if needed and
    rank 0 writes. ``ValueError`` for bad settings, including a device that is not there.
    """
    device = resolve_device(config.device, local_rank=torchrun_local_rank())
    bf16 = resolve_bf16(config.bf16, device)
    rank, world_size, created_group = init_distributed(device)
    try:
        check_config(config, world_size)
        if not prompts:
            raise ValueError("no prompts to train on")
        return _run(config, Path(policy), Path(reward_model), prompts, Path(output_dir),
                    on_update, rank, world_size, device, bf16)
    finally:
        if created_group:
            dist.destroy_process_group()


def torchrun_local_rank() -> int | None:
    """This process's index on its machine under ``torchrun`` (``LOCAL_RANK``), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def resolve_device(
    name: str, *, local_rank: int | None = None, cuda_devices: int | None = None
) -> torch.device:
    """The torch device for the ``device`` setting: "cpu"; "cuda" or "cuda:N"; "auto" = cuda
    when a GPU is visible, else cpu. Without an index, cuda means cuda:``local_rank`` (one GPU
    per torchrun process) or cuda:0; an explicit index always wins. ``cuda_devices`` (default:
    the visible count) exists for tests. ``ValueError`` naming the setting when the device is
    misspelt or not there."""
    if DEVICE_PATTERN.fullmatch(name) is None:
        raise ValueError(f"device: {name!r} is not allowed (use auto, cpu, cuda or cuda:N)")
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        name = "cuda" if cuda_devices else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not cuda_devices:
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU found"
        raise ValueError(f"device: {name!r} but CUDA is not available ({why}); use cpu or auto")
    index = int(name.partition(":")[2] or (local_rank or 0))
    if index >= cuda_devices:
        raise ValueError(f"device: cuda:{index} but only {cuda_devices} CUDA device(s) are "
                         "visible")
    return torch.device("cuda", index)


def resolve_bf16(setting: bool | None, device: torch.device) -> bool:
    """Whether forward passes run under bf16 autocast: the ``bf16`` setting, or when it is None,
    on for CUDA devices that support bf16 and off on CPU."""
    supported = device.type == "cpu" or torch.cuda.is_bf16_supported()
    if setting is None:
        return device.type == "cuda" and supported
    if setting and not supported:
        raise ValueError(f"bf16: {device} does not support bfloat16")
    return setting


def init_distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether we created the process group) from torchrun's environment;
    the group uses nccl when ``device`` is a GPU (made this process's current device), else
    gloo."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def make_optimizer(models: Models, config: PPOConfig) -> torch.optim.AdamW:
    """One AdamW over the trainable parameters of the policy and the value model; the frozen
    reference and reward models get no optimiser state."""
    params = [p for m in (models.policy, models.value_model) for p in m.parameters()
              if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.learning_rate, eps=config.adam_eps,
                             weight_decay=0.0)


def _run(
    config: PPOConfig, policy_dir: Path, reward_dir: Path, prompts: Sequence[Prompt],
    output_dir: Path, on_update: Callable[[dict[str, float]], None] | None, rank: int,
    world_size: int, device: torch.device, bf16: bool,
) -> PPOResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    models = load_models(policy_dir, reward_dir, device, bf16)
    prompt_ids = encode_prompts(models.tokenizer, prompts)
    optimizer = make_optimizer(models, config)
    total = config.total_episodes or len(prompt_ids)
    updates = math.ceil(total / config.batch_size)
    local = config.batch_size // world_size
    # sampling draws on the models' device; shuffles stay on CPU (index tensors work anywhere)
    sample_gen = torch.Generator(device=device).manual_seed(config.seed * 7919 + rank + 1)
    shuffle_gen = torch.Generator().manual_seed(config.seed * 104_729 + rank + 2)
    batches = prompt_batches(len(prompt_ids), config.batch_size, config.seed)
    _check_output(output_dir)
    partial = _start_output(output_dir) if rank == 0 else output_dir
    result = PPOResult(output_dir)
    try:
        for update in range(updates):
            tick = time.perf_counter()
            lr = set_learning_rate(optimizer, config, update, updates)
            batch = next(batches)[rank * local:(rank + 1) * local]
            rollout = collect_rollout(models, [prompt_ids[i] for i in batch], config, sample_gen)
            row = {"update": update + 1, "episodes": (update + 1) * config.batch_size, "lr": lr}
            row.update(watch_fields(reduce_stats(rollout.stats, world_size, device), local))
            row["alarms"] = alarms(row, Thresholds(corr=config.alarm_corr, kl=config.alarm_kl),
                                   kl_key="kl_per_token")
            stop = bool(row["alarms"]) and config.stop_on_alarm
            if not stop:  # an alarmed rollout is not trained on when stopping
                train_stats = ppo_epochs(models, rollout, config, optimizer, shuffle_gen,
                                         world_size)
                row.update(reduce_stats(train_stats, world_size, device))
            row["seconds"] = time.perf_counter() - tick
            result.metrics.append(row)
            if rank == 0:
                append_metrics(partial / METRICS_FILE, row)
            if on_update is not None:
                on_update(row)
            if stop:
                result.stopped_on_alarm = True
                break
            if out_of_time(started, config.max_minutes, world_size, device):
                result.timed_out = True
                break
        if rank == 0:
            _finish_output(models, config, partial, output_dir)
    except BaseException:
        if rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if world_size > 1:
        dist.barrier()
    result.seconds = time.perf_counter() - started
    result.policy = models.policy
    return result


def watch_fields(stats: dict[str, float], samples: int) -> dict[str, float | None]:
    """The rollout statistics plus the reward-hacking watch's fields under the names the online
    trainers use (``kl`` stays PPO's KL summed per response; ``kl_per_token`` is the watch's)."""
    corr = stats.pop("score_length_corr")
    return {**stats, "reward/rm/mean": stats["score"], "reward/rm/std": stats["score_std"],
            "reward/mean": stats["score"], "reward/std": stats["score_std"],
            "length/mean": stats["response_length"], "truncated/share": 1 - stats["eos_fraction"],
            "reward_length_corr": None if math.isnan(corr) else corr, "samples": samples}


def out_of_time(started: float, minutes: float | None, world_size: int,
                device: torch.device) -> bool:
    """Whether the time budget is spent; under torchrun every rank agrees (the slowest
    clock decides), so no rank leaves the collective calls alone."""
    if minutes is None:
        return False
    over = torch.tensor(float(time.perf_counter() - started >= minutes * 60), device=device)
    if world_size > 1:
        dist.all_reduce(over, op=dist.ReduceOp.MAX)
    return bool(over.item())


def set_learning_rate(
    optimizer: torch.optim.Optimizer, config: PPOConfig, update: int, updates: int
) -> float:
    """Set and return the learning rate of update ``update`` (0-based) out of ``updates``: linear
    decay towards 0, as TRL's default scheduler, or constant."""
    lr = config.learning_rate
    if config.lr_schedule == "linear":
        lr *= 1.0 - update / updates
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _check_output(output_dir: Path) -> None:
    # every rank checks, so that none starts collective calls that rank 0 would never join
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir}: output directory exists and is not empty")


def _start_output(output_dir: Path) -> Path:
    partial = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _finish_output(models: Models, config: PPOConfig, partial: Path, output_dir: Path) -> None:
    models.policy.save_pretrained(partial)
    models.tokenizer.save_pretrained(partial)
    (partial / CONFIG_FILE).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    if output_dir.exists():
        output_dir.rmdir()
    partial.rename(output_dir)
