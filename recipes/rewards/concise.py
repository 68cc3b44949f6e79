"""A length term for the PPO recipe (recipes/ppo.yaml), beside its reward model, and the whole reward of
its smoke mode (the tiny random model has no reward model to be scored by): the concise half of the lab
preference task's rule, which needs no model: 1 for an answer of 1 to 5 words, less the longer it gets,
-1 for an empty one."""


def concise(prompts, answers):
    scores = []
    for answer in answers:
        words = len(answer.split())
        scores.append(-1.0 if words == 0 else 1.0 if words <= 5 else 5.0 / words)
    return scores
