"""Training: the loop, optimizer and schedule, checkpoints, logging.

(Named `training`, not `train`, so it never shadows the entry point `tunewright.train(config)`.)
"""
