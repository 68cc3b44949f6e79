"""A reward function for the RL objectives' interface test: each answer's length in characters."""


def length(prompts, answers):
    return [float(len(a)) for a in answers]
