"""The study: its configuration, keys and records, the sampler policy, the sensitivity table
measured once per study, and the worker loop."""
