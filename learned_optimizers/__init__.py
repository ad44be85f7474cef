"""Problem families, batched solver cores, classical baselines and deployable learned models, one folder per domain.

This package knows nothing of gymnasium or stable-baselines3: a trained model
is loaded and used with torch alone. ``common/`` holds what two or more domains
use; ``families.py`` names every problem family; ``amortized.py`` is the
context -> solution model of any family. Importing this package imports no
domain: each is imported where it is used.
"""
