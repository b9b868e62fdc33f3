"""PPO hyperparameter sweeps (see sweep.py and search_space.py)."""
