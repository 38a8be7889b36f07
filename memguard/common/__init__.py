"""Shared utilities of every stage: atomic writes, the content-addressed cache, timing, config building."""
