"""A short real TRL GRPO run with ponder rewards through ``ponder.rewards.trl_reward`` (extra ``trl``)."""

import math

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")


@pytest.mark.slow
def test_trl_grpo_trainer_calls_and_logs_ponder_rewards(random_tiny, tmp_path, one_thread):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ponder.data.synthetic import Addition
    from ponder.rewards import trl_reward

    model, tok = random_tiny
    task = Addition(2)
    problems = task.problems(8, seed=0)
    data = Dataset.from_dict(
        {"prompt": [p.prompt + "<think>" for p in problems], "answer": [p.answer for p in problems]}
    )
    calls = []
    vote = trl_reward("majority_vote", task=task, no_answer_reward=0.0)
    verifiable = trl_reward("verifiable", columns={"problems": "answer"}, task=task)

    def counted_vote(prompts, completions, **kwargs):
        calls.append((list(prompts), list(completions)))
        return vote(prompts, completions, **kwargs)

    counted_vote.__name__ = "majority_vote"
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model.train(),
        reward_funcs=[counted_vote, verifiable],
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    trainer.train()
    assert len(calls) >= 2
    prompts, completions = calls[0]
    assert len(completions) == 4 and len(set(prompts)) == 1  # one group of G=4 per step, as the vote needs
    logged = [row for row in trainer.state.log_history if "rewards/majority_vote/mean" in row]
    assert len(logged) == 2
    for row in logged:
        assert math.isfinite(row["rewards/majority_vote/mean"]) and math.isfinite(row["rewards/verifiable/mean"])
        assert 0.0 <= row["rewards/majority_vote/mean"] <= 1.0
