"""Corpus I/O below every stage: the sample record, validation and the one decoder, readers, discovery,
metadata, the shard writer, and the built-in corpus (Twemoji rendered and captioned, with a seeded
duplicate injector)."""
