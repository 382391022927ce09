"""Examples: ``train_elastic.py`` (a Horovod elastic script using ChaosState), ``models.py`` (its
CNNs), ``demo_join_crash.py`` (``python -m examples.demo_join_crash``: join, then crash, on loopback).
"""
