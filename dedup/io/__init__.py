"""Reading and writing corpora: the sample record, validation and the one decoder, readers, shard writer."""
