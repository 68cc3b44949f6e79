"""Continual learning: training one model on a sequence of tasks and measuring what it forgets.

    config.py      the `continual` config file: tasks, scenario, run sections, strategy settings
    sequence.py    one strategy's sequence (each task a run of run.py) and R; `compare` runs several
    strategies.py  the strategies, keyed by the names users write: naive, joint, ewc, si, mas, l2_sp, replay,
                   lwf, adapters, generative_replay
    metrics.py     the accuracy matrix R and the numbers read from it (average accuracy, backward and
                   forward transfer, forgetting)
    replay.py      the replay buffer (reservoir or per task) and how it is mixed into a task's data
    generative.py  generative replay's pseudo-rows, sampled from and labelled by the pre-task model
    probes.py      probes: generative tasks never trained, scored on the body's language model after
                   each task (P beside R): is general skill forgotten?
    report.py      results.json, report.md and the figures of a comparison

The strategies live in the families the run already has: EWC, SI, MAS and L2-SP are regularizers
(regularizers/), replay and joint are data mixtures, LwF an objective (objectives/lwf.py: the
distillation loss of objectives/distill.py on the old classes' head logits), adapters a new PEFT
adapter per task routed by task name at test time (models/adapters.py's named adapters), generative
replay a data mixture of pseudo-rows. Progressive or expandable networks are not built: per-task
adapters stand for isolation.
"""
