"""``python -m extract model_dir=PATH``: audit a saved model (the library is ``memguard.extract``)."""

from memguard.extract.__main__ import run

if __name__ == "__main__":
    run()
