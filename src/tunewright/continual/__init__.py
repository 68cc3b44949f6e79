"""Continual learning: training one model on a sequence of tasks and measuring what it forgets.

    metrics.py   the accuracy matrix R and the numbers read from it (average accuracy, backward and
                 forward transfer, forgetting)
    replay.py    the replay buffer (reservoir or per task) and how it is mixed into a task's data

The strategies against forgetting live in the families the run already has: EWC, SI, MAS and L2-SP
are regularizers (regularizers/), replay is a data mixture (replay.py), per-task adapters are the
named adapters of models/adapters.py. Progressive or expandable networks are not built: per-task
adapters stand for isolation.
"""
