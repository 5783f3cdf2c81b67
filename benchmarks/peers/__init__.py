"""Stand-alone training scripts for the speed comparison (``benchmarks/train_speed.py``).

Each script reads a JSON spec and an ``.npz`` of already-encoded frappe ids, trains with
one framework and prints one JSON line of results. None of them imports adrank: the peer
scripts run inside ``benchmarks/.peers-venv`` (DeepCTR-Torch, torch-rechub) and
``floor.py`` (the hand-written pure-PyTorch floor) needs only torch and numpy.
"""
