"""``python -m train [+experiment=NAME]``: the main job — dedup, train each arm, extract, report (the
library is ``memguard.train``; the orchestration ``memguard.experiment``)."""

from memguard.experiment.__main__ import run

if __name__ == "__main__":
    run()
