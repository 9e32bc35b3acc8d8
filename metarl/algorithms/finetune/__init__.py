"""Fine-tune baseline with stable-baselines3: pretrain on the task mixture, fine-tune per task.

This is the baseline a practitioner tries first (docs/design.md, "Algorithms" (b)). A
stable-baselines3 PPO (or SAC) agent is pretrained on the *mixture* of train
tasks: :class:`TaskMixtureEnv` draws a fresh train task at every episode from
an explicit ``np.random.Generator``. At evaluation a copy of the pretrained
agent is fine-tuned on each unseen task with the sample budget MAML gets for
adaptation, following the fine-tuning recipe (:class:`FinetuneRecipe`):
start from the pretrained model, freeze the lowest ``freeze`` layers of the
policy network, optionally put a fresh task head on top (``new_head``), then
train.

Choices, written down:

- **Architecture.** The policy body is the MAML policy's: tanh hidden layers
  (100, 100) for PPO; SAC keeps its customary ReLU. The critic has its own
  network of the same widths. "Layers" of the policy network are its Linear
  layers from the observation up: the hidden layers, then the action head
  (PPO: ``action_net``; SAC: ``mu`` and ``log_std`` together). ``freeze=N``
  sets ``requires_grad=False`` on the lowest N and rebuilds the optimizers
  over the trainable parameters only, so frozen tensors stay bit-for-bit
  unchanged. ``new_head`` replaces the head with a freshly initialised layer
  (SB3's own initialisation) and keeps the body and PPO's state-independent
  log-std. The critic is never frozen: it only serves training.
- **Actions** are learnt in [-1, 1] and mapped affinely onto the env's action
  box (:func:`rescale_action`), as stable-baselines3 recommends; Point2DNav's
  [-0.1, 0.1] steps would otherwise drown in unit-variance exploration noise.
- **Observation normalisation** (optional, on by default): SB3's
  ``VecNormalize`` statistics are learnt during pretraining and then frozen;
  fine-tuning and evaluation use them unchanged.
- **Budget.** One adaptation step of MAML uses ``episodes_per_step`` (20)
  episodes of ``horizon`` steps. Here one "budget chunk" is
  ``episodes_per_step * horizon`` environment steps of training on the task
  (PPO: one rollout of ``episodes_per_step`` envs x ``horizon`` steps, then one
  update; SAC: that many transitions with one gradient step each). Return k
  is measured after k chunks (k = 0 is the pretrained policy) on
  ``episodes_per_step`` separate evaluation episodes of the stochastic policy
  (MAML's returns are also those of its stochastic policy); evaluation
  episodes are not counted as adaptation samples.
- **Files, never pickle.** The weights are a safetensors file (the SB3 policy's
  ``state_dict``, SAC's entropy coefficient and the normalisation statistics)
  beside a JSON description (:class:`ModelSpec`: algorithm, architecture,
  sizes, hyperparameters) from which the SB3 model is rebuilt before the
  state dict is loaded. SB3's own ``save``/``load`` (zip + pickle) is not used.
- **Pretraining runs through the training loop** (:func:`metarl.training.loop.train_loop`):
  one iteration is one collection round of SB3's ``learn`` and its update (PPO;
  SAC: ``horizon`` rounds), one ``metrics.csv`` row per iteration. The loop
  checkpoints everything a continued ``learn`` reads (:mod:`.snapshot`) in
  ``checkpoint/latest.safetensors``; Ctrl-C or SIGTERM saves it and ``--resume``
  continues bit-exactly on CPU (PPO; SAC's replay buffer is not saved, so its
  pretraining cannot be resumed). The pretrained weights are written at the end.
- **Randomness.** Task draws and evaluation noise come from explicit
  generators derived from the run seed. SB3 seeds and consumes the *global*
  python/numpy/torch generators internally; every call into SB3 here runs
  inside :func:`isolated_global_rng`, which seeds them from our generator and
  restores their previous state afterwards.

This package is the only part of metarl that imports stable_baselines3. Its modules:
:mod:`.adapter` (what differs between the SB3 algorithms, one interface), :mod:`.ppo` and
:mod:`.sac` (its two implementations), :mod:`.registry` (them by ``--algo`` name),
:mod:`.config` (the run config, the model description, the recipe), :mod:`.envs` (the
task-mixture env and normalisation), :mod:`.model` (building SB3 models, their tensors,
the pretrained store, the recipe applied), :mod:`.rollout` (acting and evaluation
rollouts), :mod:`.snapshot` (a pretraining's state as tensors and JSON), :mod:`.training`
(pretraining), :mod:`.adapt` (fine-tuning on one task), :mod:`.train_args` (the\n``metarl train finetune`` flags). Evaluating a run is :mod:`metarl.evaluation.finetune`.

References: Raffin et al. 2021 (Stable-Baselines3); Schulman et al. 2017 (PPO);
Haarnoja et al. 2018 (SAC); Finn et al. 2017 (MAML), the "pretrained" baseline.
"""

from metarl.algorithms.finetune.adapt import TaskResult, finetune_on_task, prepare_finetune
from metarl.algorithms.finetune.config import (
    ACTIVATIONS,
    ALGOS,
    METHOD,
    SPEC_FORMAT,
    WEIGHTS_FILE,
    FinetuneConfig,
    FinetuneRecipe,
    ModelSpec,
    default_hyperparameters,
    make_spec,
    steps_per_round,
)
from metarl.algorithms.finetune.envs import TaskMixtureEnv, make_vec_env, wrap_normalization
from metarl.algorithms.finetune.model import (
    apply_recipe,
    build_model,
    flops_per_forward,
    isolated_global_rng,
    load_model_state,
    load_policy,
    load_pretrained,
    model_state,
    parameter_count,
    policy_layers,
    save_pretrained,
)
from metarl.algorithms.finetune.rollout import policy_actions, rescale_action, rollout_returns
from metarl.algorithms.finetune.training import (
    PretrainTrainer,
    StepProgress,
    checkpoint_path,
    load_run,
    pretrain,
    train_run,
)

__all__ = [
    "ACTIVATIONS", "ALGOS", "FinetuneConfig", "FinetuneRecipe", "METHOD", "ModelSpec", "PretrainTrainer",
    "SPEC_FORMAT", "StepProgress", "TaskMixtureEnv", "TaskResult", "WEIGHTS_FILE", "apply_recipe",
    "build_model", "checkpoint_path", "default_hyperparameters", "finetune_on_task", "flops_per_forward", "isolated_global_rng", "load_model_state", "load_policy",
    "load_pretrained", "load_run", "make_spec", "make_vec_env", "model_state", "parameter_count",
    "policy_actions", "policy_layers", "prepare_finetune", "pretrain", "rescale_action", "rollout_returns",
    "save_pretrained", "steps_per_round", "train_run", "wrap_normalization",
]
