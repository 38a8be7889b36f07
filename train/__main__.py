"""``python -m train [+experiment=NAME]``: the documented entry of the main job, kept as a thin shim.

The orchestration (dedup → train each arm → extract → report) lives in the ``experiment`` package, so that
``train`` itself imports neither ``extract`` nor ``experiment``; this file is the one exception.
"""

from memguard.experiment.__main__ import run

if __name__ == "__main__":
    run()
