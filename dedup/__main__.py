"""``python -m dedup``: deduplicate a corpus (the library is ``memguard.dedup``)."""

from memguard.dedup.__main__ import run

if __name__ == "__main__":
    run()
