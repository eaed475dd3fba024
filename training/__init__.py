"""BUA curriculum training (ships as `bua.training`; run `python training/curriculum.py`)."""
