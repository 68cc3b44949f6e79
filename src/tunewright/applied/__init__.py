"""Applied fine-tuning reports of the course: table rows as text against classical baselines
(tabular_report.py) and the LLM recommender across domains (recommender_report.py). Each is a grid
of ordinary tunewright runs and evaluations, recorded as markdown and JSON with its command."""
